"""The `segment` silhouette method: MediaPipe's BlazePose networks, offline on CPU, from the mediapipe wheel.

Why these networks: they must run with no download at run time, so their weights must ship inside
a PyPI wheel. mediapipe 0.10.14's wheel carries the legacy "solutions" models, among them
`pose_detection.tflite` + `pose_landmark_full.tflite` (BlazePose GHUM, V. Bazarevsky et al.,
"BlazePose: On-device Real-time Body Pose tracking", CVPR-W 2020) and
`selfie_segmentation.tflite` (MediaPipe Selfie Segmentation, 2021). The latest wheel (1.2.2)
carries no models (its Tasks API wants downloaded .task files), and 0.10.15-0.10.21 pin numpy<2.

model="pose" (the default) finds up to four people per frame with the full-complexity pose
networks (people.py: the wheel's models driven through the Tasks API), each with a mask and 33
keypoints, follows them through the clip and keeps the one the `pick` rule chooses (pick.py; by
default the one who moves most). Selfie Segmentation alone, model="selfie", is made for one person
close to the camera (video calls), does not tell people apart, and on a full-body dancer a few
metres away often keeps only part of the body; it is kept for comparison (docs/silhouettes.md).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..errors import require
from .method import Method
from .people import INSTALL_HINT, People, Rescue, import_mediapipe, quiet  # noqa: F401 (INSTALL_HINT: re-exported)
from .pick import Pick, check_inside, follow, parse_pick

# BlazePose's 33 landmarks, in MediaPipe's order (mp.solutions.pose.PoseLandmark).
JOINT_NAMES = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
]
# A tree over them for drawing: left hip is the root; hips -> shoulders -> arms -> hands,
# hips -> legs -> feet, left shoulder -> nose -> eyes/ears/mouth. (Not in topological index
# order: the nose, index 0, hangs from the left shoulder, index 11.)
JOINT_PARENTS = [
    11, 0, 1, 2, 0, 4, 5, 3, 6, 0, 0, 23,
    24, 11, 12, 13, 14, 15,
    16, 15, 16, 15, 16, -1,
    23, 23, 24, 25, 26, 27,
    28, 27, 28,
]


class Segment(Method):
    """Person masks (probability > `threshold`) and 33 keypoints of the dancer, chosen by `pick`."""
    name = "segment"
    joint_names, joint_parents = JOINT_NAMES, JOINT_PARENTS

    def __init__(self, threshold: float = 0.5, model: str = "pose", min_confidence: float = 0.5,
                 pick: Pick | str = "moving", people: int = 4):
        require(0 < threshold < 1, f"segmentation threshold must be in (0, 1), got {threshold}")
        require(model in ("pose", "selfie"), f"unknown segmentation model {model!r}; choose pose or selfie")
        require(int(people) >= 1, f"people must be >= 1, got {people}")
        mp = import_mediapipe()
        self.threshold, self.model = threshold, model
        self.pick = pick if isinstance(pick, Pick) else parse_pick(pick)
        self.at, self.fps, self.choice = self.pick.at, 24.0, {}
        if model == "pose":
            self.people = People(int(people), min_confidence, threshold)
            self.rescue = Rescue(threshold, min_confidence)
            return
        with quiet():
            self.net = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            # The graph opens its model in background threads, which log on their own time;
            # one blank frame here makes that happen inside quiet().
            self.net.process(np.zeros((64, 64, 3), dtype=np.uint8))
        self.joint_names = self.joint_parents = None

    def fit(self, clip) -> None:
        """The clip's rate (the pose tracker's clock) and the pick's point or box in analysed pixels."""
        check_inside(self.pick, clip.source_size[1], clip.source_size[0], clip.path)
        sy, sx = clip.scale
        self.at = tuple(v / (sx if i % 2 == 0 else sy) for i, v in enumerate(self.pick.at))
        self.fps = clip.fps
        if self.model == "pose":
            self.people.step_ms = 1000.0 / clip.fps

    def masks(self, frames: Iterator[np.ndarray]):
        if self.model == "selfie":
            return super().masks(frames)
        return follow(frames, self.people, self.rescue, self.pick, self.at, self.fps, self.choice, self.rescue.anyone)

    def __call__(self, frame: np.ndarray):
        """One frame on its own: the largest person (pose), or everyone (selfie); masks() chooses over the clip."""
        if self.model == "pose":
            found = self.people(frame)
            if not found:
                return np.zeros(frame.shape[:2], bool), np.full((len(JOINT_NAMES), 2), np.nan, np.float32)
            best = max(found, key=lambda p: np.count_nonzero(p.mask))
            return best.mask, best.points
        with quiet():
            prob = self.net.process(np.ascontiguousarray(frame)).segmentation_mask
        return (np.zeros(frame.shape[:2], bool) if prob is None else prob > self.threshold), None

    def options(self) -> dict:
        if self.model == "selfie":
            return {"model": "mediapipe-selfie", "threshold": self.threshold}
        return {"model": "mediapipe-pose-full (several people)", "threshold": self.threshold,
                "pick": str(self.pick), **self.choice}

    def close(self) -> None:
        if self.model == "pose":
            self.people.close()
            self.rescue.close()
        else:
            with quiet():
                self.net.close()

"""The `segment` silhouette method: MediaPipe Pose, offline on CPU, from the mediapipe wheel.

Why this network: it must run with no download at run time, so its weights must ship inside
a PyPI wheel. mediapipe 0.10.14's wheel carries the legacy "solutions" models, among them
`pose_detection.tflite` + `pose_landmark_full.tflite` (BlazePose GHUM, V. Bazarevsky et al.,
"BlazePose: On-device Real-time Body Pose tracking", CVPR-W 2020) and
`selfie_segmentation.tflite` (MediaPipe Selfie Segmentation, 2021). The latest wheel (1.2.2)
carries no models (its Tasks API wants downloaded .task files), and 0.10.15-0.10.21 pin numpy<2.

We use Pose with `enable_segmentation=True` at model_complexity=1 ("full", the only
complexity whose weights are in the wheel; 0 and 2 would be downloaded). It detects one
person, tracks them from frame to frame, and returns a mask of *that* person plus 33
keypoints. Selfie Segmentation, by contrast, is made for one person close to the camera (video
calls), does not tell people apart, and on a full-body dancer a few metres away often keeps
only part of the body; it is kept only as model="selfie" for comparison (docs/silhouettes.md).
"""
from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager

import numpy as np

from ..errors import DiscodanceError, require
from .method import Method

INSTALL_HINT = "pip install 'discodance[segment]' (mediapipe==0.10.14; Python 3.10-3.12)"

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


@contextmanager
def quiet():
    """Hide MediaPipe's C++ log lines (absl 'W0000 ...', TFLite 'INFO: ...') and Python warnings.

    Its core writes straight to file descriptor 2 whenever a model is first run, which would
    break the progress bar; Python's own sys.stderr is flushed first and restored after.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to hide
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_mediapipe():
    """Import mediapipe quietly, or say in one line how to install it."""
    try:
        with quiet():
            import mediapipe as mp
    except ImportError as e:
        if e.name == "mediapipe":  # not installed (a broken install fails on another module)
            raise DiscodanceError(f"method 'segment' needs MediaPipe: {INSTALL_HINT}") from None
        raise DiscodanceError(f"mediapipe is installed but does not import ({e}); {INSTALL_HINT}") from None
    if not hasattr(getattr(mp, "solutions", None), "pose"):  # releases without the bundled models
        raise DiscodanceError(f"mediapipe {getattr(mp, '__version__', '?')} has no bundled pose model; "
                              f"{INSTALL_HINT}")
    return mp


class Segment(Method):
    """Person mask (probability > `threshold`) and 33 keypoints from MediaPipe Pose."""
    name = "segment"
    joint_names, joint_parents = JOINT_NAMES, JOINT_PARENTS

    def __init__(self, threshold: float = 0.5, model: str = "pose", min_confidence: float = 0.5):
        require(0 < threshold < 1, f"segmentation threshold must be in (0, 1), got {threshold}")
        require(model in ("pose", "selfie"), f"unknown segmentation model {model!r}; choose pose or selfie")
        mp = import_mediapipe()
        self.threshold, self.model = threshold, model
        with quiet():
            if model == "pose":
                self.net = mp.solutions.pose.Pose(
                    static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                    enable_segmentation=True, smooth_segmentation=True,
                    min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
            else:
                self.net = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
                self.joint_names = self.joint_parents = None
            # The graph opens its models in background threads, which log on their own time;
            # one blank frame here makes that happen inside quiet(). No person: no tracking state.
            self.net.process(np.zeros((64, 64, 3), dtype=np.uint8))

    def __call__(self, frame: np.ndarray):
        height, width = frame.shape[:2]
        with quiet():
            result = self.net.process(np.ascontiguousarray(frame))
        prob = result.segmentation_mask
        mask = np.zeros((height, width), bool) if prob is None else prob > self.threshold
        if self.model == "selfie":
            return mask, None
        points = np.full((len(JOINT_NAMES), 2), np.nan, dtype=np.float32)
        if result.pose_landmarks is not None:
            marks = result.pose_landmarks.landmark
            points[:] = [(m.x * width, m.y * height) for m in marks]
        return mask, points

    def options(self) -> dict:
        return {"model": "mediapipe-pose-full" if self.model == "pose" else "mediapipe-selfie",
                "threshold": self.threshold}

    def close(self) -> None:
        with quiet():
            self.net.close()

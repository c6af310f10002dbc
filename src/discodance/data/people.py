"""Every person in a frame, each with a mask and 33 keypoints, from the models inside the mediapipe wheel.

The legacy `mp.solutions.pose` graph follows one person only, so a street clip gives us whoever it
detects first, often a spectator. MediaPipe's Tasks API (`PoseLandmarker`, `num_poses`) runs the same
BlazePose networks on several people at once and returns a segmentation mask per person. Its usual
model file, `pose_landmarker_full.task`, is downloaded, which we never do; but a `.task` file is only
a zip of two TFLite models, and the 0.10.14 wheel carries both: `pose_detection.tflite` (the person
detector) and `pose_landmark_full.tflite` (keypoints and mask). The Tasks API reads each model's
input normalisation from TFLite metadata, which the wheel's copies lack, so `pose_bundle` writes it
in memory with MediaPipe's own metadata writer, using the ranges the legacy graph hard-codes
(detector [-1, 1], landmarks [0, 1]). Measured on DAVIS dance-twirl the masks match the legacy
graph's (IoU 0.846 vs 0.842 against the hand-drawn masks).

`Rescue` looks for one known person in a box when the tracker lost them (pick.py): the pose
network again, on the crop alone, then Selfie Segmentation on the crop turned upright (rotated by
180 degrees when the last keypoints put the nose below the hips). Selfie is made for a person
filling the picture, which a crop around the body is; on a whole street frame it is not usable
(IoU 0.21 on the upside-down dance-twirl, 0.65 upright; docs/silhouettes.md).
"""
from __future__ import annotations

import functools
import io
import os
import sys
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..errors import DiscodanceError

INSTALL_HINT = "pip install 'discodance[segment]' (mediapipe==0.10.14; Python 3.10-3.12)"
NOSE, HIPS = 0, (23, 24)  # BlazePose landmark indices


def _flush_c_streams() -> None:
    """fflush(NULL): C stdio lines still buffered must reach /dev/null before stderr is restored."""
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not seen on Linux or macOS)
        pass


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
        _flush_c_streams()
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


@functools.lru_cache(maxsize=1)
def pose_bundle() -> bytes:
    """The wheel's two BlazePose models as a PoseLandmarker `.task` zip, with input metadata added."""
    mp = import_mediapipe()
    try:
        with quiet():
            from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer
    except ImportError as e:
        raise DiscodanceError(f"mediapipe {mp.__version__} lacks its metadata writer ({e}); {INSTALL_HINT}") from None
    modules = os.path.join(os.path.dirname(mp.__file__), "modules")

    def with_metadata(path: str, mean: float, std: float, outputs: int) -> bytes:
        with open(os.path.join(modules, path), "rb") as f:
            writer = metadata_writer.MetadataWriter.create(bytearray(f.read())).add_general_info(path)
        writer.add_image_input([mean], [std])
        for _ in range(outputs):
            writer.add_feature_output()
        return bytes(writer.populate()[0])

    buffer = io.BytesIO()
    with quiet(), zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("pose_detector.tflite", with_metadata("pose_detection/pose_detection.tflite", 127.5, 127.5, 2))
        bundle.writestr("pose_landmarks_detector.tflite",
                        with_metadata("pose_landmark/pose_landmark_full.tflite", 0.0, 255.0, 5))
    return buffer.getvalue()


@dataclass
class Person:
    """One person in one frame: a (H, W) bool mask and (33, 2) keypoints in its pixels (NaN: none)."""
    mask: np.ndarray
    points: np.ndarray


def _landmarker(most: int, confidence: float, video: bool):
    mp = import_mediapipe()
    from mediapipe.tasks.python import BaseOptions, vision
    mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
    options = vision.PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=pose_bundle()), running_mode=mode, num_poses=most,
        output_segmentation_masks=True, min_pose_detection_confidence=confidence,
        min_pose_presence_confidence=confidence, min_tracking_confidence=confidence)
    blank = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((64, 64, 3), np.uint8))
    with quiet():
        net = vision.PoseLandmarker.create_from_options(options)
        # The graph opens its models in background threads, which log on their own time; one
        # blank frame makes that happen inside quiet(). No person: no tracking state.
        net.detect_for_video(blank, 0) if video else net.detect(blank)
    return mp, net


def _people(result, height: int, width: int, threshold: float) -> list[Person]:
    found = []
    for marks, prob in zip(result.pose_landmarks, result.segmentation_masks or []):
        points = np.array([(m.x * width, m.y * height) for m in marks], dtype=np.float32)
        found.append(Person(prob.numpy_view() > threshold, points))
    return found


class People:
    """Up to `most` people per frame of a video, tracked by MediaPipe from frame to frame."""

    def __init__(self, most: int = 4, confidence: float = 0.5, threshold: float = 0.5, fps: float = 24.0):
        self.mp, self.net = _landmarker(most, confidence, video=True)
        self.threshold, self.step_ms, self.time_ms = threshold, 1000.0 / fps, 1.0  # 0: the blank frame

    def __call__(self, frame: np.ndarray) -> list[Person]:
        image = self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        with quiet():
            result = self.net.detect_for_video(image, int(round(self.time_ms)))
        self.time_ms += self.step_ms  # VIDEO mode wants rising timestamps; its smoothing reads them
        return _people(result, *frame.shape[:2], self.threshold)

    def close(self) -> None:
        with quiet():
            self.net.close()


def inverted(points: np.ndarray | None) -> bool:
    """Whether a body stands on its head: its nose below its hips (image y grows downwards)."""
    if points is None or not np.isfinite(points[[NOSE, *HIPS], 1]).all():
        return False
    return bool(points[NOSE, 1] > points[list(HIPS), 1].mean())


class Rescue:
    """One person inside a box (y0, x0, y1, x1) of a frame: pose on the crop, else selfie on it turned upright."""

    def __init__(self, threshold: float = 0.5, confidence: float = 0.5):
        self.mp, self.pose = _landmarker(1, confidence, video=False)
        with quiet():
            self.selfie = self.mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            self.selfie.process(np.zeros((64, 64, 3), np.uint8))  # as in _landmarker: logs inside quiet()
        self.threshold = threshold

    def __call__(self, frame: np.ndarray, box, upside_down: bool = False) -> Person | None:
        return self._search(frame, box, upside_down, selfie=True)

    def anyone(self, frame: np.ndarray) -> Person | None:
        """The most confident person of a whole frame, by the pose network alone (selfie would
        mask every person and half the street at this distance)."""
        return self._search(frame, (0, 0, *frame.shape[:2]), False, selfie=False)

    def _search(self, frame, box, upside_down: bool, selfie: bool) -> Person | None:
        y0, x0, y1, x1 = (int(round(v)) for v in box)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, frame.shape[0]), min(x1, frame.shape[1])
        if y1 - y0 < 8 or x1 - x0 < 8:
            return None
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        mask, points = None, np.full((33, 2), np.nan, np.float32)
        with quiet():
            found = _people(self.pose.detect(self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=crop)),
                            y1 - y0, x1 - x0, self.threshold)
            if found:  # the pose detector finds a body's rotation itself; turning the crop cost IoU
                mask, points = found[0].mask, found[0].points
            elif selfie:  # selfie has only seen upright people
                turn = (lambda a: a[::-1, ::-1]) if upside_down else (lambda a: a)
                prob = self.selfie.process(np.ascontiguousarray(turn(crop))).segmentation_mask
                mask = turn(prob > self.threshold) if prob is not None else None
        if mask is None or not mask.any():
            return None
        full = np.zeros(frame.shape[:2], bool)
        full[y0:y1, x0:x1] = mask
        return Person(full, points + np.float32([x0, y0]))

    def close(self) -> None:
        with quiet():
            self.pose.close()
            self.selfie.close()

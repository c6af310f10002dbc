"""The silhouette method protocol shared by every way of turning video frames into masks
(silhouette.py's threshold, background and masks; segment.py's person segmentation)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .video import Clip


class Method:
    """A silhouette method: fit once per clip on a sample, then one mask per frame.

    __call__(frame) returns (mask, keypoints): mask a (H, W) bool array at the frame's
    resolution, keypoints (J, 2) source pixels (NaN where unseen) or None if the method has none.
    """
    name = "method"
    gray = False            # wants (H, W) luma frames instead of (H, W, 3) RGB
    clean = True            # run keep_dancer on its masks
    joint_names: list[str] | None = None
    joint_parents: list[int] | None = None

    def fit(self, clip: Clip) -> None:
        """Look at a sample of the clip before the per-frame pass (default: nothing to learn)."""

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def masks(self, frames: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(mask, keypoints) of every frame of a clip, in order. A method that must see the whole clip
        before it can decide (segment, choosing the dancer among several people) overrides this."""
        for frame in frames:
            yield self(frame)

    def options(self) -> dict:
        """What was used (the fitted threshold, ...), recorded in the dataset's meta.json."""
        return {}

    def close(self) -> None:
        """Release resources (a network's interpreter)."""

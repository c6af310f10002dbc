"""Frames as model input: windows of a dataset as float tensors in [0, 1] on a device (the one
place uint8 frames, 0 / 255, become floats, for training, evaluation and rollouts), and the
held-out seed windows every rollout starts from."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import require
from .dataset import Dataset


def load_windows(dataset: Dataset, starts, length: int, device) -> torch.Tensor:
    """(B, length, H, W) float frames in [0, 1] on `device`."""
    return to_float(dataset.windows(starts, length), device)


def to_float(frames: np.ndarray, device) -> torch.Tensor:
    """uint8 frames (0 / 255) -> float in [0, 1] on `device`: the one place the conversion is written."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).float().div_(255.0)


SEED_LEAD = 8  # seeds are placed as if every model needed this many frames: all models share seed frames


def seed_starts(dataset: Dataset, split: str, context: int, num: int, continuation: int = 0) -> np.ndarray:
    """First frames of `num` seed windows of `context` frames, spread evenly over a held-out split.

    The last seed frame is chosen the same way whatever `context` is (as if every model needed
    SEED_LEAD frames), so models with different seed lengths roll out from the same frame and
    their GIFs compare side by side. Where the split allows, each seed is followed by
    `continuation` real frames, so real and generated dances can be shown together.
    """
    lead = max(context, SEED_LEAD)
    starts = dataset.window_starts(split, lead + continuation)
    if len(starts) == 0:
        lead = context
        starts = dataset.window_starts(split, context)
    require(len(starts) > 0, f"split {split!r} of {dataset.path} has no {context} consecutive frames to seed from")
    anchors = starts[np.linspace(0, len(starts) - 1, num).round().astype(int)] + lead - 1  # last seed frames
    return anchors - context + 1

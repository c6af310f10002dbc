"""Held-out evaluation: likelihood bounds in nats per frame and bits per pixel, reconstruction IoU.

All numbers come from the model's evaluate() on windows of a split the model never trained on.
bits per pixel = nats per frame / (H * W * ln 2).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .data.dataset import Dataset


def evaluation_windows(dataset: Dataset, split: str, length: int, max_windows: int | None) -> np.ndarray:
    """Window start indices of a split, evenly thinned to at most max_windows (deterministic)."""
    starts = dataset.window_starts(split, length)
    if max_windows is not None and len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return starts


def load_windows(dataset: Dataset, starts, length: int, device) -> torch.Tensor:
    """(B, length, H, W) float frames in [0, 1] on `device`."""
    arr = np.stack([dataset.frames[s:s + length] for s in starts])
    return torch.from_numpy(arr).to(device).float().div_(255.0)


@torch.no_grad()
def evaluate_model(model, dataset: Dataset, split: str = "test", samples: int = 1,
                   batch_size: int = 64, seed: int = 0, max_windows: int | None = None,
                   device="cpu") -> dict:
    """Mean held-out metrics of `model` over the windows of `split`."""
    was_training = model.training
    model.eval()
    starts = evaluation_windows(dataset, split, model.window, max_windows)
    if len(starts) == 0:
        return {"split": split, "windows": 0}
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    step = max(1, batch_size // max(1, samples // 16))  # keep batch x samples bounded
    for i in range(0, len(starts), step):
        batch = load_windows(dataset, starts[i:i + step], model.window, device)
        for key, value in model.evaluate(batch, samples, generator).items():
            sums[key] = sums.get(key, 0.0) + float(value.double().sum())
    model.train(was_training)
    out = {"split": split, "windows": int(len(starts)), "samples": samples}
    out.update({k: v / len(starts) for k, v in sums.items()})
    pixels = dataset.frame_size[0] * dataset.frame_size[1]
    for key in ("nelbo", "iwae"):
        if key in out:
            out[f"{key}_bpp"] = out[key] / (pixels * math.log(2))
    return out

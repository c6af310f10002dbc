"""Held-out likelihood: the negative ELBO and importance-weighted bound in nats per frame and bits
per pixel, and the next-frame IoU, from each model's evaluate() on windows of a split it never
trained on; bits per pixel = nats per frame / (H * W * ln 2).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data.batches import load_windows
from ..data.dataset import Dataset


def evaluation_windows(dataset: Dataset, split: str, length: int, max_windows: int | None) -> np.ndarray:
    """Window start indices of a split, evenly thinned to at most max_windows (deterministic)."""
    starts = dataset.window_starts(split, length)
    if max_windows is not None and len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return starts


EVAL_FRAMES = 512  # frames decoded per evaluation call, at most (about)


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
    # keep windows x samples x frames per call bounded: a sequence model decodes every frame of every
    # window for each importance sample at once (vae-lstm-mdn, 32 windows x 16 samples x 8 frames:
    # 7.3 GB of activations; capped at EVAL_FRAMES: about 1 GB)
    step = max(1, batch_size // max(1, samples // 16))
    step = max(1, min(step, EVAL_FRAMES // (min(samples, 16) * model.window)))
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

"""A sanity gate after every `prepare`: does the new dataset look like a dancer?

A wrong up-axis, unnamed markers drawn without bones, or a segmenter that locked onto nothing all
give a dataset that trains "fine" on garbage. Before a prepared dataset is put in place, a sample
of its frames is measured. Four figures are kept:
  - foreground: the share of the frame that is dancer (median over frames);
  - empty: the share of frames with (almost) no dancer;
  - fragmented: the share of frames whose largest connected part holds less than half of the
    dancer, and which have several parts (scattered dots, not a body);
  - upright: the dancer's height over its width (median of the bounding boxes; a person stands
    taller than wide most of the time -- a flat tangle says the up axis or the skeleton is wrong);
  - steadiness: the IoU of consecutive frames (median; a real dancer overlaps itself).
Measured on our real data: CMU salsa upright 2.7, DAVIS dance-twirl 2.1, parkour 1.7, the built-in
dancer 1.2; CMU salsa drawn from unnamed, shuffled, z-up markers without bones: 0.75.
A broken dataset is refused with the figures that say so; `--force` keeps it anyway.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_FOREGROUND = 0.01   # median dancer share of the frame
MAX_EMPTY = 0.5         # share of empty frames
MAX_FRAGMENTED = 0.5    # share of fragmented frames
MIN_UPRIGHT = 0.8       # median height / width of the dancer's bounding box
EMPTY = 0.001           # a frame with less dancer than this is empty
SAMPLE = 1500           # frames measured, spread evenly


def _parts(mask: np.ndarray) -> tuple[int, float]:
    """(number of 8-connected parts, share of the dancer in the largest one)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return 0, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return n, float(sizes.max() / sizes.sum())


def _upright(mask: np.ndarray) -> float | None:
    """Height over width of the dancer's bounding box; None for an empty frame."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return (rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1)


def inspect(frames: np.ndarray, clips: list[dict]) -> dict:
    """The gate's figures for frames (T, H, W) uint8 (255 = dancer) cut into `clips`."""
    t = len(frames)
    idx = np.unique(np.linspace(0, t - 1, min(SAMPLE, t)).round().astype(int))
    masks = np.asarray(frames[idx]) > 127                                     # (S, H, W)
    share = masks.mean((1, 2))
    parts = [_parts(m) for m in masks]
    fragmented = np.array([n >= 3 and largest < 0.5 for n, largest in parts])
    ends = {c["start"] + c["length"] - 1 for c in clips}
    pairs = [i for i in idx if i not in ends and i + 1 < t]                  # consecutive frames of one clip
    a, b = np.asarray(frames[pairs]) > 127, np.asarray(frames[[i + 1 for i in pairs]]) > 127
    union = (a | b).sum((1, 2))
    iou = np.where(union > 0, (a & b).sum((1, 2)) / np.maximum(union, 1), 1.0)
    upright = [u for u in map(_upright, masks) if u is not None]
    return {"frames": t, "measured": len(idx), "foreground": float(np.median(share)),
            "upright": float(np.median(upright)) if upright else 0.0,
            "empty": float((share < EMPTY).mean()), "fragmented": float(fragmented.mean()),
            "parts": float(np.median([n for n, _ in parts])), "steadiness": float(np.median(iou)) if len(iou) else 1.0}


def problems(stats: dict) -> list[str]:
    """What makes the dataset look broken, in words (empty: it looks fine)."""
    found = []
    if stats["foreground"] < MIN_FOREGROUND:
        found.append(f"the dancer covers {100 * stats['foreground']:.2f}% of the frame (median; "
                     f"at least {100 * MIN_FOREGROUND:g}% expected)")
    if stats["empty"] > MAX_EMPTY:
        found.append(f"{100 * stats['empty']:.0f}% of the frames are empty")
    if stats["upright"] < MIN_UPRIGHT:
        found.append(f"the dancer is wider than tall in most frames (median height/width {stats['upright']:.2f}, "
                     f"at least {MIN_UPRIGHT:g} expected): is the up axis or the skeleton right?")
    if stats["fragmented"] > MAX_FRAGMENTED:
        found.append(f"{100 * stats['fragmented']:.0f}% of the frames are scattered fragments, not one body")
    return found


def summary(stats: dict) -> str:
    return (f"dataset check: dancer {100 * stats['foreground']:.1f}% of the frame (median), "
            f"{stats['parts']:g} part(s) per frame, height/width {stats['upright']:.2f}, {100 * stats['empty']:.0f}% empty frames, "
            f"{100 * stats['fragmented']:.0f}% fragmented, consecutive-frame IoU {stats['steadiness']:.2f} "
            f"({stats['measured']} of {stats['frames']} frames measured)")

"""Choosing the dancer among several people (`prepare --pick`): IoU against hand-drawn masks.

Clips (DAVIS 2016, in ../shared/data/davis; JPEG frames and their masks):
  dance-twirl, parkour -- the real clips;
  upside-down          -- proxy A: dance-twirl flipped vertically, frames and masks;
  still-person         -- proxy B: dance-twirl with a second, still person: the dancer's cut-out of
                          frame 0, scaled 1.3x (38,000 pixels; the dancer's mean is 34,900), pasted
                          at the same place at the left of every frame, clear of the dancer.
Rows: each pick rule; on still-person also a point and a box on the pasted person (then the IoU
with the pasted person's mask should be high) and a box around the dancer; and "blinded": the whole-frame
detector is made to see no one in every second frame, so there the rescue inside the tracked box
(people.Rescue) alone must find the dancer.

Masks are taken at the source resolution (as `prepare --no-crop`) and cleaned as `prepare` does
(keep_dancer). Usage, from the project root: python benchmarks/pick_dancer.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from discodance.data.segment import Segment
from discodance.data.silhouette import keep_dancer
from discodance.data.video import list_images, read_image

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis"
PASTE_SCALE, PASTE_LEFT = 1.3, 20  # proxy B: the pasted person's size and left edge


def load_davis(name: str, frames: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) uint8 frames and (T, H, W) bool hand-drawn masks of a DAVIS clip."""
    folder = DAVIS / name
    images = np.stack([read_image(p) for p in list_images(folder / "frames")[frames]])
    masks = np.stack([read_image(p, gray=True) > 127 for p in list_images(folder / "masks")[frames]])
    return images, masks


def flipped(frames: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proxy A: the clip upside down (a vertical flip of frames and masks)."""
    return np.ascontiguousarray(frames[:, ::-1]), np.ascontiguousarray(masks[:, ::-1])


def with_still_person(frames: np.ndarray, masks: np.ndarray, scale: float = PASTE_SCALE,
                      left: int = PASTE_LEFT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proxy B: the dancer's cut-out of frame 0, `scale` times larger, pasted into every frame with
    its left edge at `left` and its feet on the bottom row. Returns frames, the dancer's masks (minus
    whatever the pasted person hides) and the pasted person's mask."""
    rows, cols = np.flatnonzero(masks[0].any(1)), np.flatnonzero(masks[0].any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    size = (int(round((cols[-1] + 1 - cols[0]) * scale)), int(round((rows[-1] + 1 - rows[0]) * scale)))
    cut = np.asarray(Image.fromarray(frames[0][box]).resize(size, Image.Resampling.BICUBIC))
    shape = np.asarray(Image.fromarray(np.uint8(masks[0][box]) * 255).resize(size, Image.Resampling.BILINEAR)) > 127
    height = frames.shape[1]
    cut, shape = cut[max(size[1] - height, 0):], shape[max(size[1] - height, 0):]  # too tall: lose the head's top
    pasted = np.zeros(masks.shape[1:], bool)
    pasted[height - shape.shape[0]:, left:left + size[0]] = shape
    out = frames.copy()
    out[:, pasted] = cut[shape]
    return out, masks & ~pasted, pasted


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return np.count_nonzero(pred & truth) / union if union else 1.0


def dancer_masks(frames: np.ndarray, pick: str = "moving", blind_every: int = 0) -> tuple[list, dict]:
    """The segment method's cleaned masks of the picked person, and what it reported choosing.

    blind_every=k hides every k-th frame (from the second on) from the whole-frame detector.
    """
    method = Segment(pick=pick)
    if blind_every:
        detect, count = method.people, iter(range(len(frames)))
        method.people = lambda frame: [] if next(count) % blind_every == 1 else detect(frame)
    try:
        masks = [keep_dancer(mask) for mask, _ in method.masks(iter(frames))]
        return masks, method.options()
    finally:
        if blind_every:
            method.people = detect
        method.close()


def row(clip: str, frames, truth, pick: str = "moving", pasted=None, blind_every: int = 0) -> dict:
    t0 = time.perf_counter()
    masks, options = dancer_masks(frames, pick, blind_every)
    scores = [iou(m, t) for m, t in zip(masks, truth)]
    out = {"clip": clip, "pick": pick + (f", detector blind in 1 of {blind_every} frames" if blind_every else ""),
           "iou": round(float(np.mean(scores)), 3), "min": round(float(np.min(scores)), 3),
           "empty": int(sum(not m.any() for m in masks)), "seconds": round(time.perf_counter() - t0, 1),
           "chosen": options.get("chosen"), "others": options.get("others")}
    if pasted is not None:
        out["pasted_iou"] = round(float(np.mean([iou(m, pasted) for m in masks])), 3)
    return out


def measure():
    twirl, twirl_truth = load_davis("dance-twirl")
    upside, upside_truth = flipped(twirl, twirl_truth)
    still, still_truth, pasted = with_still_person(twirl, twirl_truth)
    ys, xs = np.nonzero(pasted)
    point = f"point {int(np.median(xs))},{int(np.median(ys))}"
    box = f"box {xs.min()},{ys.min()},{xs.max() - xs.min() + 1},{ys.max() - ys.min() + 1}"
    yield row("dance-twirl", twirl, twirl_truth)
    yield row("dance-twirl", twirl, twirl_truth, "largest")
    yield row("parkour", *load_davis("parkour"))
    yield row("parkour", *load_davis("parkour"), "largest")
    yield row("upside-down", upside, upside_truth)
    yield row("upside-down", upside, upside_truth, blind_every=2)
    yield row("still-person", still, still_truth, pasted=pasted)
    yield row("still-person", still, still_truth, "largest", pasted=pasted)
    yield row("still-person", still, still_truth, point, pasted=pasted)
    yield row("still-person", still, still_truth, box, pasted=pasted)
    rows0, cols0 = np.flatnonzero(still_truth[0].any(1)), np.flatnonzero(still_truth[0].any(0))
    yield row("still-person", still, still_truth, f"box {cols0[0] - 20},{rows0[0] - 20},{cols0[-1] - cols0[0] + 40},"
              f"{rows0[-1] - rows0[0] + 40}", pasted=pasted)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args(argv)
    if not DAVIS.is_dir():
        print(f"data not found: {DAVIS}", file=sys.stderr)
        return 2
    print("| clip | pick | mean IoU | worst frame | empty frames | IoU with the pasted person |")
    print("|---|---|---|---|---|---|")
    done = []
    for r in measure():
        done.append(r)
        print(f"| {r['clip']} | {r['pick']} | {r['iou']:.3f} | {r['min']:.3f} | {r['empty']} "
              f"| {r.get('pasted_iou', '')} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(done, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mean IoU of each silhouette method against hand-drawn masks (DAVIS 2016 dance-twirl).

Two numbers per method:
  full-res  -- `prepare(..., crop=False)`: the method's masks at the source resolution vs the
               ground-truth masks, pixel for pixel;
  cropped   -- `prepare(..., crop=True, size=H W)`: the dataset frames vs the ground-truth
               masks cropped and resized with the *same* per-frame boxes (meta.json records them).

Usage (from the project root; the data lives beside it in ../shared/data):
    python benchmarks/silhouette_iou.py                       # all methods, 64x64
    python benchmarks/silhouette_iou.py --methods segment selfie --size 128 128 --json out.json

`selfie` is the segment method with MediaPipe Selfie Segmentation instead of Pose, for
comparison. Methods whose optional dependency is missing are reported as skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from discodance.data.crop import crop_mask
from discodance.data.dataset import load_dataset
from discodance.data.silhouette import prepare
from discodance.data.video import list_images, read_image
from discodance.errors import DiscodanceError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis" / "dance-twirl"
VARIANTS = {  # benchmark name -> (method, method options)
    "threshold": ("threshold", {}),
    "background": ("background", {}),
    "segment": ("segment", {}),
    "selfie": ("segment", {"model": "selfie"}),
}


def iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-frame intersection over union of two (T, H, W) masks; 1 where both are empty."""
    pred, truth = pred > 127, truth > 127
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def evaluate(name: str, video: Path, truth: np.ndarray, size, work: Path) -> dict:
    """IoU of one method at full resolution and after cropping, plus seconds taken."""
    method, options = VARIANTS[name]
    row = {"method": name}
    for crop in (False, True):
        out = work / f"{name}-{'crop' if crop else 'full'}"
        t0 = time.perf_counter()
        prepare([video], out, method=method, size=size, crop=crop, progress=False,
                method_options=options, overwrite=True)
        row["seconds_" + ("crop" if crop else "full")] = round(time.perf_counter() - t0, 2)
        ds = load_dataset(out)
        frames = np.asarray(ds.frames)
        n = min(len(frames), len(truth))
        if crop:
            boxes = ds.meta["extra"]["silhouettes"]["clips"][0]["crop_boxes"]
            gt = np.stack([crop_mask(truth[i], boxes[i], size) for i in range(n)])
        else:
            gt = truth[:n]
        scores = iou(frames[:n], gt)
        key = "cropped" if crop else "full_res"
        row[key] = round(float(scores.mean()), 4)
        row[key + "_min"] = round(float(scores.min()), 4)
        row["frames"] = n
        row["options"] = ds.meta["extra"]["silhouettes"]["clips"][0]["method_options"]
    return row


def diagnose(video: Path, truth: np.ndarray) -> dict:
    """Why threshold and background fail here: numbers measured on the raw frames.

    - oracle threshold: the best single luma threshold for the whole clip, chosen *with* the
      ground truth (dark-is-dancer and bright-is-dancer), an upper bound for `threshold`;
    - dancer/background luma: how much the two populations overlap;
    - camera motion: median absolute grey-level change of background pixels between
      consecutive frames (a tripod shot gives ~1-3, sensor noise only).
    """
    from discodance.data.video import open_source
    gray = np.stack(list(open_source(video).frames(gray=True)))[: len(truth)]
    gt = truth[: len(gray)] > 127
    fg = np.bincount(gray[gt], minlength=256).astype(float)
    bg = np.bincount(gray[~gt], minlength=256).astype(float)
    dark = np.cumsum(fg) / (fg.sum() + np.cumsum(bg))            # rule: luma <= t
    bright = np.cumsum(fg[::-1])[::-1] / (fg.sum() + np.cumsum(bg[::-1])[::-1])  # luma >= t
    still = ~(gt[1:] | gt[:-1])
    motion = np.abs(gray[1:].astype(int) - gray[:-1])[still]
    return {"oracle_dark_iou": round(float(dark.max()), 3), "oracle_dark_t": int(dark.argmax()),
            "oracle_bright_iou": round(float(bright.max()), 3), "oracle_bright_t": int(bright.argmax()),
            "dancer_luma_median": int(np.median(gray[gt])),
            "background_luma_median": int(np.median(gray[~gt])),
            "dancer_area_fraction": round(float(gt.mean()), 4),
            "camera_motion_median_grey": float(np.median(motion)),
            "camera_motion_mean_grey": round(float(motion.mean()), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", type=Path, default=DATA / "dance-twirl.mp4",
                    help="video or frame folder to segment (default: DAVIS dance-twirl mp4)")
    ap.add_argument("--masks", type=Path, default=DATA / "masks", help="folder of ground-truth masks")
    ap.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--size", nargs=2, type=int, default=(64, 64), metavar=("H", "W"))
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--diagnose", action="store_true",
                    help="also print why threshold/background fail (oracle threshold, camera motion)")
    args = ap.parse_args(argv)
    if not args.video.exists() or not args.masks.is_dir():
        print(f"data not found: {args.video} / {args.masks}", file=sys.stderr)
        return 2
    truth = np.stack([read_image(p, gray=True) for p in list_images(args.masks)])
    rows = []
    print(f"| method | mean IoU full-res | min | mean IoU cropped {args.size[0]}x{args.size[1]} | min |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            try:
                row = evaluate(name, args.video, truth, tuple(args.size), Path(tmp))
            except DiscodanceError as e:
                print(f"| {name} | skipped: {e} | | | |")
                continue
            rows.append(row)
            print(f"| {name} | {row['full_res']:.3f} | {row['full_res_min']:.3f} "
                  f"| {row['cropped']:.3f} | {row['cropped_min']:.3f} |", flush=True)
    if args.diagnose:
        facts = diagnose(args.video, truth)
        print("\n" + "\n".join(f"- {k}: {v}" for k, v in facts.items()))
        rows.append({"diagnose": facts})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Frames per second of each silhouette method next to plain decoding, on the same video.

Rows:
  decode rgb / decode gray -- FFmpeg (imageio-ffmpeg's binary) piping raw frames, nothing else;
  <method>                 -- decode + the method's mask + cleanup (opening, largest component)
                              at full resolution, i.e. the per-frame work of `prepare`, with the
                              once-per-clip fit (sampling frames for Otsu / the median
                              background; loading the network) timed separately;
  <method> prepare         -- the whole `prepare(..., crop=True)` into a 64x64 dataset (includes
                              probing, the method's fit on a sample, both crop passes, writing).

Usage (from the project root; the data lives beside it in ../shared/data):
    python benchmarks/silhouette_speed.py                      # DAVIS dance-twirl, 3 repeats
    python benchmarks/silhouette_speed.py --video my.mp4 --repeats 1 --methods threshold
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from discodance.data.silhouette import keep_dancer, make_method, prepare
from discodance.data.video import open_source
from discodance.errors import DiscodanceError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis" / "dance-twirl"
METHODS = ("threshold", "background", "segment")


def rate(run, repeats: int) -> float:
    """Best frames/s over `repeats` runs of run(), which returns frames or (frames, seconds)."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        frames, seconds = result if isinstance(result, tuple) else (result, time.perf_counter() - t0)
        best = max(best, frames / seconds)
    return best


def decode(video: Path, gray: bool):
    return lambda: sum(1 for _ in open_source(video).frames(gray=gray))


def per_frame(video: Path, name: str, fit_seconds: list):
    def run():
        clip = open_source(video)
        t0 = time.perf_counter()
        method = make_method(name)
        try:
            method.fit(clip)
            fit_seconds.append(time.perf_counter() - t0)
            frames = clip.frames(gray=method.gray)
            first = next(frames)  # the clock starts after the first frame: it warms the network up
            method(first)
            t1, n = time.perf_counter(), 0
            for mask, _ in method.masks(frames):  # segment: the whole choice of the dancer (pick.py)
                keep_dancer(mask)
                n += 1
            return n, time.perf_counter() - t1
        finally:
            method.close()
    return run


def whole(video: Path, name: str, work: Path):
    def run():
        out = prepare([video], work / name, method=name, overwrite=True, progress=False)
        return json.loads((out / "meta.json").read_text())["num_frames"]
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", type=Path, default=DATA / "dance-twirl.mp4")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.video.exists():
        print(f"video not found: {args.video}", file=sys.stderr)
        return 2
    clip = open_source(args.video)
    print(f"{args.video.name}: {clip.width}x{clip.height}, {clip.est_frames} frames at {clip.fps:g} fps; "
          f"{os.cpu_count()} CPU cores; best of {args.repeats}")
    print("| what | frames/s | fit once per clip (s) |")
    print("|---|---|---|")
    for label, gray in (("decode rgb", False), ("decode gray", True)):
        print(f"| {label} | {rate(decode(args.video, gray), args.repeats):.0f} | |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            try:
                fit: list[float] = []
                fps = rate(per_frame(args.video, name, fit), args.repeats)
                full = rate(whole(args.video, name, Path(tmp)), args.repeats)
            except DiscodanceError as e:
                print(f"| {name} | skipped: {e} | |")
                continue
            print(f"| {name} (decode + mask + cleanup) | {fps:.0f} | {min(fit):.2f} |")
            print(f"| {name} prepare, 64x64 dataset, end to end | {full:.0f} | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

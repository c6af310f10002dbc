"""One side-by-side GIF of every model's rollouts from the same held-out seed frames.

    python benchmarks/models_gif.py --runs benchmarks/results/models_runs --out docs/img/models_dancer.gif

Rows are models (labelled), columns the same seeds for every model (generate.seed_starts aligns
the last seed frame across models with different seed lengths); the first row is the real dance.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from discodance.data.dataset import load_dataset
from discodance.generate import generate, seed_starts, tile, to_uint8, write_gif
from discodance.checkpoint import load_checkpoint
from discodance.models import load_model as model_from_checkpoint


def labelled(rows: list[tuple[str, np.ndarray]], label_w: int = 96) -> np.ndarray:
    """[(label, (T, h, w))] -> (T, sum h, label_w + w) with the label written left of each row."""
    out = []
    font = ImageFont.load_default()
    for label, frames in rows:
        band = Image.new("L", (label_w, frames.shape[1]), 40)
        ImageDraw.Draw(band).text((4, frames.shape[1] // 2 - 6), label, fill=255, font=font)
        band = np.repeat(np.array(band)[None], len(frames), 0)
        out.append(np.concatenate([band, frames], 2))
    return np.concatenate(out, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="folder with one run folder per model")
    ap.add_argument("--out", required=True, help="GIF to write")
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = sorted(p for p in Path(args.runs).iterdir() if (p / "checkpoint.pt").is_file())
    first = load_checkpoint(runs[0])
    data = load_dataset(first["config"]["data"])
    anchors = seed_starts(data, "test", 1, args.num, args.steps)  # last seed frames, shared by all models
    real = np.stack([data.frames[a:a + args.steps + 1] for a in anchors])
    rows = [("real", tile(real, columns=args.num, scale=2))]
    for run in runs:
        model = model_from_checkpoint(load_checkpoint(run))
        seq, seeds = generate(model, data, args.num, args.steps, seed=args.seed)
        assert np.array_equal(seeds, anchors), (run.name, seeds, anchors)
        rows.append((run.name, tile(to_uint8(seq), columns=args.num, scale=2)))
        print(f"{run.name}: done")
    write_gif(args.out, labelled(rows), data.fps)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""A long generated dance next to the real one: one rollout of STEPS frames from a held-out seed
frame, side by side with the real take that seed comes from (played from its start and looped if
it is shorter), as one labelled GIF and a contact sheet PNG (every 25th frame).

    python benchmarks/long_dance.py RUN --steps 1000 --out docs/img/salsa_long
        -> docs/img/salsa_long.gif, docs/img/salsa_long.png, and the rollout's health in .json

The health figures say whether the dance drifts: the dancer's area, the share of frames changing
less than 2 % of its area (frozen), and flicker, each for the first and the last quarter.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from discodance.demo import motion_summary  # noqa: E402
from discodance.generate import generate, write_gif  # noqa: E402
from discodance.runs import open_run  # noqa: E402


def real_take(dataset, frame: int, length: int) -> tuple[np.ndarray, str]:
    """The clip holding `frame`, from its start, looped to `length` frames; and its name."""
    clip = next(c for c in dataset.meta["clips"] if c["start"] <= frame < c["start"] + c["length"])
    frames = np.asarray(dataset.frames[clip["start"]:clip["start"] + clip["length"]])
    return np.resize(frames, (length, *frames.shape[1:])), clip["name"]


def side_by_side(generated: np.ndarray, real: np.ndarray, labels: tuple[str, str], scale: int = 2) -> np.ndarray:
    """(T, H, W) x 2 -> (T, H', W') uint8 with a label over each column."""
    t, h, w = generated.shape
    label_h, gap = 14, 4
    canvas = np.full((t, label_h + h * scale, 2 * w * scale + gap), 96, np.uint8)
    for k, seq in enumerate((generated, real)):
        x0 = k * (w * scale + gap)
        canvas[:, label_h:, x0:x0 + w * scale] = seq.repeat(scale, 1).repeat(scale, 2)
    head = Image.new("L", (canvas.shape[2], label_h), 40)
    draw, font = ImageDraw.Draw(head), ImageFont.load_default()
    for k, text in enumerate(labels):
        draw.text((k * (w * scale + gap) + 3, 1), text, fill=255, font=font)
    canvas[:, :label_h] = np.asarray(head)
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="path without extension")
    args = ap.parse_args()
    model, _, dataset = open_run(args.run)
    frames, seeds = generate(model, dataset, num=1, steps=args.steps, seed=args.seed)
    gen = (frames[0].numpy() > 0.5).astype(np.uint8) * 255                  # (1 + steps, H, W)
    real, take = real_take(dataset, int(seeds[0]), len(gen))
    out = Path(args.out)
    seconds = len(gen) / dataset.fps
    grid = side_by_side(gen, real, (f"generated {seconds:.0f} s", f"real {take}"[:20]))
    write_gif(out.with_suffix(".gif"), grid, dataset.fps)
    sheet = grid[::25][:40]                                                  # every 25th frame, 10 per row
    rows = [np.concatenate(list(sheet[i:i + 10]), axis=1) for i in range(0, len(sheet) - len(sheet) % 10 or 1, 10)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out.with_suffix(".png"))
    quarter = len(gen) // 4
    health = {"run": Path(args.run).name, "steps": args.steps, "fps": dataset.fps, "seed_frame": int(seeds[0]), "take": take,
              "first_quarter": motion_summary(gen[None, :quarter]), "last_quarter": motion_summary(gen[None, -quarter:]),
              "real_take": motion_summary(real[None, :quarter])}
    out.with_suffix(".json").write_text(json.dumps(health, indent=2))
    print(json.dumps(health, indent=2))


if __name__ == "__main__":
    main()

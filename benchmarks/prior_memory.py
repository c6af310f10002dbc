"""Has a code prior learned the dance or memorised its training take? Two checks per code-prior run.

1. Cross-entropy (nats per frame) of the codes the prior trains on (smoothed codes of real frames,
   no corruption: `evaluate`'s 'xent') on windows of the train, val and test blocks, next to a
   baseline that knows no dance: "each variable keeps its class, or moves to one of the other
   K - 1 uniformly", with the change rate fitted on that split's own codes (an optimistic baseline).
   Windows are the longest that fit every split (at most the prior's context + 1 codes), so short
   held-out blocks (CMU salsa: about 50 frames per take) still count.
2. Which training frames its rollouts resemble: R rollouts of 1,024 frames from held-out seeds; for
   the 64 frames ending at 256 and at 1,024, the nearest training frame of each (pixel Hamming
   distance) and its 40-frame segment of the training take. Reported: the mean distance, the share
   of segments ever visited (coverage), the entropy of the visits, the distinct segments per
   rollout window (a rollout that replays the take visits about 3), and the same distance for the
   real test frames.

    python benchmarks/prior_memory.py DATA RUN [RUN ...] [--rollouts 128] [--no-rollouts]

One JSON object per run on stdout. docs/code-prior.md quotes it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from discodance.data.dataset import load_dataset  # noqa: E402
from discodance.evaluation.full import FullEvalConfig, timed_rollouts  # noqa: E402
from discodance.runs import open_run  # noqa: E402

SEGMENT, WINDOW, HORIZONS = 40, 64, (256, 1024)


@torch.no_grad()
def split_xent(model, ds, split: str, codes_len: int, windows: int = 64) -> dict:
    """The prior's cross-entropy and the keep-or-move baseline's on `windows` windows of `split`."""
    lead = model.window - model.train_codes                                    # frames before the first code
    starts = ds.window_starts(split, lead + codes_len)
    idx = np.random.default_rng(0).choice(starts, min(windows, len(starts)), replace=False)
    frames = torch.from_numpy(ds.frames[idx[:, None] + np.arange(lead + codes_len)]).float() / 255
    logits = model.code_logits(frames)[:, :codes_len].float()                  # (B, T, N, K)
    codes = model.read_codes(logits, None)
    N, K = logits.shape[-2:]
    change = (codes[:, 1:] != codes[:, :-1]).float().mean().item()
    baseline = -N * ((1 - change) * math.log(1 - change) + change * math.log(change / (K - 1)))
    return {"xent": round(model.code_xent(logits).mean().item(), 2), "keep_or_move": round(baseline, 2)}


def nearest(frames: np.ndarray, train: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest training frame and the pixel Hamming distance to it, per frame."""
    x = torch.as_tensor(frames > 127).reshape(len(frames), -1).float()
    d = x.sum(1, keepdim=True) + train.sum(1)[None] - 2 * x @ train.T
    dist, idx = d.min(1)
    return idx.numpy(), dist.numpy()


def visits(idx: np.ndarray, segments: int) -> dict:
    share = np.bincount(idx // SEGMENT, minlength=segments) / len(idx)
    p = share[share > 0]
    return {"coverage": round(float((share > 0).mean()), 3), "entropy": round(float(-(p * np.log(p)).sum()), 3)}


def coverage(model, ds, rollouts: int) -> dict:
    tr = ds.indices("train")
    train = torch.as_tensor(ds.frames[tr] > 127).reshape(len(tr), -1).float()
    segments = math.ceil(len(tr) / SEGMENT)
    idx, dist = nearest(ds.frames[ds.indices("test")], train)
    out = {"max_entropy": round(math.log(segments), 3), "real_test": {**visits(idx, segments), "dist": round(float(dist.mean()), 1)}}
    frames, _ = timed_rollouts(model, ds, FullEvalConfig(rollouts=rollouts, horizons=HORIZONS).validate(), "cpu")
    for h in HORIZONS:
        window = frames[:, h - WINDOW + 1:h + 1]                               # (R, WINDOW, H, W)
        idx, dist = nearest(window.reshape(-1, *window.shape[2:]), train)
        per = np.mean([len(np.unique(r // SEGMENT)) for r in idx.reshape(len(window), -1)])
        out[str(h)] = {**visits(idx, segments), "dist": round(float(dist.mean()), 1),
                       "segments_per_window": round(float(per), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--rollouts", type=int, default=128)
    ap.add_argument("--no-rollouts", action="store_true", help="only the cross-entropy check")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    for run in args.runs:
        model, _, _ = open_run(run, ds.path, "cpu")
        model.eval()
        lead = model.window - model.train_codes
        fits = [max((e - b for b, e in ds.blocks(s)), default=0) - lead for s in ("train", "val", "test")]
        codes_len = min(model.train_codes, *fits)
        if codes_len <= model.first + 1:
            raise SystemExit(f"{args.data}: a held-out block is too short for {model.first + 2} codes of {run}")
        row = {"run": run, "codes_per_window": codes_len,
               **{s: split_xent(model, ds, s, codes_len) for s in ("train", "val", "test")}}
        if not args.no_rollouts:
            row["nearest_training_frame"] = coverage(model, ds, args.rollouts)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

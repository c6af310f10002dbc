"""Does a generator visit a rare move too often? Rolls a run out the way `evaluate --full` does
(same seeds, R rollouts of 1,024 frames) and measures two things:

1. wide poses: the share of frames whose silhouette's bounding box is wider than --aspect times
   its height (on CMU salsa: the low, wide-legged lunge; upright frames are 0.3-0.5), with the
   number of episodes per 1,000 frames and their mean length, in the training split, the test
   block and the rollouts;
2. how much of a horizon's frame Fréchet distance a few rollouts carry: the distance of frames
   H-15..H to the test block with all rollouts and without the --drop rollouts whose mean
   feature lies farthest from the test block's mean.
3. which takes the rollouts' material comes from: every 4th frame of frames 1-256 and 769-1,024
   matched to its nearest training frame (evaluation-network features), each take's share of
   those matches over its share of the training frames (1 = as often as the data), and the wide
   episodes' count by the take of each rollout's seed frame.

    python benchmarks/rare_moves.py DATA RUN [--rollouts 128] [--aspect 0.8] [--drop 8]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from discodance.checkpoint import load_checkpoint
from discodance.data.batches import seed_starts
from discodance.data.dataset import load_dataset
from discodance.evaluation import stats as mt
from discodance.evaluation.evalnet import load_or_train
from discodance.evaluation.full import FullEvalConfig, timed_rollouts
from discodance.models import load_model

HORIZONS = (16, 64, 256, 1024)


def aspect(frames: np.ndarray) -> np.ndarray:
    """Bounding-box width / height of the dancer in frames (..., H, W) uint8 (0 for an empty frame)."""
    on = np.asarray(frames) > 127
    rows, cols = on.any(-1), on.any(-2)
    h = np.where(rows.any(-1), rows.shape[-1] - rows[..., ::-1].argmax(-1) - rows.argmax(-1), 0)
    w = np.where(cols.any(-1), cols.shape[-1] - cols[..., ::-1].argmax(-1) - cols.argmax(-1), 0)
    return w / np.maximum(h, 1)


def episodes(flags: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in each row of flags (B, T)."""
    lengths = []
    for row in np.atleast_2d(flags):
        edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
        lengths += list(np.where(edges == -1)[0] - np.where(edges == 1)[0])
    return np.array(lengths)


def split_rows(dataset, split: str) -> list[np.ndarray]:
    """The split's frames as contiguous blocks (a block never crosses a clip or a split edge)."""
    idx = dataset.indices(split)
    return [dataset.frames[b] for b in np.split(idx, np.where(np.diff(idx) != 1)[0] + 1)]


def wide_report(name: str, blocks: list[np.ndarray], threshold: float) -> None:
    flags = [aspect(b) > threshold for b in blocks]
    frames = sum(len(f) for f in flags)
    eps = np.concatenate([episodes(f[None]) for f in flags]) if flags else np.array([])
    mean_len = f"{eps.mean():.1f}" if len(eps) else "-"
    print(f"{name:>10}: wide frames {100 * sum(f.sum() for f in flags) / frames:.2f} % of {frames:,}; "
          f"{len(eps)} episodes, {1000 * len(eps) / frames:.2f} per 1,000 frames, mean length {mean_len}")


def take_report(ds, net, generated: np.ndarray, starts: np.ndarray, threshold: float) -> None:
    """Section 3 of the docstring: the takes the rollouts (R, T, h, w) draw on, and where the
    wide episodes start from."""
    clips = ds.meta["clips"]
    take_of = np.zeros(len(ds.frames), int)
    for j, c in enumerate(clips):
        take_of[c["start"]:c["start"] + c["length"]] = j
    train = ds.indices("train")
    feats = torch.tensor(net.embed(ds.frames[train])["features"])
    base = np.bincount(take_of[train], minlength=len(clips)) / len(train)
    names = [c["name"] for c in clips]
    for lo, hi in ((0, 256), (768, 1024)):
        x = np.ascontiguousarray(generated[:, lo:hi:4]).reshape(-1, *generated.shape[2:])
        fx = torch.tensor(net.embed(x)["features"])
        nearest = torch.cat([torch.cdist(c, feats).argmin(1) for c in fx.split(4096)]).numpy()   # bounded memory
        share = np.bincount(take_of[train[nearest]], minlength=len(clips)) / len(nearest) / np.maximum(base, 1e-12)
        print(f"frames {lo + 1}-{hi}: take share / training share: " + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, share)))
    counts = np.zeros(len(clips), int)
    for start, rollout in zip(starts, generated):
        counts[take_of[start]] += len(episodes((aspect(rollout) > threshold)[None]))
    print("wide episodes by the take of the rollout's seed: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts) if c))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("run")
    ap.add_argument("--rollouts", type=int, default=128)
    ap.add_argument("--aspect", type=float, default=0.8, help="a frame is wide above this width / height")
    ap.add_argument("--drop", type=int, default=8, help="rollouts left out in the second distance")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    model = load_model(load_checkpoint(args.run)).eval()
    cfg = FullEvalConfig(rollouts=args.rollouts, horizons=HORIZONS).validate()
    with torch.no_grad():
        rollouts, _ = timed_rollouts(model, ds, cfg, "cpu")                   # (R, 1 + 1024, h, w), same seeds as evaluate
    generated = np.ascontiguousarray(rollouts[:, 1:])
    wide_report("train", split_rows(ds, "train"), args.aspect)
    wide_report("test", split_rows(ds, "test"), args.aspect)
    wide_report("rollouts", list(generated), args.aspect)
    net, stats = load_or_train(ds)
    test = net.embed(ds.frames[ds.indices("test")])["features"]
    floor = stats["fid_floor"]
    def distances(windows: np.ndarray) -> tuple[float, float, list[int]]:
        """Frame FD / floor of windows (R, L, h, w) to the test block: all, and without the farthest."""
        feats = net.embed(windows.reshape(-1, *windows.shape[2:]))["features"].reshape(len(windows), len(windows[0]), -1)
        far = np.argsort(np.linalg.norm(feats.mean(1) - test.mean(0), axis=1))
        fd = lambda f: mt.frechet_distance(f.reshape(-1, f.shape[-1]), test) / floor
        return fd(feats), fd(feats[far[:len(feats) - args.drop]]), sorted(far[len(far) - args.drop:].tolist())

    # real training windows, as many as rollouts: what leaving the farthest out does to real dance
    starts = np.random.default_rng(0).choice(ds.window_starts("train", cfg.segment, 1), args.rollouts)
    full, kept, _ = distances(np.stack([ds.frames[s:s + cfg.segment] for s in starts]))
    print(f"real training windows: frame FD {full:.2f}x the floor; without the {args.drop} farthest {kept:.2f}x")
    for h in HORIZONS:
        full, kept, far = distances(generated[:, h - cfg.segment:h])                 # frames h-15 .. h
        print(f"frames {h - cfg.segment + 1}-{h}: frame FD {full:.2f}x the floor; without the {args.drop} "
              f"farthest rollouts {kept:.2f}x (they are {far})")
    take_report(ds, net, generated, seed_starts(ds, "test", model.seed_frames, args.rollouts), args.aspect)


if __name__ == "__main__":
    main()

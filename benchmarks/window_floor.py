"""How far REAL dance sits from the held-out test block when it is sampled the way `compare`
samples rollouts: R windows of L consecutive training frames (frame Fréchet distance in the
evaluation network's features), against the i.i.d. floor (as many random training frames as the
test block has). Tells how noisy a horizon's frame FD of R rollouts is before any model is involved.

    python benchmarks/window_floor.py --data data/salsa [--windows 32,64,128] [--draws 40]
"""
from __future__ import annotations

import argparse

import numpy as np

from discodance.data.dataset import load_dataset
from discodance.evaluation.evalnet import load_or_train
from discodance.evaluation.stats import frechet_distance


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--windows", default="32,64,128", help="rollouts per measurement, comma-separated")
    ap.add_argument("--length", type=int, default=16, help="frames per window (the compare's segment)")
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ds = load_dataset(args.data)
    net, stats = load_or_train(ds)
    train, test = ds.indices("train"), ds.indices("test")
    f_train = net.embed(ds.frames[train])["features"]
    f_test = net.embed(ds.frames[test])["features"]
    row_of = {int(t): i for i, t in enumerate(train)}
    starts = ds.window_starts("train", args.length, 1)                # windows never cross clips
    floor = stats["fid_floor"]
    rng = np.random.default_rng(args.seed)
    print(f"{args.data}: i.i.d. floor {floor:.3f} ({len(test)} test frames, {len(train)} training frames)")
    for R in (int(w) for w in args.windows.split(",")):
        fds = []
        for _ in range(args.draws):
            picked = rng.choice(starts, min(R, len(starts)), replace=False)
            rows = [row_of[int(s) + j] for s in picked for j in range(args.length)]
            fds.append(frechet_distance(f_train[rows], f_test))
        fds = np.array(fds)
        print(f"{R:4d} windows of {args.length}: mean {fds.mean():.3f} ({fds.mean() / floor:.2f}x floor), "
              f"5-95 % {np.quantile(fds, 0.05):.3f}-{np.quantile(fds, 0.95):.3f} "
              f"({np.quantile(fds, 0.95) / floor:.2f}x floor)")


if __name__ == "__main__":
    main()

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
from long_drift import real_window_fds  # the same sampler long_drift.py's real-noise row uses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--windows", default="32,64,128", help="rollouts per measurement, comma-separated")
    ap.add_argument("--length", type=int, default=16, help="frames per window (the compare's segment)")
    ap.add_argument("--draws", type=int, default=40)
    args = ap.parse_args()
    ds = load_dataset(args.data)
    net, stats = load_or_train(ds)
    test = net.embed(ds.frames[ds.indices("test")])["features"]
    floor = stats["fid_floor"]
    print(f"{args.data}: i.i.d. floor {floor:.3f} ({len(test)} test frames)")
    for R in (int(w) for w in args.windows.split(",")):
        fds = real_window_fds(ds, net, test, R, args.length, args.draws)
        p5, p95 = np.quantile(fds, [0.05, 0.95])
        print(f"{R:4d} windows of {args.length}: mean {fds.mean():.3f} ({fds.mean() / floor:.2f}x floor), "
              f"5-95 % {p5:.3f}-{p95:.3f} ({p95 / floor:.2f}x floor)")


if __name__ == "__main__":
    main()

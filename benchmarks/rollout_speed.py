"""Rollout frames/s of trained runs side by side: the report's chain (a gumbel-vae run) against
VAE + prior (a code-prior run), at batch 1 and batch 64, in one process, interleaved.

Each round times every run once at every batch size (same held-out seed frames, same seed); the
figure is the median over rounds, so a noisy neighbour on a shared machine moves all runs alike.
Ratios are taken against the first run. A run may carry sampling settings after a colon, e.g.
`runs/prior:decoder=base` (the prior decoding with its base VAE's own decoder instead of its fast
block), so one run can be timed under several settings.

    OMP_NUM_THREADS=1 python benchmarks/rollout_speed.py --data DATA --runs runs/vae runs/prior \
        [runs/prior:decoder=base] [--rounds 5] [--steps 256] [--json benchmarks/results/rollout_speed.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from discodance.checkpoint import load_checkpoint
from discodance.data.batches import load_windows, seed_starts
from discodance.data.dataset import load_dataset
from discodance.models import REGISTRY, load_model
from discodance.runs import with_rollout_settings


def load_run(spec: str):
    """'RUN[:key=value,...]' -> the run's model with those sampling settings."""
    run, _, sets = spec.partition(":")
    settings = dict(kv.split("=", 1) for kv in sets.split(",")) if sets else {}
    return load_model(with_rollout_settings(load_checkpoint(Path(run) / "checkpoint.pt"), settings))


@torch.no_grad()
def frames_per_second(model, seed: torch.Tensor, steps: int) -> float:
    t0 = time.perf_counter()
    model.rollout(seed, steps, torch.Generator().manual_seed(0))
    return len(seed) * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="run folders; ratios are against the first")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    ds = load_dataset(args.data)
    batches = [int(b) for b in args.batches.split(",")]
    models = {run: load_run(run) for run in args.runs}
    seeds = {(run, b): load_windows(ds, seed_starts(ds, "test", m.seed_frames, b), m.seed_frames, "cpu")
             for run, m in models.items() for b in batches}
    for (run, b), seed in seeds.items():                                          # warm-up
        models[run].rollout(seed, 8, torch.Generator().manual_seed(0))
    times = {key: [] for key in seeds}
    for r in range(args.rounds):
        for (run, b), seed in seeds.items():
            times[(run, b)].append(frames_per_second(models[run], seed, args.steps))
        print(f"round {r + 1}/{args.rounds}", flush=True)
    rows = []
    for (run, b), fps in times.items():
        first = statistics.median(times[(args.runs[0], b)])
        rows.append({"run": run, "model": next(n for n, c in REGISTRY.items() if type(models[run]) is c),
                     "batch": b, "frames_per_s": statistics.median(fps), "rounds": fps,
                     "ratio_to_first": statistics.median(fps) / first})
    print("| run | model | batch | frames/s (median) | × first run |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['model']} | {row['batch']} | {row['frames_per_s']:,.0f} | "
              f"{row['ratio_to_first']:.2f}× |")
    if args.json:
        out = {"command": "python benchmarks/rollout_speed.py " + " ".join(
                   f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "runs")
                   + " --runs " + " ".join(args.runs),
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "machine": platform.processor() or platform.machine(), "steps": args.steps, "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Peak memory of every registered model at its default size on 64x64 frames: training (the
default loop settings, batch 64) and the held-out likelihood evaluation (`metrics.evaluate_model`,
the first step of `evaluate --full` and of every `compare` run).

Each (model, phase) runs in a fresh process and reports that process's own peak resident memory
(VmHWM on Linux, see `train.peak_rss_mb`), which includes ~300 MB of Python + PyTorch. Memory
reaches its peak in the first steps / batches, so a few suffice; the evaluation also reports its
increment over the process's peak just before it.

    python benchmarks/model_memory.py [--samples 32] [--windows 48] [--json benchmarks/results/model_memory.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train_phase(name: str, data: str) -> dict:
    import torch
    from discodance.config import TrainConfig
    from discodance.data.dataset import load_dataset
    from discodance.train import peak_rss_mb, train

    torch.set_num_threads(1)
    size = load_dataset(data).frame_size
    overrides = {"base_config": {"frame_size": size}} if name == "code-prior" else {}
    cfg = TrainConfig(steps=4, log_every=1, eval_every=4, ckpt_every=4, eval_batches=1, warmup_steps=1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train(data, Path(tmp) / "run", name, overrides, cfg, progress=False)
    return {"model": name, "phase": "train", "batch": cfg.batch_size, "steps": cfg.steps,
            "seconds": time.perf_counter() - t0, "peak_mb": peak_rss_mb()}


def eval_phase(name: str, samples: int, windows: int, data: str) -> dict:
    import torch
    from discodance.data.dataset import load_dataset
    from discodance.evaluation.likelihood import evaluate_model
    from discodance.models import build_model, model_config
    from discodance.train import peak_rss_mb

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dataset = load_dataset(data)
    overrides = {"base_config": {"frame_size": dataset.frame_size}} if name == "code-prior" else {}
    model = build_model(name, model_config(name, dataset.frame_size, overrides))
    before = peak_rss_mb()
    t0 = time.perf_counter()
    out = evaluate_model(model, dataset, "test", samples, seed=0, max_windows=windows)
    return {"model": name, "phase": "evaluate", "window": model.window, "samples": samples,
            "windows": out["windows"], "seconds": time.perf_counter() - t0, "peak_mb": peak_rss_mb(),
            "increment_mb": peak_rss_mb() - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=32, help="importance samples (compare's default)")
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--json", default="benchmarks/results/model_memory.json")
    ap.add_argument("--models", help="comma-separated (default: every registered model)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        row = (train_phase(args.model, args.data) if args.phase == "train"
               else eval_phase(args.model, args.samples, args.windows, args.data))
        print(json.dumps(row))
        return
    from discodance.models import REGISTRY
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "dancer")
        subprocess.run([sys.executable, "-m", "discodance.cli", "synth", "--out", data, "--frames", "1500"],
                       check=True, capture_output=True)
        for name in (args.models.split(",") if args.models else REGISTRY):
            for phase in ("train", "evaluate"):
                out = subprocess.run([sys.executable, __file__, "--phase", phase, "--model", name, "--data", data,
                                      "--samples", str(args.samples), "--windows", str(args.windows)],
                                     capture_output=True, text=True, check=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                r = rows[-1]
                extra = (f"batch {r['batch']}" if phase == "train" else
                         f"{r['windows']} windows x {r['samples']} samples, +{r['increment_mb']:.0f} MB")
                print(f"{name:13} {phase:9} peak {r['peak_mb']:6.0f} MB  ({extra}; {r['seconds']:.1f} s)", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"frames": "64x64 built-in dancer", "results": rows}, indent=1))


if __name__ == "__main__":
    main()

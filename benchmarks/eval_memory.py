"""Peak memory of the held-out likelihood evaluation (`metrics.evaluate_model`, the first step of
`evaluate --full` and of every `compare` run) for every registered model at its default size.

Each model runs in a fresh process; the peak is that process's own high-water mark (VmHWM on
Linux) minus its mark just before the evaluation, so it is the evaluation's cost alone. The number
of windows does not change the peak (they are evaluated in batches), so a few suffice.

    python benchmarks/eval_memory.py [--samples 32] [--windows 48] [--json benchmarks/results/eval_memory.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(name: str, samples: int, windows: int, data: str) -> dict:
    import torch
    from discodance.data.dataset import load_dataset
    from discodance.metrics import evaluate_model
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
    return {"model": name, "window": model.window, "samples": samples, "windows": out["windows"],
            "seconds": time.perf_counter() - t0, "peak_before_mb": before, "peak_after_mb": peak_rss_mb(),
            "evaluation_mb": peak_rss_mb() - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=32, help="importance samples (compare's default)")
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--json", default="benchmarks/results/eval_memory.json")
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model:
        print(json.dumps(one(args.model, args.samples, args.windows, args.data)))
        return
    from discodance.models import REGISTRY
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "dancer")
        subprocess.run([sys.executable, "-m", "discodance.cli", "synth", "--out", data, "--frames", "1500"],
                       check=True, capture_output=True)
        for name in REGISTRY:
            out = subprocess.run([sys.executable, __file__, "--model", name, "--data", data, "--samples",
                                  str(args.samples), "--windows", str(args.windows)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['model']:13} window {r['window']}  {r['windows']} windows x {r['samples']} samples  "
                  f"{r['seconds']:6.1f} s  evaluation peak +{r['evaluation_mb']:.0f} MB "
                  f"(process peak {r['peak_after_mb']:.0f} MB)", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"frames": "64x64 built-in dancer", "results": rows}, indent=1))


if __name__ == "__main__":
    main()

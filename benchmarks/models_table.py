"""The comparison table: every registered model trained the same way on one dataset, then measured.

Per model: parameters (trainable / total), training throughput, total training time to the model's
final quality (both stages for code-prior, whose first stage is the gumbel-vae run), rollout frames/s
at batch 1 and 64, and the peak resident memory of each phase. Each phase (train, rollout at batch
1, rollout at batch 64) runs in a fresh subprocess, so each peak is that phase's own.

    python benchmarks/models_table.py --data runs/dancer --minutes 10 [--models gan,vrnn] [--threads 2]
        -> benchmarks/results/models_table.json and .md

Definitions
- training throughput: the trainer's logged windows/s (median over log intervals), and the same
  times the window length (frames/s of data read; a gumbel-vae window of 3 frames is one example).
- time to final quality: training runs for --minutes with a validation pass every --eval-every
  steps; "final quality" is the best value of the model's quality metric over the run (val nelbo
  where the model has a bound, lstm-ae's val nll, the GAN's val IoU), and the time is the first
  validation at which the metric came within --tolerance (relative) of it. The run's wall-clock
  (validation included) is what counts. For code-prior it is the gumbel-vae's time plus its own.
- rollout frames/s: generated frames (batch x steps) per second of model.rollout from held-out
  seed frames, after a short warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# model settings shared by all models unless overridden: the demo's conv size, so the table is about
# the architectures, not about one model having a bigger conv net
CONV = {"channels": (16, 32, 64, 128), "hidden": 256}
# (the end-to-end forms this table measured; the two-stage defaults are measured by `discodance compare`)
OVERRIDES = {"gumbel-vae": dict(CONV), "code-prior": {}, "vae-lstm-mdn": dict(CONV, stage="joint"), "gan": dict(CONV),
             "vrnn": dict(CONV, two_stage=False), "lstm-ae": dict(CONV, two_stage=False)}
BATCH = {"vae-lstm-mdn": 16, "vrnn": 16, "lstm-ae": 16, "code-prior": 16}  # windows of 8+ frames; others 64
QUALITY = (("val_nelbo", "min"), ("val_nll", "min"), ("val_iou", "max"))   # first one the model reports


# ----------------------------------------------------------------------------- phases (subprocesses)
def peak_rss_mb() -> float:
    from discodance.train import peak_rss_mb as own_peak  # this process's own peak (see its docstring)
    return own_peak()


def phase_train(args) -> dict:
    from discodance.config import TrainConfig
    from discodance.train import train
    overrides = dict(OVERRIDES.get(args.model, {}))
    if args.model == "code-prior":
        overrides["base_run"] = str(Path(args.out) / "gumbel-vae")
    cfg = TrainConfig(steps=10 ** 9, minutes=args.minutes, batch_size=args.batch_size, eval_every=args.eval_every,
                      eval_batches=args.eval_batches, ckpt_every=10 ** 9, log_every=10, device="cpu")
    run = Path(args.out) / args.model
    t = time.perf_counter()
    train(args.data, run, args.model, overrides, cfg, overwrite=True, progress=False)
    return {"wall_s": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb(), **summarize_run(run, args.tolerance)}


def summarize_run(run: Path, tolerance: float) -> dict:
    """Throughput, time to final quality and final validation numbers from a run's metrics.jsonl."""
    import statistics
    from discodance.checkpoint import load_checkpoint
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ckpt = load_checkpoint(run)
    window = json.loads((run / "config.json").read_text())
    train_lines = [r for r in records if "frames_per_s" in r]
    val = [r for r in records if any(k.startswith("val_") for k in r)]
    key, mode = next(((k, m) for k, m in QUALITY if val and k in val[-1]), (None, None))
    batch = window["train"]["batch_size"]
    rates = [r["frames_per_s"] for r in train_lines[1:] or train_lines]  # the trainer logs windows/s under this name
    out = {"steps": ckpt["step"], "train_s": ckpt["elapsed"], "quality_metric": key,
           "windows_per_s": statistics.median(rates) if rates else ckpt["step"] * batch / ckpt["elapsed"],
           "final": {k: v for k, v in val[-1].items() if k.startswith("val_")} if val else {}}
    out["window"] = window_length(window)
    out["frames_per_s"] = out["windows_per_s"] * out["window"]
    if key:
        values = [(r["time"], r[key]) for r in val]
        best = min(v for _, v in values) if mode == "min" else max(v for _, v in values)
        ok = (lambda v: v <= best + tolerance * abs(best)) if mode == "min" else (lambda v: v >= best - tolerance * abs(best))
        out["best"] = best
        out["time_to_quality_s"] = next(t for t, v in values if ok(v))
    return out


def window_length(run_config: dict) -> int:
    from discodance.models import build_model
    return build_model(run_config["model"], run_config["model_config"]).window


def phase_rollout(args, batch: int) -> dict:
    import numpy as np
    import torch
    from discodance.data.dataset import load_dataset
    from discodance.generate import seed_starts
    from discodance.data.batches import load_windows
    from discodance.checkpoint import load_checkpoint
    from discodance.models import load_model as model_from_checkpoint
    ckpt = load_checkpoint(Path(args.out) / args.model)
    model = model_from_checkpoint(ckpt)
    dataset = load_dataset(args.data)
    starts = seed_starts(dataset, "test", model.seed_frames, min(batch, 64))
    starts = np.resize(starts, batch)
    seed = load_windows(dataset, starts, model.seed_frames, "cpu")
    model.rollout(seed, 2, torch.Generator().manual_seed(0))                      # warm-up
    t = time.perf_counter()
    model.rollout(seed, args.rollout_steps, torch.Generator().manual_seed(0))
    dt = time.perf_counter() - t
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"batch": batch, "steps": args.rollout_steps, "seconds": dt, "frames_per_s": batch * args.rollout_steps / dt,
            "peak_rss_mb": peak_rss_mb(), "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": trainable, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- driver
def run_phase(args, model: str, phase: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--model", model, "--data", str(args.data),
           "--out", str(args.out), "--minutes", str(args.minutes), "--eval-every", str(args.eval_every),
           "--eval-batches", str(args.eval_batches), "--tolerance", str(args.tolerance),
           "--rollout-steps", str(args.rollout_steps), "--batch-size", str(batch_size(args, model))]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{model} {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def batch_size(args, model: str) -> int:
    custom = dict(item.split("=", 1) for item in args.batch or [])
    return int(custom.get(model, BATCH.get(model, 64)))


def measure(args, model: str) -> dict:
    print(f"[{model}] training for {args.minutes} min ...", file=sys.stderr, flush=True)
    row = {"model": model, "batch_size": batch_size(args, model), "train": run_phase(args, model, "train")}
    for b in (1, 64):
        print(f"[{model}] rollout at batch {b} ...", file=sys.stderr, flush=True)
        row[f"rollout{b}"] = run_phase(args, model, f"rollout{b}")
    row["parameters"] = row["rollout1"]["parameters"]
    row["trainable_parameters"] = row["rollout1"]["trainable_parameters"]
    return row


def stage_times(rows: dict) -> None:
    """code-prior's total: its base gumbel-vae's time to quality plus its own."""
    for name, row in rows.items():
        own = row["train"].get("time_to_quality_s")
        row["stages_s"] = [own]
        if name == "code-prior" and "gumbel-vae" in rows:
            row["stages_s"] = [rows["gumbel-vae"]["train"].get("time_to_quality_s"), own]
        row["total_time_to_quality_s"] = None if None in row["stages_s"] else sum(row["stages_s"])


def markdown(info: dict) -> str:
    head = ("| model | parameters (trainable) | train windows/s | train frames/s | time to final quality | "
            "quality (metric) | val IoU | rollout frames/s b=1 | rollout frames/s b=64 | peak MB train / b1 / b64 |")
    lines = [head, "|" + "|".join(["---"] * 10) + "|"]
    for row in info["results"]:
        t, r1, r64 = row["train"], row["rollout1"], row["rollout64"]
        stages = " + ".join(f"{s:.0f}" for s in row["stages_s"] if s is not None)
        ttq = f"{row['total_time_to_quality_s']:.0f} s" + (f" ({stages})" if len(row["stages_s"]) > 1 else "") \
            if row["total_time_to_quality_s"] is not None else "n/a"
        quality = f"{t['best']:.4g} ({t['quality_metric']})" if t.get("quality_metric") else "n/a"
        iou = t["final"].get("val_iou")
        lines.append(f"| {row['model']} | {row['parameters']:,} ({row['trainable_parameters']:,}) | "
                     f"{t['windows_per_s']:.1f} | {t['frames_per_s']:.1f} | {ttq} | {quality} | "
                     f"{'n/a' if iou is None else f'{iou:.3f}'} | {r1['frames_per_s']:.1f} | {r64['frames_per_s']:.1f} | "
                     f"{t['peak_rss_mb']:.0f} / {r1['peak_rss_mb']:.0f} / {r64['peak_rss_mb']:.0f} |")
    notes = [f"Data: {info['data']} ({info['frame_size'][0]}x{info['frame_size'][1]}); {info['minutes']} min of training per "
             f"model (per stage), validation every {info['eval_every']} steps; {info['machine']}; torch {info['torch']}.",
             "Time to final quality: first validation within "
             f"{100 * info['tolerance']:.0f}% of the best value of the quality metric reached in the budget "
             "(code-prior: gumbel-vae + code-prior stages).",
             "Frames/s of training = windows/s x window length (frames of data read per second)."]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset folder (e.g. from `discodance synth`)")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per model (per stage)")
    ap.add_argument("--models", default=None, help="comma-separated subset (default: every registered model)")
    ap.add_argument("--out", default="benchmarks/results/models_runs", help="folder for the benchmark's run folders")
    ap.add_argument("--json", default="benchmarks/results/models_table.json")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--rollout-steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every phase (default: torch's)")
    ap.add_argument("--batch", action="append", metavar="MODEL=SIZE", help="training batch size of one model")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        result = phase_train(args) if args.phase == "train" else phase_rollout(args, int(args.phase.removeprefix("rollout")))
        print(json.dumps(result))
        return

    from discodance.data.dataset import load_dataset
    from discodance.models import REGISTRY
    import torch
    names = args.models.split(",") if args.models else list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown models: {', '.join(unknown)}; registered: {', '.join(REGISTRY)}")
    if "code-prior" in names and "gumbel-vae" not in names:
        names.insert(0, "gumbel-vae")  # code-prior's first stage, trained (and timed) in this run
    names.sort(key=lambda n: n != "gumbel-vae")  # the base run first
    rows = {n: measure(args, n) for n in names}
    stage_times(rows)
    dataset = load_dataset(args.data)
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                       f"{args.threads or torch.get_num_threads()} torch threads",
            "torch": torch.__version__, "data": str(args.data), "frame_size": list(dataset.frame_size),
            "minutes": args.minutes, "eval_every": args.eval_every, "tolerance": args.tolerance,
            "overrides": {n: OVERRIDES.get(n, {}) for n in names}, "results": list(rows.values())}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(info, indent=2, default=str))
    table = markdown(info)
    Path(args.json).with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()

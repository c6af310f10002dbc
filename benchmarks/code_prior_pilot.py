"""The measurements behind docs/code-prior.md that `evaluate --full` does not make.

1. Shimmer sources (`--base RUN`): decode the codes of the real test frames -- q's samples, its
   argmax, and the smoothed codes of code-prior's codes=smooth -- and measure them like rollouts
   (implausible share, frame Fréchet distance, flicker, jitter): what a perfect prior over each
   kind of code would score on this base run.
2. Long rollouts and speed (`--runs RUN ...`): 32 rollouts of 1,024 frames measured at horizons
   16/64/256/1,024 (evaluation.full.rollout_metrics), and rollout frames/s at batch 1 (256 steps) and at
   batch 64 (64 steps).

    OMP_NUM_THREADS=1 python benchmarks/code_prior_pilot.py --data DATA --base runs/vae --runs runs/vae runs/prior
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from discodance.checkpoint import load_checkpoint
from discodance.data.batches import seed_starts
from discodance.data.dataset import load_dataset
from discodance.evaluation import motion as ft
from discodance.evaluation import stats as mt
from discodance.evaluation.evalnet import load_or_train
from discodance.evaluation.full import FullEvalConfig, implausible_flags, real_reference, rollout_metrics, timed_rollouts
from discodance.models import load_model as model_from_checkpoint
from discodance.models.blocks import sample_one_hot
from discodance.models.code_prior import smooth_codes


def measure(net, ref, real, seqs: list[np.ndarray]) -> dict:
    """Implausible share, frame FD against the real test frames, flicker and jitter of uint8 sequences."""
    emb = net.embed(np.concatenate(seqs), device="cpu")
    jitter = []
    for s in seqs:
        poses, n = net.embed(s, device="cpu").get("poses"), len(s) // 16
        if poses is not None and n:
            jitter.append(mt.jitter(poses[:n * 16].reshape(n, 16, *poses.shape[1:])))
    return {"implausible": float(implausible_flags(emb, ref).mean()),
            "frame_fd": mt.frechet_distance(emb["features"], real["test_frames"]["features"]),
            "flicker": float(np.mean([mt.flicker(s) for s in seqs])),
            "jitter": float(np.mean(jitter)) if jitter else float("nan")}


@torch.no_grad()
def shimmer_sources(ds, base: str, net, ref, real, switch_cost: float) -> dict:
    vae = model_from_checkpoint(load_checkpoint(base))
    c, h, K = vae.config.context, vae.config.horizon, vae.config.classes
    seqs = {k: [] for k in ("real", "argmax", "smooth", "sample")}
    for b, e in ds.blocks("test"):
        x = torch.from_numpy(np.array(ds.frames[b:e])).float() / 255
        log_q = vae.encode(x.unfold(0, c, 1).movedim(-1, 1)).float().log_softmax(-1)   # (T, N, K)
        seqs["real"].append((x[c - 1 + h:].numpy() * 255).astype(np.uint8))
        codes = {"argmax": log_q.argmax(-1), "smooth": smooth_codes(log_q[None], switch_cost)[0],
                 "sample": sample_one_hot(log_q, torch.Generator().manual_seed(0)).argmax(-1)}
        for k, z in codes.items():
            frames = torch.sigmoid(vae.decode(torch.nn.functional.one_hot(z, K).float())) > 0.5
            seqs[k].append((frames.numpy() * 255).astype(np.uint8)[:len(frames) - h])
    return {k: measure(net, ref, real, v) for k, v in seqs.items()}


@torch.no_grad()
def speed(ds, model, batch: int, steps: int) -> float:
    seed = torch.from_numpy(np.stack([ds.frames[s:s + model.seed_frames]
                                      for s in seed_starts(ds, "test", model.seed_frames, batch)])).float() / 255
    model.rollout(seed, 8, torch.Generator().manual_seed(0))                  # warm-up
    t0 = time.perf_counter()
    model.rollout(seed, steps, torch.Generator().manual_seed(0))
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", help="a gumbel-vae run: measure the shimmer sources of its codes")
    ap.add_argument("--runs", nargs="*", default=[], help="runs to roll out to 1,024 frames and time")
    ap.add_argument("--switch-cost", type=float, default=1.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    cfg = FullEvalConfig(horizons=(16, 64, 256, 1024)).validate()
    net, ref = load_or_train(ds, cfg.evalnet, device="cpu")
    names = (ds.meta.get("poses") or {}).get("joint_names")
    joints = ft.resolve_skeleton([names[i] for i in ref["joints"]]) if names and "joints" in ref else None
    real = real_reference(ds, net, ref, cfg, "cpu")
    out = {}
    if args.base:
        out["shimmer_sources"] = shimmer_sources(ds, args.base, net, ref, real, args.switch_cost)
        print(json.dumps(out["shimmer_sources"], indent=1), flush=True)
    for run in args.runs:
        model = model_from_checkpoint(load_checkpoint(run))
        row = {"fps_batch1": speed(ds, model, 1, 256), "fps_batch64": speed(ds, model, 64, 64)}
        frames, _ = timed_rollouts(model, ds, cfg, "cpu")
        row["horizons"] = rollout_metrics(frames, net, ref, real, joints, ds, cfg, "cpu")["horizons"]
        out[run] = row
        print(run, json.dumps(row, default=float), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()

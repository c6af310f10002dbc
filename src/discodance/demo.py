"""`discodance demo`: built-in dancer -> train gumbel-vae -> evaluate -> roll out -> pictures.

The whole pipeline on a laptop CPU in a few minutes. The run folder it leaves behind is an
ordinary run folder, so `discodance generate/evaluate/info` work on it too.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .config import TrainConfig, write_json_atomic
from .errors import require
from .folders import FolderLock, Replacement, check_target

# The demo's model: small enough to train to a moving dancer in ~4 CPU minutes.
DEMO_MODEL = {"channels": (16, 32, 64, 128), "hidden": 256}
DEMO_STEPS = 1600
DEMO_ROLLOUT = dict(num=8, steps=48, temperature=1.0, feedback="binary")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(out="runs/demo", minutes: float = 4.0, frames: int = 5000, seed: int = 0,
             overwrite: bool = False, device: str = "auto") -> dict:
    from .data.synthetic import write_synthetic
    from .train import train

    out = Path(out)
    require(frames >= 500, f"--frames must be at least 500 for the demo, got {frames}")
    cfg = TrainConfig(steps=DEMO_STEPS, minutes=minutes, seed=seed, device=device, eval_every=400,
                      ckpt_every=400).validate()
    with FolderLock(out):
        old = Replacement(out) if check_target(out, "run", overwrite=overwrite) else None
        try:
            t0 = time.perf_counter()
            _say(f"[1/4] built-in dancer: {frames} frames, 64x64")
            data = write_synthetic(out / "data", frames, 64, 64, seed)
            _say(f"[2/4] training gumbel-vae (at most {DEMO_STEPS} steps or {minutes:g} minutes)")
            ckpt_path = train(data, out, "gumbel-vae", DEMO_MODEL, cfg)
            metrics = evaluate_and_render(out, data, ckpt_path, seed, device, t0)
        except BaseException:
            if old is not None:
                old.rollback()  # the old demo comes back: nothing of the user's is lost to a failed run
            raise
        if old is not None:
            old.commit()
    return metrics


def evaluate_and_render(out: Path, data: Path, ckpt_path: Path, seed: int = 0, device: str = "auto",
                        t0: float | None = None) -> dict:
    """Steps 3 and 4 of the demo: held-out metrics, rollouts and pictures, metrics.json."""
    from .generate import generate, tile, to_uint8, write_gif, write_outputs
    from .evaluation.likelihood import evaluate_model
    from .runs import open_run, resolve_device

    t0 = time.perf_counter() if t0 is None else t0
    _say("[3/4] evaluating on the held-out test block")
    dev = resolve_device(device)
    model, ckpt, dataset = open_run(ckpt_path, data, dev)
    metrics = evaluate_model(model, dataset, "test", samples=100, batch_size=64, seed=seed, device=dev)
    metrics.update({"train_steps": ckpt["step"], "train_seconds": round(ckpt["elapsed"], 1)})

    _say("[4/4] rolling out dances from held-out seed frames")
    sequences, seeds = generate(model, dataset, seed=seed, device=dev, **DEMO_ROLLOUT)
    files = write_outputs(out, sequences, dataset.fps)
    real = np.stack([dataset.frames[s:s + DEMO_ROLLOUT["steps"] + 1] for s in seeds])
    files["real_gif"] = str(write_gif(out / "real.gif", tile(real), dataset.fps))
    metrics["rollout"] = {**DEMO_ROLLOUT, "seed_frames": [int(s) for s in seeds],
                          "motion": motion_summary(to_uint8(sequences)), "real_motion": motion_summary(real)}
    metrics["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out / "metrics.json", metrics)
    _report(out, metrics, files)
    return metrics


def motion_summary(seq: np.ndarray) -> dict:
    """How much the silhouettes change per frame: mean share of pixels that flip, and the share of
    steps where (almost) nothing moves -- a frozen rollout has flip ~ 0 and frozen ~ 1."""
    x = seq > 127
    flips = (x[:, 1:] != x[:, :-1]).mean((2, 3))             # (B, T-1)
    area = np.maximum(x.mean((2, 3)), 1e-9)[:, 1:]
    rel = flips / area
    return {"pixel_flip_rate": float(flips.mean()), "relative_change": float(rel.mean()),
            "frozen_step_share": float((rel < 0.02).mean()), "dancer_area": float(x.mean())}


def _report(out: Path, m: dict, files: dict) -> None:
    print(f"\ndiscodance demo finished in {m['total_seconds']:.0f} s ({m['train_steps']} training steps)")
    print(f"held-out test: negative ELBO {m['nelbo']:.1f} nats/frame = {m['nelbo_bpp']:.4f} bits/pixel; "
          f"IWAE({m['samples']}) {m['iwae_bpp']:.4f} bits/pixel; next-frame IoU {m['iou']:.3f}")
    print(f"run folder:   {out}")
    for key, label in (("gif", "dance GIF"), ("mp4", "dance MP4"), ("strip", "strip"), ("real_gif", "real GIF")):
        print(f"{label + ':':13} {files[key]}")
    print(f"{'metrics:':13} {out / 'metrics.json'}\n{'checkpoint:':13} {out / 'checkpoint.pt'}")

"""`discodance demo`: built-in dancer -> gumbel-vae -> transformer code prior -> evaluate -> dances.

The whole pipeline on a laptop CPU in about six minutes. It trains the report's discrete VAE (the
chain: encode the current frames, sample a code, decode the next frame) and then the product's
best generator on top of it, a causal transformer over the VAE's codes (`code-prior`), and shows
both side by side from the same held-out seed frames:

    runs/demo/                 the gumbel-vae run (the chain), an ordinary run folder
    runs/demo/prior/           the code-prior run (the transformer), an ordinary run folder
    runs/demo/samples.gif      the transformer's dances (the best generator); chain.gif: the chain's
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .config import TrainConfig, write_json_atomic
from .errors import require
from .folders import FolderLock, Replacement, check_target

# The demo's models: small enough to train in ~5 CPU minutes together. The VAE's held-out bound
# is flat from ~1,200 steps on (validation 0.0556 bits/pixel at 1,200, 0.0559 at 1,600), so the
# minutes go to the prior, which is what the dances are made of.
DEMO_MODEL = {"channels": (16, 32, 64, 128), "hidden": 256}
DEMO_STEPS = 1200
PRIOR_STEPS = 600           # transformer steps of 32 windows of 65 codes (mixture 8: ~0.2 s each on 2 cores;
                            # at 400 its dances jumped between poses: flicker 1.8x the real dancer's)
PRIOR_SHARE = 0.45          # of --minutes: the prior's wall-clock cap (the VAE gets the rest)
DEMO_ROLLOUT = dict(num=8, steps=48, temperature=1.0, feedback="binary")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(out="runs/demo", minutes: float = 5.0, frames: int = 5000, seed: int = 0,
             overwrite: bool = False, device: str = "auto") -> dict:
    out = Path(out)
    require(frames >= 500, f"--frames must be at least 500 for the demo, got {frames}")
    vae_cfg = TrainConfig(steps=DEMO_STEPS, minutes=minutes * (1 - PRIOR_SHARE), seed=seed, device=device,
                          eval_every=400, ckpt_every=400).validate()
    prior_cfg = TrainConfig(steps=PRIOR_STEPS, minutes=minutes * PRIOR_SHARE, seed=seed, device=device,
                            batch_size=32, eval_every=PRIOR_STEPS, ckpt_every=100).validate()
    with FolderLock(out):
        old = Replacement(out) if check_target(out, "run", overwrite=overwrite) else None
        try:
            metrics = _pipeline(out, frames, seed, device, vae_cfg, prior_cfg)
        except BaseException:
            if old is not None:
                old.rollback()  # the old demo comes back: nothing of the user's is lost to a failed run
            raise
        if old is not None:
            old.commit()
    return metrics


def _pipeline(out: Path, frames: int, seed: int, device: str, vae_cfg: TrainConfig, prior_cfg: TrainConfig) -> dict:
    from .data.synthetic import write_synthetic
    from .train import train
    t0 = time.perf_counter()
    _say(f"[1/5] built-in dancer: {frames} frames, 64x64")
    data = write_synthetic(out / "data", frames, 64, 64, seed)
    _say(f"[2/5] training gumbel-vae (at most {DEMO_STEPS} steps or {vae_cfg.minutes:.3g} minutes)")
    train(data, out, "gumbel-vae", DEMO_MODEL, vae_cfg)
    _say(f"[3/5] training the transformer prior over its codes (at most {PRIOR_STEPS} steps or "
         f"{prior_cfg.minutes:.3g} minutes)")
    train(data, out / "prior", "code-prior", {"base_run": str(out)}, prior_cfg)
    return evaluate_and_render(out, data, seed, device, t0)


def evaluate_and_render(out: Path, data: Path, seed: int = 0, device: str = "auto", t0: float | None = None) -> dict:
    """Steps 4 and 5 of the demo: held-out metrics, both generators' dances from the same seed
    frames, the real continuation, metrics.json."""
    from .evaluation.likelihood import evaluate_model
    from .runs import open_run, resolve_device

    t0 = time.perf_counter() if t0 is None else t0
    _say("[4/5] evaluating on the held-out test block")
    dev = resolve_device(device)
    vae, ckpt, dataset = open_run(out, data, dev)
    metrics = evaluate_model(vae, dataset, "test", samples=100, batch_size=64, seed=seed, device=dev)
    metrics.update({"train_steps": ckpt["step"], "train_seconds": round(ckpt["elapsed"], 1)})
    prior, prior_ckpt, _ = open_run(out / "prior", data, dev)
    metrics["prior"] = {"train_steps": prior_ckpt["step"], "train_seconds": round(prior_ckpt["elapsed"], 1)}

    _say("[5/5] rolling out dances from held-out seed frames: the transformer prior and the chain")
    files, rollouts = _render(out, dataset, {"samples": prior, "chain": vae}, seed, dev)
    metrics["rollout"] = rollouts
    metrics["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(out / "metrics.json", metrics)
    _report(out, metrics, files)
    return metrics


def _render(out: Path, dataset, models: dict, seed: int, device) -> tuple[dict, dict]:
    """GIF, MP4 and strip of each model's dances (named by the dict's keys) and the real continuation."""
    from .generate import generate, tile, to_uint8, write_gif, write_outputs
    files, summary, seeds = {}, {**DEMO_ROLLOUT}, None
    for name, model in models.items():
        sequences, seeds = generate(model, dataset, seed=seed, device=device, **DEMO_ROLLOUT)
        files[name] = write_outputs(out, sequences, dataset.fps, name=name)
        summary[f"{name}_motion"] = motion_summary(to_uint8(sequences))
    # the real continuation, as long as every seed's test block allows (a short --frames has short blocks)
    ends = [min(e for b, e in dataset.blocks("test") if b <= s < e) for s in seeds]
    length = min(DEMO_ROLLOUT["steps"] + 1, *(e - s for s, e in zip(seeds, ends)))
    real = np.stack([dataset.frames[s:s + length] for s in seeds])
    files["real_gif"] = str(write_gif(out / "real.gif", tile(real), dataset.fps))
    summary.update({"seed_frames": [int(s) for s in seeds], "real_motion": motion_summary(real)})
    return files, summary


def motion_summary(seq: np.ndarray) -> dict | None:
    """How much the silhouettes change per frame: mean share of pixels that flip, the share of
    steps where (almost) nothing moves -- a frozen rollout has flip ~ 0 and frozen ~ 1 -- and the
    flicker (pixels that flip and flip straight back, evaluation.stats.flicker)."""
    from .evaluation.stats import flicker
    if seq.shape[1] < 3:  # too short to say (a real continuation cut short by a tiny test block)
        return None
    x = seq > 127
    flips = (x[:, 1:] != x[:, :-1]).mean((2, 3))             # (B, T-1)
    area = np.maximum(x.mean((2, 3)), 1e-9)[:, 1:]
    rel = flips / area
    return {"pixel_flip_rate": float(flips.mean()), "relative_change": float(rel.mean()),
            "frozen_step_share": float((rel < 0.02).mean()), "dancer_area": float(x.mean()),
            "flicker": float(flicker(seq))}


def _report(out: Path, m: dict, files: dict) -> None:
    r = m["rollout"]
    print(f"\ndiscodance demo finished in {m['total_seconds']:.0f} s (gumbel-vae {m['train_steps']} steps, "
          f"transformer prior {m['prior']['train_steps']} steps)")
    print(f"held-out test (gumbel-vae): negative ELBO {m['nelbo']:.1f} nats/frame = {m['nelbo_bpp']:.4f} bits/pixel; "
          f"IWAE({m['samples']}) {m['iwae_bpp']:.4f} bits/pixel; next-frame IoU {m['iou']:.3f}")
    flicker = {k: "n/a" if r[k] is None else f"{r[k]['flicker']:.5f}"
               for k in ("samples_motion", "chain_motion", "real_motion")}
    print(f"flicker (pixels flipping and flipping back): transformer {flicker['samples_motion']}, "
          f"chain {flicker['chain_motion']}, real {flicker['real_motion']}")
    print(f"run folders:  {out} (gumbel-vae, the chain)   {out / 'prior'} (transformer prior)")
    for key, label in (("samples", "prior's dance"), ("chain", "chain's dance")):
        print(f"{label + ':':15} {files[key]['gif']}  {files[key]['mp4']}  {files[key]['strip']}")
    print(f"{'real dance:':15} {files['real_gif']}")
    print(f"{'metrics:':15} {out / 'metrics.json'}")

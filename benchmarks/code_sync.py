"""Do a prior's code variables switch together, as the real codes do? Three checks per code-prior run.

1. Desynchronised real codes: the smoothed codes of 48 real training windows, each variable's
   trajectory shifted by its own random offset in -s..s frames, decoded as rollouts decode them
   (deblip, blend). The switch rate stays the same; what a lack of synchrony alone does to the
   decoded motion shows in the pixel change per step, the frozen share and the flicker.
2. The codes a rollout samples: the switch rate per variable and step, and the share of steps in
   which no variable switches, against the real smoothed codes' (64 rollouts of 1,024 codes from
   held-out seeds; raw samples, before deblip).
3. The decoded rollouts against real training windows of the same length: pixel change per step
   (relative to the dancer's area), steps changing < 2 % (frozen) and flicker, in the 64 frames
   ending at 256 and at 1,024.

    python benchmarks/code_sync.py DATA RUN [RUN ...] [--set stay=0] [--out results.jsonl]

One JSON object per run. docs/code-prior.md ("Variables that move together") quotes it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from discodance.data.dataset import load_dataset  # noqa: E402
from discodance.evaluation import stats  # noqa: E402
from discodance.evaluation.full import FullEvalConfig, load_windows, seed_starts, timed_rollouts  # noqa: E402
from discodance.models.code_smoothing import blend_codes, remove_blips  # noqa: E402
from long_drift import drift_arguments, open_with_settings, training_windows  # noqa: E402

WINDOW, SHIFTS, FROZEN = 64, (0, 1, 2, 4), 0.02


def motion(frames: np.ndarray) -> dict:
    """Pixel change per step, frozen share and flicker of frames (B, T, H, W)."""
    change = stats.pixel_change(frames)
    return {"change": round(float(change.mean()), 4), "frozen": round(float((change < FROZEN).mean()), 3),
            "flicker": round(stats.flicker(frames), 5)}


def switches(codes: torch.Tensor) -> dict:
    moved = (codes[:, 1:] != codes[:, :-1]).float()                              # (B, T-1, N)
    return {"switch_rate": round(moved.mean().item(), 4), "no_switch_steps": round((moved.sum(-1) == 0).float().mean().item(), 3)}


@torch.no_grad()
def real_codes(model, ds, length: int, windows: int, seed: int = 0) -> torch.Tensor:
    """Smoothed codes (windows, length, N) of random real training windows."""
    lead = model.window - model.train_codes
    pick = np.random.default_rng(seed).choice(ds.window_starts("train", lead + length), windows)
    frames = torch.from_numpy(ds.frames[pick[:, None] + np.arange(lead + length)]).float() / 255
    return model.read_codes(model.code_logits(frames)[:, :length].float(), None)


@torch.no_grad()
def desync(model, ds) -> list[dict]:
    codes = real_codes(model, ds, WINDOW + 2 * max(SHIFTS), 48)
    B, T, N = codes.shape
    rng, rows = np.random.default_rng(1), []
    for s in SHIFTS:
        offset = rng.integers(-s, s + 1, (B, N))
        t = max(SHIFTS) + np.arange(WINDOW)[None, :, None] + offset[:, None, :]  # (B, WINDOW, N)
        shifted = torch.gather(codes, 1, torch.from_numpy(t))
        decoded = model.decode_codes(blend_codes(remove_blips(shifted), model.vae.config.classes, model.config.blend))
        rows.append({"shift": s, **switches(shifted), **motion(decoded.numpy())})
    return rows


@torch.no_grad()
def sampled(model, ds, rollouts: int = 64, steps: int = 1024) -> dict:
    seed = load_windows(ds, seed_starts(ds, "test", model.seed_frames, rollouts), model.seed_frames, "cpu")
    g = torch.Generator().manual_seed(0)
    prompt = model.read_codes(model.code_logits(seed).float(), g)[:, -model._seed_codes:]
    c = model.config
    codes = model.sample_next(prompt, steps, g, c.temperature, c.top_k, c.top_p)
    return {"real": switches(real_codes(model, ds, WINDOW, 64)), "rollout": switches(codes)}


def decoded_rollouts(model, ds, rollouts: int) -> dict:
    frames, _ = timed_rollouts(model, ds, FullEvalConfig(rollouts=rollouts, horizons=(256, 1024)).validate(), "cpu")
    out = {"real_train": motion(ds.frames[training_windows(ds, rollouts, np.random.default_rng(0))])}
    for h in (256, 1024):
        out[str(h)] = motion(frames[:, h - WINDOW + 1:h + 1])
    return out


def main() -> None:
    args = drift_arguments(__doc__, "stay=0.5").parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    for run in args.runs:
        model, changed = open_with_settings(run, ds, args.set)
        row = {"run": run, "mixture": getattr(model.config, "mixture", 1), "stay": model.config.stay,
               **({"set": changed} if changed else {}), "desync": desync(model, ds),
               "codes": sampled(model, ds), "decoded": decoded_rollouts(model, ds, args.rollouts)}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""Two-stage models in one command.

A model built on a frozen first stage (code-prior on a gumbel-vae; vae-lstm-mdn stage=lstm on a
stage=vae run; vrnn and lstm-ae with two_stage=true) and given no base_run trains that first stage
itself: `discodance train --model code-prior --out runs/prior` writes the first stage to
runs/prior.base and then the model to runs/prior, splitting the budget as `compare` does (the
first stage gets 1 - share of the steps and minutes, the second the rest). Every setting and both
run folders are checked before the first stage starts, so a bad value never costs a trained stage.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from .config import TrainConfig, to_dict
from .data.dataset import load_dataset
from .errors import require
from .folders import check_target
from .limits import check_model_size
from .models import REGISTRY, model_config


def first_stage_of(model: str, sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
    """The registry name and --set values of `model`'s first stage, if it needs one trained."""
    return REGISTRY[model].first_stage(sets)


def split_budget(cfg: TrainConfig, share: float) -> tuple[TrainConfig, TrainConfig]:
    """(first stage's, second stage's) loop settings: 1 - share and share of the steps and minutes."""
    require(0 < share < 1, f"--prior-share must be in (0, 1), got {share}")
    second_steps = max(1, round(cfg.steps * share))
    first = dataclasses.replace(cfg, steps=max(1, cfg.steps - second_steps),
                                minutes=cfg.minutes * (1 - share) if cfg.minutes else None)
    second = dataclasses.replace(cfg, steps=second_steps, minutes=cfg.minutes * share if cfg.minutes else None)
    return first, second


def train_two_stages(data: str | Path, out: str | Path, model: str, sets: dict[str, str], cfg: TrainConfig,
                     share: float, overwrite: bool = False, progress: bool = True) -> Path:
    """Train the first stage into OUT.base, then `model` on it into OUT; returns the checkpoint path."""
    from .train import train
    name, first_sets = first_stage_of(model, sets)
    out = Path(out)
    base = out.with_name(out.name + ".base")
    first_cfg, second_cfg = split_budget(cfg, share)
    for folder in (base, out):
        check_target(folder, "run", inputs=[data], overwrite=overwrite)
    frame_size = load_dataset(data).frame_size
    check_model_size(name, model_config(name, frame_size, first_sets))
    base_config = to_dict(model_config(name, frame_size, first_sets))
    check_model_size(model, model_config(model, frame_size, {**sets, "base_config": base_config}))
    print(f"first stage: {name} ({', '.join(f'{k}={v}' for k, v in first_sets.items()) or 'its defaults'}) "
          f"-> {base}", file=sys.stderr, flush=True)
    train(data, base, name, first_sets, first_cfg, overwrite=overwrite, progress=progress)
    print(f"second stage: {model} -> {out}", file=sys.stderr, flush=True)
    return train(data, out, model, {**sets, "base_run": str(base)}, second_cfg, overwrite=overwrite,
                 progress=progress)

"""Typed configs: every component owns a dataclass of its settings; runs save them as JSON.

from_dict() rebuilds a dataclass from JSON (tuples restored, unknown keys rejected) and
parse_overrides() turns CLI `--set key=value` pairs into typed values, so a typo is an error,
not a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from .errors import DiscodanceError, require


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _coerce(value, annotation, name: str):
    origin = typing.get_origin(annotation)
    if annotation in (int, float, str, bool):
        if annotation is bool and isinstance(value, str):
            require(value.lower() in ("true", "false", "1", "0"), f"{name} must be true or false, got {value!r}")
            return value.lower() in ("true", "1")
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise DiscodanceError(f"{name} must be a whole number, got {value}")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise DiscodanceError(f"{name} must be {annotation.__name__}, got {value!r}") from None
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        args = typing.get_args(annotation)
        inner = args[0] if args else int
        return tuple(_coerce(v, inner, name) for v in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return _coerce(value, args[0], name)
    return value


def from_dict(cls, data: dict):
    """Build dataclass `cls` from a dict, converting lists to tuples and rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    require(not unknown, f"unknown {cls.__name__} setting(s): {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], k) for k, v in data.items()})


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """['latents=32', 'prior=learned'] -> {'latents': '32', 'prior': 'learned'}."""
    out = {}
    for pair in pairs or []:
        require("=" in pair, f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def write_json_atomic(path: Path, data) -> None:
    """Write JSON next to `path` and rename it into place, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


@dataclass
class TrainConfig:
    """Settings of the training loop (model settings live with each model)."""
    steps: int = 2000             # optimizer steps; the run stops at whichever of steps/minutes comes first
    minutes: float | None = None  # wall-clock budget; a timed run is not bit-reproducible, a stepped one is
    batch_size: int = 64          # global batch: split evenly across processes under torchrun
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100       # linear learning-rate warm-up, then cosine decay to lr * final_lr_ratio
    final_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 500
    eval_batches: int = 8
    ckpt_every: int = 500
    log_every: int = 20
    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda | cuda:N | mps
    patience: int = 0             # stop once the best validation IoU of the last `patience` validations
                                  # is < min_improvement above the best before them (0 = never)
    min_improvement: float = 0.01 # relative: 0.01 = the last validations must beat the earlier best by 1%

    def validate(self) -> "TrainConfig":
        for name in ("lr", "weight_decay", "grad_clip", "final_lr_ratio", "minutes"):
            value = getattr(self, name)
            require(value is None or math.isfinite(value), f"{name} must be a finite number, got {value}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(0 <= self.seed < 2 ** 63, f"seed must be in 0 .. 2**63-1, got {self.seed}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                f"betas must be two numbers in [0, 1), got {self.betas}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        require(self.minutes is None or self.minutes > 0, f"minutes must be > 0, got {self.minutes}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")
        require(min(self.eval_every, self.ckpt_every, self.log_every, self.eval_batches) >= 1,
                "eval_every, ckpt_every, log_every and eval_batches must be >= 1")
        require(0 <= self.final_lr_ratio <= 1, f"final_lr_ratio must be in [0, 1], got {self.final_lr_ratio}")
        require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        require(math.isfinite(self.min_improvement) and self.min_improvement >= 0,
                f"min_improvement must be a finite number >= 0, got {self.min_improvement}")
        return self

"""The model registry: name -> class. The CLI's --model choices and the parametrized tests read it."""
from __future__ import annotations

import dataclasses
import importlib
import math

from ..config import from_dict
from ..errors import DiscodanceError, require
from .base import DanceModel
from ..model_names import MODELS

REGISTRY: dict[str, type[DanceModel]] = {
    name: getattr(importlib.import_module(f".{module}", __name__), cls) for name, (module, cls) in MODELS.items()}


# Whole-number settings that may be 0; every other one counts something and must be >= 1.
MAY_BE_ZERO = {"horizon", "mdn_start", "top_k", "slide", "blend", "fast_channels"}  # top_k 0: no top-k cut; slide 0: context // 2; blend 0: one-hot; fast_channels 0: no fast block


def check_numbers(config) -> None:
    """The settings every model shares a rule for: counts >= 1 (or >= 0 where 0 means "none"), and
    no infinite or NaN numbers; each model's validate() checks the rest."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                low = 0 if f.name in MAY_BE_ZERO else 1
                require(v >= low, f"{f.name} must be >= {low}, got {value}")
            elif isinstance(v, float):
                require(math.isfinite(v), f"{f.name} must be a finite number, got {value}")


def model_config(name: str, frame_size, overrides: dict | None = None):
    """The typed config of model `name` for frames of `frame_size`, with `overrides` applied."""
    require(name in REGISTRY, f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name].config_class
    base = dataclasses.asdict(cls())
    base.update(overrides or {})
    base["frame_size"] = tuple(int(s) for s in frame_size)
    config = REGISTRY[name].complete_config(from_dict(cls, base))
    check_numbers(config)
    return config.validate()


def saved_model_config(name: str, frame_size, settings: dict, state_dict: dict):
    """model_config for a saved run: its saved settings, with settings added since it was saved set
    to what its weights were trained as (DanceModel.saved_settings)."""
    require(name in REGISTRY, f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    return model_config(name, frame_size, REGISTRY[name].saved_settings(settings, state_dict))


def build_model(name: str, config) -> DanceModel:
    """Instantiate a registered model from its config (a dataclass or a dict from JSON)."""
    require(name in REGISTRY, f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    if isinstance(config, dict):
        config = from_dict(cls.config_class, config)
    return cls(config)


def load_model(ckpt: dict, device="cpu") -> DanceModel:
    """The model of a loaded checkpoint (checkpoint.load_checkpoint), its settings validated like
    --set values, on `device`, in eval mode. The one place a trained model is rebuilt."""
    cfg = ckpt["config"]
    try:
        config = saved_model_config(cfg["model"], cfg["model_config"].get("frame_size", (0, 0)), cfg["model_config"],
                                    ckpt["model"])
        model = build_model(cfg["model"], config)
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, ValueError):
        raise DiscodanceError(f"the checkpoint's weights do not fit its {cfg['model']} settings "
                              "(edited config or a different discodance version?)") from None
    return model.to(device).eval()

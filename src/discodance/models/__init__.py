"""The model registry: name -> class. The CLI's --model choices and the parametrized tests read it."""
from __future__ import annotations

import dataclasses

from ..config import from_dict
from ..errors import require
from .base import DanceModel
from .code_prior import CodePrior
from .gan import GAN
from .gumbel_vae import GumbelVAE
from .lstm_ae import LSTMAE
from .vae_lstm_mdn import VAELSTMMDN
from .vrnn import VRNN

REGISTRY: dict[str, type[DanceModel]] = {
    "gumbel-vae": GumbelVAE,        # the report's discrete-latent VAE and its re-encoding chain
    "code-prior": CodePrior,        # a learned transition prior over a trained gumbel-vae's codes
    "vae-lstm-mdn": VAELSTMMDN,     # DanceNet: Gaussian VAE + LSTM + mixture density head
    "gan": GAN,                     # conditional next-frame GAN (spectral norm, hinge loss)
    "vrnn": VRNN,                   # Chung et al. 2015
    "lstm-ae": LSTMAE,              # Srivastava et al. 2015, composite model
}


def model_config(name: str, frame_size, overrides: dict | None = None):
    """The typed config of model `name` for frames of `frame_size`, with `overrides` applied."""
    require(name in REGISTRY, f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name].config_class
    base = dataclasses.asdict(cls())
    base.update(overrides or {})
    base["frame_size"] = tuple(int(s) for s in frame_size)
    return from_dict(cls, base).validate()


def build_model(name: str, config) -> DanceModel:
    """Instantiate a registered model from its config (a dataclass or a dict from JSON)."""
    require(name in REGISTRY, f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    if isinstance(config, dict):
        config = from_dict(cls.config_class, config)
    return cls(config)

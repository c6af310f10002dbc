"""The small protocol every model implements; the trainer, evaluator and generator rely on nothing else.

    model.window                      frames per training example (the trainer cuts windows of this length)
    model(batch, step, generator)     -> (loss, logs): loss is a scalar, or a dict {group: scalar} for
                                         models with several optimizers (a GAN's "generator"/"discriminator");
                                         logs is a dict of floats. batch is (B, window, H, W) in [0, 1].
    model.optimizer_groups()          -> {group: [parameters]}; one AdamW per group.
    model.evaluate(batch, samples, generator) -> {metric: (B,) tensor} per-example held-out numbers
    model.rollout(seed, steps, generator, **options) -> (B, 1 + steps, H, W) frames in [0, 1]
    model.seed_frames                 how many frames rollout() needs as its seed
    cls.complete_config(config), model.load_pretrained()   settings and weights taken from other runs
    cls.first_stage(sets)             -> (model, sets) of the run a two-stage model trains first, or None
    model.plateau_stops               False: the trainer ignores --train-set patience (the model's
                                         validation IoU plateaus long before its training is done)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import require


def check_conv_settings(frame_size, channels) -> None:
    """Settings every conv model shares: frames of at least 4x4 pixels, positive channel counts."""
    require(len(frame_size) == 2 and min(frame_size) >= 4, f"frame_size must be (H, W) >= 4, got {frame_size}")
    require(len(channels) >= 1 and min(channels) >= 1, f"channels must be positive, got {channels}")


class DanceModel(nn.Module):
    """Base class: holds the typed config and gives the defaults of the protocol."""

    config_class = None  # set by subclasses: the dataclass of their hyperparameters
    plateau_stops = True  # the trainer's plateau rule (TrainConfig.patience) may end this model's runs
    rollout_settings: tuple[str, ...] = ()  # config fields that only change sampling: `generate/evaluate --set` may change them

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.config.frame_size)

    @property
    def window(self) -> int:
        raise NotImplementedError

    @property
    def seed_frames(self) -> int:
        return 1

    @classmethod
    def complete_config(cls, config):
        """Fill settings that come from other runs before validation (code-prior: its base VAE's
        config from base_run). Most models have none."""
        return config

    @classmethod
    def saved_settings(cls, settings: dict, state_dict: dict) -> dict:
        """A saved run's model settings (JSON), with settings added since it was saved set to what
        its weights were trained as, where the new default would not fit them (code-prior: a run
        from before the mixture head has one component). Called before the model is built, so
        --resume, generate and evaluate rebuild the run as it was. Most models: unchanged."""
        return settings

    @classmethod
    def first_stage(cls, sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """For a model that builds on a frozen, separately trained first stage (code-prior on a
        gumbel-vae, vae-lstm-mdn stage=lstm on a stage=vae run) and was given --set values `sets`
        without base_run: the registry name and --set values of the run to train first. `compare`
        trains it inside the model's budget. Most models have no first stage."""
        return None

    def load_pretrained(self) -> None:
        """Load weights this model takes from other runs, once, when a new run starts (code-prior:
        its frozen base VAE). Never called when a saved run is reloaded: its state dict has them."""

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int, generator: torch.Generator) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator, **options) -> torch.Tensor:
        raise NotImplementedError

"""The frozen per-frame Gaussian VAE that two-stage sequence models build on.

DanceNet trained its conv VAE on single frames first and its sequence model on the latents of the
frozen encoder afterwards; that split is also what fits a CPU budget, since a second-stage step
costs the sequence model alone. The first stage is a `vae-lstm-mdn` run with `stage=vae`
(vae_lstm_mdn.py); this module reads such a run, and `FrozenFrameVAE` holds its encoder and decoder
for another model (lstm-ae with base_run), with each distinct frame encoded once per process.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import load_checkpoint
from ..errors import require
from .blocks import ConvDecoder, ConvEncoder, feedback_frames
from .code_cache import ContextCache

VAE_KEYS = ("latent", "channels", "hidden")   # the first stage's settings that shape its networks
DECODE_CHUNK = 64   # latents decoded per call in a rollout


def read_frame_vae(run: str) -> dict:
    """The checkpoint of a first-stage run (a vae-lstm-mdn stage=vae, or joint, run)."""
    ckpt = load_checkpoint(run)
    model, stage = ckpt["config"]["model"], ckpt["config"]["model_config"].get("stage", "joint")
    require(model == "vae-lstm-mdn" and stage != "lstm",
            f"base_run {run} is a {model!r} run (stage {stage}); a second stage needs a vae-lstm-mdn stage=vae run")
    return ckpt


def base_config_of(run: str) -> tuple[str, dict]:
    """base_run -> its absolute path and its model config (recorded with the second stage's run)."""
    path = str(Path(run).resolve())
    return path, read_frame_vae(path)["config"]["model_config"]


def complete_two_stage(config):
    """A second-stage config (vrnn, lstm-ae): base_run -> its absolute path and model config; a
    config with a base is two-stage."""
    if config.base_config is None and config.base_run:
        config.base_run, config.base_config = base_config_of(config.base_run)
    config.two_stage = config.two_stage or config.base_config is not None
    return config


def check_two_stage(config) -> None:
    """A second-stage config (vrnn, lstm-ae, gan): two_stage needs a base, and the base must be a
    vae-lstm-mdn config trained on frames of this size."""
    require(not config.two_stage or config.base_config is not None,
            "two_stage needs a trained first stage: --set base_run=RUN_FOLDER (a vae-lstm-mdn stage=vae run; "
            "discodance train and compare train one first), or --set two_stage=false")
    if config.base_config is not None:
        require(isinstance(config.base_config, dict) and "latent" in config.base_config,
                f"base_config must be a vae-lstm-mdn config, got {config.base_config!r}")
        require(list(config.base_config.get("frame_size", ())) == list(config.frame_size),
                f"the base run was trained on {config.base_config.get('frame_size')} frames, this data has "
                f"{list(config.frame_size)}")


def latent_first_stage(sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
    """two_stage=true (the default) without base_run: a vae-lstm-mdn stage=vae run of the same conv size."""
    if str(sets.get("two_stage", "true")).lower() not in ("true", "1") or sets.get("base_run"):
        return None
    return "vae-lstm-mdn", {"stage": "vae", **{k: v for k, v in sets.items() if k in ("channels", "hidden")}}


class FrozenFrameVAE(nn.Module):
    """A first stage's encoder (one frame -> mu, logvar) and decoder (latent -> pixel logits), frozen."""

    def __init__(self, base_config: dict):
        super().__init__()
        size, self.latent = tuple(base_config["frame_size"]), int(base_config["latent"])
        channels, hidden = tuple(base_config["channels"]), int(base_config["hidden"])
        self.frame_size = size
        self.encoder = ConvEncoder(1, size, 2 * self.latent, channels, hidden)
        self.decoder = ConvDecoder(self.latent, size, 1, channels, hidden)
        self.requires_grad_(False)
        self.cache = ContextCache(1)   # (mu, logvar) of each distinct frame; never saved

    def load_run(self, run: str) -> None:
        """The first stage's weights (its encoder.* and decoder.* entries)."""
        state = read_frame_vae(run)["model"]
        mine = {k: v for k, v in state.items() if k.split(".")[0] in ("encoder", "decoder")}
        missing = [k for k in self.state_dict() if k not in mine]
        require(not missing, f"base_run {run} lacks the VAE weights {missing[:3]}")
        self.load_state_dict(mine)

    def _load_from_state_dict(self, *args, **kwargs):
        self.cache.clear()   # cached latents belong to the encoder weights being replaced
        return super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def latents(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, logvar (B, T, D) of frames (B, T, H, W), each distinct frame encoded once."""
        rows = self.cache.lookup(frames, lambda ctx: self.encoder(ctx).float())  # (B, T, 2D)
        return rows.to(frames.dtype).chunk(2, -1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., D) latents -> pixel logits (..., H, W)."""
        return self.decoder(z.reshape(-1, z.shape[-1]))[:, 0].view(*z.shape[:-1], *self.frame_size)

    @torch.no_grad()
    def decode_frames(self, z: torch.Tensor, feedback: str, generator) -> torch.Tensor:
        """A rollout's latents (B, T, D) -> its frames (B, T, H, W), decoded DECODE_CHUNK at a time
        and shown as `feedback` says (blocks.feedback_frames)."""
        B, T = z.shape[:2]
        flat = z.flatten(0, 1)
        frames = [feedback_frames(torch.sigmoid(self.decode(flat[i:i + DECODE_CHUNK]).float()), feedback, generator)
                  for i in range(0, len(flat), DECODE_CHUNK)]
        return torch.cat(frames).view(B, T, *self.frame_size) if frames else z.new_zeros(B, 0, *self.frame_size)

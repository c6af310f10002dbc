"""vrnn: the variational recurrent neural network of Chung et al., "A Recurrent Latent Variable Model for
Sequential Data", NeurIPS 2015, with conv feature extractors and Bernoulli pixels.

    prior       p(z_t | x_<t, z_<t) = N(mu_0,t, diag sigma_0,t^2),  [mu_0,t, sigma_0,t] = phi_prior(h_t-1)      eq. 5
    generation  p(x_t | z_<=t, x_<t) = Bernoulli(sigmoid(phi_dec(phi_z(z_t), h_t-1)))                      eq. 6
    recurrence  h_t = GRU([phi_x(x_t), phi_z(z_t)], h_t-1)                                                  eq. 7
    inference   q(z_t | x_<=t, z_<t) = N(mu_z,t, diag sigma_z,t^2), [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_t-1)  eq. 9

phi_x is a conv encoder, phi_dec a conv decoder (models/blocks.py); phi_prior, phi_enc and phi_z are MLPs.
Training maximises the timestep-wise lower bound (eq. 11)
    E_q[ sum_t log p(x_t | z_<=t, x_<t) - KL(q(z_t | x_<=t, z_<t) || p(z_t | x_<t, z_<t)) ]
on windows of seq_len frames (state starts at zero at the window start), with the KL in closed form.
Evaluation reports it per frame ('nelbo') and the importance-weighted bound over whole windows
(Burda et al. 2016, eq. 8, with the filtering q as proposal: 'iwae').

Rollout: the seed frames are filtered (z_t ~ q, h_t updated with the real frames); then each step
samples z_t from the prior, decodes x_t and feeds it back through phi_x into the recurrence — the
model's own ancestral sampling, so every generated frame is re-encoded by phi_x (not by q).

Two stages (`--set base_run=RUN`, a vae-lstm-mdn stage=vae run, frame_vae.py; or `two_stage=true`,
with which `compare` trains that first stage): the observations x_t are then the frozen per-frame
VAE's latents (z ~ q of each frame) instead of pixels; phi_x and phi_dec become MLPs and
p(x_t | z_<=t, x_<t) a diagonal Gaussian, so a step costs no conv net and a window can be long.
Frames are decoded by the frozen decoder at the end of a rollout. The bounds are then on the
latents, not on pixels: evaluate() reports them as 'latent_nelbo' / 'latent_iwae' (nats per
frame's latent), with the IoU of the frame decoded from the predicted last latent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import require
from .base import DanceModel, check_conv_settings
from .blocks import (ConvDecoder, ConvEncoder, check_rollout_options, feedback_frames, frame_iou,
                     frame_log_likelihood, gaussian_log_prob, importance_chunks, iwae_bound, kl_gaussian, mlp,
                     reparameterize)
from .frame_vae import FrozenFrameVAE, check_two_stage, complete_two_stage, latent_first_stage


@dataclass
class VRNNConfig:
    frame_size: tuple[int, int] = (64, 64)
    latent: int = 32              # z_t dimensions
    state: int = 256              # GRU hidden state h_t
    features: int = 256           # phi_x(x_t) output size
    z_features: int = 64          # phi_z(z_t) output size
    seq_len: int = 8              # frames per training window
    seed_len: int = 4             # real frames filtered before a rollout
    kl_weight: float = 1.0
    channels: tuple[int, ...] = (32, 64, 128, 256)
    hidden: int = 512
    base_run: str = ""            # a vae-lstm-mdn stage=vae run: observe its frozen latents (two stages)
    base_config: dict | None = None   # filled from base_run: its model config
    two_stage: bool = True        # observe a first stage's latents (base_run; train and compare train the base first);
                                  # false = end to end through conv nets on frames

    def validate(self) -> "VRNNConfig":
        check_conv_settings(self.frame_size, self.channels)
        require(min(self.latent, self.state, self.features, self.z_features, self.hidden) >= 1,
                "latent, state, features, z_features and hidden must be >= 1")
        require(self.seq_len >= 1 and self.seed_len >= 1, "seq_len and seed_len must be >= 1")
        require(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        check_two_stage(self)
        return self


class VRNN(DanceModel):
    config_class = VRNNConfig

    @classmethod
    def complete_config(cls, config: VRNNConfig) -> VRNNConfig:
        return complete_two_stage(config)

    @classmethod
    def first_stage(cls, sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        return latent_first_stage(sets)

    def __init__(self, config: VRNNConfig):
        super().__init__(config.validate())
        c = config
        self.two_stage = c.two_stage
        if self.two_stage:
            self.vae = FrozenFrameVAE(c.base_config)
            self.phi_x = mlp(self.vae.latent, c.hidden, c.features)
            self.phi_dec = mlp(c.z_features + c.state, c.hidden, 2 * self.vae.latent)   # Gaussian over x_t
        else:
            self.phi_x = ConvEncoder(1, c.frame_size, c.features, c.channels, c.hidden)
            self.phi_dec = ConvDecoder(c.z_features + c.state, c.frame_size, 1, c.channels, c.hidden)
        self.phi_z = nn.Sequential(nn.Linear(c.latent, c.z_features), nn.SiLU())
        self.phi_prior = mlp(c.state, c.hidden, 2 * c.latent)
        self.phi_enc = mlp(c.features + c.state, c.hidden, 2 * c.latent)
        self.rnn = nn.GRUCell(c.features + c.z_features, c.state)

    def load_pretrained(self) -> None:
        """Two stages: the base run's VAE, frozen, when a new run starts."""
        if self.two_stage:
            self.vae.load_run(self.config.base_run)

    @property
    def window(self) -> int:
        return self.config.seq_len

    @property
    def seed_frames(self) -> int:
        return self.config.seed_len

    # --------------------------------------------------------------------------- pieces
    def observe(self, frames: torch.Tensor, generator) -> torch.Tensor:
        """The observations x_t of frames (B, T, H, W): the frames, or (two stages) z ~ q (B, T, D)."""
        return reparameterize(*self.vae.latents(frames), generator) if self.two_stage else frames

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi_x: observations (B, T, H, W) or (B, T, D) -> (B, T, features)."""
        if self.two_stage:
            return self.phi_x(x)
        B, T = x.shape[:2]
        return self.phi_x(x.reshape(B * T, 1, *x.shape[-2:])).view(B, T, -1)

    def decode(self, fz: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """phi_dec: phi_z(z) (..., Fz) and h (..., state) -> pixel logits (..., H, W), or (two stages)
        the mean and log-variance of x_t, concatenated (..., 2D)."""
        if self.two_stage:
            return self.phi_dec(torch.cat([fz, h], -1))
        lead = fz.shape[:-1]
        x = torch.cat([fz, h], -1).reshape(-1, fz.shape[-1] + h.shape[-1])
        return self.phi_dec(x)[:, 0].view(*lead, *self.frame_size)

    def log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_t | z_<=t, x_<t) per step (B, T) of decode()'s output for observations x."""
        return gaussian_log_prob(x, *out.chunk(2, -1)) if self.two_stage else frame_log_likelihood(out, x)

    def frame_logits(self, out: torch.Tensor) -> torch.Tensor:
        """Pixel logits (..., H, W) of decode()'s output: the frozen decoder of its mean, two stages."""
        return self.vae.decode(out.chunk(2, -1)[0]) if self.two_stage else out

    def filter(self, fx: torch.Tensor, generator, h=None):
        """Run inference over features fx (B, T, F): per step the posterior and prior parameters, the
        sample z_t ~ q, phi_z(z_t) and h_t-1. Returns a dict of (B, T, ...) tensors and the final h."""
        B, T = fx.shape[:2]
        h = fx.new_zeros(B, self.config.state) if h is None else h               # (B, S)
        keys = ("mu_q", "logvar_q", "mu_p", "logvar_p", "z", "fz", "h")
        out = {k: [] for k in keys}
        for t in range(T):
            mu_p, logvar_p = self.phi_prior(h).chunk(2, -1)                      # (B, D) each, eq. 5
            mu_q, logvar_q = self.phi_enc(torch.cat([fx[:, t], h], -1)).chunk(2, -1)   # eq. 9
            z = reparameterize(mu_q, logvar_q, generator)
            fz = self.phi_z(z)                                                   # (B, Fz)
            for k, v in zip(keys, (mu_q, logvar_q, mu_p, logvar_p, z, fz, h)):
                out[k].append(v)
            h = self.rnn(torch.cat([fx[:, t], fz], -1), h)                       # eq. 7
        return {k: torch.stack(v, 1) for k, v in out.items()}, h

    # --------------------------------------------------------------------------- training
    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        x = self.observe(batch, generator)
        f, _ = self.filter(self.features(x), generator)
        rec = -self.log_likelihood(self.decode(f["fz"], f["h"]), x)              # (B, T), eq. 6
        kl = kl_gaussian(f["mu_q"], f["logvar_q"], f["mu_p"], f["logvar_p"])     # (B, T)
        pixels = batch.shape[-1] * batch.shape[-2]
        loss = (rec + self.config.kl_weight * kl).mean() / pixels                # nats per pixel, eq. 11
        logs = {"loss": loss.item(), "rec_nats": rec.mean().item(), "kl_nats": kl.mean().item()}
        return loss, logs

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
                 chunk: int = 16) -> dict[str, torch.Tensor]:
        """Per-frame bound (eq. 11), importance-weighted window bound, and the IoU of the last frame
        predicted from the prior given the earlier frames. Two stages: the bounds are on the latent
        means of the frames ('latent_nelbo', 'latent_iwae')."""
        B, T = batch.shape[:2]
        obs = self.vae.latents(batch)[0] if self.two_stage else batch            # (B, T, D) means, or frames
        fx = self.features(obs)                                                  # (B, T, F)

        def draw(s: int) -> dict[str, torch.Tensor]:                            # each (B, s)
            x, fxs = obs.repeat_interleave(s, 0), fx.repeat_interleave(s, 0)
            f, _ = self.filter(fxs, generator)
            ll = self.log_likelihood(self.decode(f["fz"], f["h"]), x)            # (B*s, T)
            kl = kl_gaussian(f["mu_q"], f["logvar_q"], f["mu_p"], f["logvar_p"])
            log_pq = gaussian_log_prob(f["z"], f["mu_p"], f["logvar_p"]) - gaussian_log_prob(f["z"], f["mu_q"], f["logvar_q"])
            z = reparameterize(f["mu_p"][:, -1], f["logvar_p"][:, -1], generator)   # prior at the last step
            pred = self.frame_logits(self.decode(self.phi_z(z), f["h"][:, -1])) > 0
            truth = batch[:, -1].repeat_interleave(s, 0) > 0.5
            return {"log_w": (ll + log_pq).sum(1).view(B, s), "nelbo": (kl - ll).sum(1).view(B, s),
                    "kl": kl.sum(1).view(B, s), "iou": frame_iou(pred, truth).view(B, s)}

        d = importance_chunks(samples, chunk, draw)
        unit = "latent_" if self.two_stage else ""
        return {f"{unit}nelbo": d["nelbo"].mean(1) / T, f"{unit}iwae": iwae_bound(d["log_w"]) / T,
                "rec": (d["nelbo"] - d["kl"]).mean(1) / T, "kl": d["kl"].mean(1) / T, "iou": d["iou"].mean(1)}

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary") -> torch.Tensor:
        """Seed frames (B, seed_len, H, W) -> (B, 1 + steps, H, W) in [0, 1]: filter the seed, then
        ancestral sampling (z_t from the prior with its standard deviation scaled by sqrt(tau);
        tau = 0 takes the prior mean); the shown frame is also the one fed back through phi_x."""
        check_rollout_options(temperature, feedback)
        _, h = self.filter(self.features(self.observe(seed, generator)), generator)   # h after the seed
        out, latents = [seed[:, -1]], []
        for _ in range(steps):
            mu_p, logvar_p = self.phi_prior(h).chunk(2, -1)
            fz = self.phi_z(reparameterize(mu_p, logvar_p, generator, math.sqrt(temperature)))
            dec = self.decode(fz, h)
            if self.two_stage:   # x_t ~ p(x_t | z_t, h): a latent, fed back as it is; decoded at the end
                x = reparameterize(*dec.chunk(2, -1), generator, math.sqrt(temperature)).to(seed.dtype)
                latents.append(x)
            else:
                x = feedback_frames(torch.sigmoid(dec.float()), feedback, generator).to(seed.dtype)   # (B, H, W)
                out.append(x)
            h = self.rnn(torch.cat([self.features(x[:, None])[:, 0], fz], -1), h)
        if latents:
            out += list(self.vae.decode_frames(torch.stack(latents, 1), feedback, generator).to(seed.dtype).unbind(1))
        return torch.stack(out, 1)

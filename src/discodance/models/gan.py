"""gan: a conditional next-step GAN that rolls out from seed frames: by default on the latents of a
frozen per-frame VAE (two stages, below), with `two_stage=false` on the frames themselves:

    generator      x_t = G(x_t-c..t-1, n),  n ~ N(0, I)     conv encoder of the context -> [code, n] -> conv decoder
    discriminator  D(x_t-c..t-1, x_t) -> score               spectral-normalised conv net on (context, next) stacks

Architecture after DCGAN (Radford, Metz & Chintala, ICLR 2016: strided convolutions, no pooling); the
generator conditioned on the previous frames as in pix2pix (Isola et al., CVPR 2017), whose objective
we use: the conditional adversarial loss plus a reconstruction term (eq. 4,
G* = arg min_G max_D L_cGAN + lambda L_rec), here with the pixel cross-entropy as L_rec — on small
CPU-sized data it anchors the generator to the real continuation while the adversarial term keeps
its frames sharp. Stabilisers: spectral normalisation of every discriminator layer (Miyato et al.,
ICLR 2018, eq. 8: W / sigma(W), one power iteration per forward) and the hinge loss (Lim & Ye 2017):
    L_D = E[relu(1 - D(c, x))] + E[relu(1 + D(c, G(c, n)))],     L_G = -E[D(c, G(c, n))] + lambda L_rec.

Why a next-frame GAN freezes, and the two remedies here. Judged on (context, next frame) pairs, a
generator that copies the last context frame is hard to tell from real slow motion, and the
reconstruction term rewards the mean of the possible next frames, which sits between moving and
still; rolled out, small stills compound into a held pose. So:
  unroll = k > 1   the generator continues the real context for k frames, feeding its own frames
                   (probabilities, differentiable) back as context, and the critic judges
                   (context, k frames) windows against real k-frame continuations: over k frames
                   real dance visibly moves and a held pose does not (the reconstruction term
                   stays on the first frame, where the real next frame is a fair target);
  mode_seeking = w the mode-seeking regulariser of Mao et al. (CVPR 2019, "Mode Seeking Generative
                   Adversarial Networks", eq. 3): two noise draws for the same context should give
                   different frames, L_ms = |G(c, n1) - G(c, n2)|_1 / |n1 - n2|_1, added to L_G as
                   w / (L_ms + eps), so the noise cannot be ignored.
Defaults unroll = 3, mode_seeking = 0.03, measured on the built-in dancer (8 CPU-minutes, demo
size, docs/compare): with neither, 80-91 % of rollouts were frozen by frame 256; unroll alone, 38 %;
unroll with w = 1, blobs (the term w / L_ms dominates while L_ms is ~0.01-0.1); w = 0.01, no
freezing but every rollout falls into one arm-wave motif (pose diversity -35 %); w = 0.03, no
freezing, varied moves, frame distance at 64 frames 1.7x its floor, but edge noise (flicker 9x
real); w = 0.1, noisier still. Lowering rec_weight to 3 instead froze every rollout.

Two stages (`two_stage`, the default): the same objective, in the latent space of a frozen per-frame
Gaussian VAE (a vae-lstm-mdn stage=vae run, frame_vae.py; `discodance train` and `compare` train it
first, inside the budget) — the adversarial counterpart of DanceNet's two stages. The sequence is
the encoder's means mu_t of the frames; the generator is an MLP
    mu_t = G(mu_t-c..t-1, n)
the critic a spectral-normalised MLP on (context, k generated) windows of latents against real
ones, L_rec the squared error of the first generated latent per latent dimension (a Gaussian
log-likelihood of unit variance, up to a constant), and frames are decoded by the frozen decoder.
Why: in pixels every step runs two conv nets per frame of the window, so in a CPU budget the frame
GAN is still undertrained when the budget ends (converged compare, docs/compare: 3 of 4 runs
missed a frame distance of 3x its floor at 64 frames, with mitten hands and loose blobs); on
latents a step costs two small MLPs, and every frame it draws is one the VAE's decoder can draw.
Measured in the same compare (4 + 4 minutes, two seeds): frame distance at 64 frames 1.45 / 2.16x
the floor on the built-in dancer and 1.00 / 0.91x on CMU salsa, no frozen rollout, flicker
1.2-1.4x real. `two_stage=false` trains the frame GAN above end to end.

forward() returns {"generator": L_G, "discriminator": L_D} from one discriminator pass over the real
and generated windows. Each loss must be back-propagated into its own group only — the trainer does
this with backward(inputs=group parameters) — so L_D does not move G and L_G does not move D.

No likelihood: evaluate() reports the IoU of the generated next frame and the pixel cross-entropy of
the generator's probabilities ('pixel_xent', nats per frame; not a bound on any likelihood); two
stages: that IoU and the squared error of the generated latent ('latent_se', per latent dimension).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from ..errors import require
from .base import DanceModel, check_conv_settings
from .blocks import (ConvDecoder, ConvEncoder, _conv_grid, check_rollout_options, feedback_frames, frame_iou,
                     frame_log_likelihood, gaussian_noise, mlp, pad_to_grid)
from .frame_vae import FrozenFrameVAE, check_two_stage, complete_two_stage, latent_first_stage


@dataclass
class GANConfig:
    frame_size: tuple[int, int] = (64, 64)
    context: int = 2              # previous frames the generator and discriminator see
    noise: int = 32               # noise dimensions
    code: int = 256               # generator's encoding of the context
    rec_weight: float = 10.0      # lambda of the reconstruction term (0 = pure hinge GAN)
    unroll: int = 3               # frames the generator continues and the critic judges (1 = pairs)
    mode_seeking: float = 0.03    # weight of Mao et al.'s mode-seeking term (0 = off)
    channels: tuple[int, ...] = (32, 64, 128, 256)
    d_channels: tuple[int, ...] = (32, 64, 128, 256)
    hidden: int = 512
    base_run: str = ""            # a vae-lstm-mdn stage=vae run: play the game on its frozen latents (two stages)
    base_config: dict | None = None   # filled from base_run: its model config
    two_stage: bool = True        # on a first stage's latents (base_run; train and compare train the base first);
                                  # false = end to end through conv nets on frames
    layers: int = 3               # two stages: layers of the generator's and the critic's MLPs (width `hidden`)

    def validate(self) -> "GANConfig":
        check_conv_settings(self.frame_size, self.channels)
        check_conv_settings(self.frame_size, self.d_channels)
        require(self.context >= 1 and self.noise >= 1 and self.code >= 1 and self.hidden >= 1 and self.layers >= 1,
                "context, noise, code, hidden and layers must be >= 1")
        require(self.rec_weight >= 0, f"rec_weight must be >= 0, got {self.rec_weight}")
        require(self.mode_seeking >= 0, f"mode_seeking must be >= 0, got {self.mode_seeking}")
        check_two_stage(self)
        return self


class Critic(nn.Module):
    """(B, C, H, W) -> (B,) scores; stride-2 spectral-normalised convs with LeakyReLU, no normalisation
    layers, input zero-padded to a multiple of 2^levels (any frame size)."""

    def __init__(self, in_channels: int, frame_size, channels):
        super().__init__()
        self.frame_size, self.levels = tuple(frame_size), len(channels)
        layers, c_in = [], in_channels
        for c in channels:
            layers += [spectral_norm(nn.Conv2d(c_in, c, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        gh, gw = _conv_grid(*self.frame_size, self.levels)
        self.head = spectral_norm(nn.Linear(c_in * gh * gw, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(pad_to_grid(x, self.levels)).flatten(1))[:, 0]       # (B,)


class LatentCritic(nn.Module):
    """(B, T, D) latent windows -> (B,) scores; a spectral-normalised MLP with LeakyReLU."""

    def __init__(self, steps: int, latent: int, hidden: int, layers: int):
        super().__init__()
        dims = [steps * latent] + [hidden] * (layers - 1)
        mods = []
        for a, b in zip(dims, dims[1:]):
            mods += [spectral_norm(nn.Linear(a, b)), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*mods, spectral_norm(nn.Linear(dims[-1], 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))[:, 0]


class GAN(DanceModel):
    config_class = GANConfig
    # Its next-frame IoU comes from the reconstruction term and plateaus within seconds (two stages:
    # ~700 steps), long before the adversarial term has shaped the rollouts: stopped there, 56 % of
    # one salsa run's rollouts were frozen by frame 256, trained to the cap none. It trains to its budget.
    plateau_stops = False

    @classmethod
    def complete_config(cls, config: GANConfig) -> GANConfig:
        return complete_two_stage(config)

    @classmethod
    def first_stage(cls, sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        return latent_first_stage(sets)

    def __init__(self, config: GANConfig):
        super().__init__(config.validate())
        c = config
        self.two_stage = c.base_config is not None
        if self.two_stage:
            self.vae = FrozenFrameVAE(c.base_config)
            D = self.vae.latent
            self.latent_generator = mlp(c.context * D + c.noise, c.hidden, D, c.layers)
            self.critic = LatentCritic(c.context + c.unroll, D, c.hidden, c.layers)
        else:
            self.context_encoder = ConvEncoder(c.context, c.frame_size, c.code, c.channels, c.hidden)
            self.frame_decoder = ConvDecoder(c.code + c.noise, c.frame_size, 1, c.channels, c.hidden)
            self.critic = Critic(c.context + c.unroll, c.frame_size, c.d_channels)

    def load_pretrained(self) -> None:
        """Two stages: the base run's VAE, frozen, when a new run starts."""
        if self.two_stage:
            self.vae.load_run(self.config.base_run)

    @property
    def window(self) -> int:
        return self.config.context + self.config.unroll

    @property
    def seed_frames(self) -> int:
        return self.config.context

    def optimizer_groups(self):
        gen = [p for n, p in self.named_parameters() if not n.startswith("critic.") and p.requires_grad]   # the frozen VAE has no grad
        return {"generator": gen, "discriminator": [p for p in self.critic.parameters() if p.requires_grad]}

    # --------------------------------------------------------------------------- pieces
    def generate(self, context: torch.Tensor, generator, scale: float = 1.0, noise: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Context frames (B, c, H, W) + noise (drawn and scaled by `scale`, or given) -> next-frame
        pixel logits (B, H, W); two stages: context latents (B, c, D) -> the next latent (B, D)."""
        if noise is None:
            noise = scale * gaussian_noise((len(context), self.config.noise), generator, context.device).to(context.dtype)
        if self.two_stage:
            return self.latent_generator(torch.cat([context.flatten(1), noise], -1))
        return self.frame_decoder(torch.cat([self.context_encoder(context), noise], -1))[:, 0]

    def shown(self, out: torch.Tensor) -> torch.Tensor:
        """What the generator's output feeds back as context and shows the critic: frame probabilities
        from pixel logits; a latent as it is."""
        return out if self.two_stage else torch.sigmoid(out)

    def sequence(self, batch: torch.Tensor) -> torch.Tensor:
        """The sequence the game is played on: the frames (B, T, H, W), or (two stages) their
        frozen encoder's means (B, T, D), each distinct frame encoded once."""
        return self.vae.latents(batch)[0] if self.two_stage else batch

    def reconstruction(self, first: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """L_rec (B,) of the first generated step: pixel cross-entropy in nats per pixel, or (two
        stages) the squared error per latent dimension, halved (unit-variance Gaussian NLL + const)."""
        if self.two_stage:
            return 0.5 * (first - real).pow(2).mean(-1)
        return -frame_log_likelihood(first, real) / (real.shape[-1] * real.shape[-2])

    # --------------------------------------------------------------------------- training
    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        c, k = self.config.context, self.config.unroll
        seq = self.sequence(batch)                                               # (B, c + k, H, W) or (B, c + k, D)
        context, real = seq[:, :c], seq[:, c:]
        fake, first, noise = self.unrolled(context, k, generator)                # (B, k, ...) as shown
        windows = torch.cat([seq, torch.cat([context, fake], 1)], 0)             # (2B, c + k, ...)
        scores = self.critic(windows).float()
        d_real, d_fake = scores.chunk(2)                                         # (B,) each
        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        rec = self.reconstruction(first, real[:, 0])                             # (B,)
        g_loss = -d_fake.mean() + self.config.rec_weight * rec.mean()
        logs = {"rec": rec.mean().item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
        if self.config.mode_seeking > 0:                                         # a second noise draw
            other_noise = gaussian_noise(noise.shape, generator, noise.device).to(noise.dtype)
            other = self.shown(self.generate(context, generator, noise=other_noise))
            ratio = (fake[:, 0] - other).abs().flatten(1).mean(1) / (noise - other_noise).abs().mean(-1)   # (B,)
            g_loss = g_loss + self.config.mode_seeking / (ratio.float().mean() + 1e-5)
            logs["mode_seeking_ratio"] = ratio.mean().item()
        logs.update(loss=(g_loss + d_loss).item(), g_loss=g_loss.item(), d_loss=d_loss.item())
        return {"generator": g_loss, "discriminator": d_loss}, logs

    def unrolled(self, context: torch.Tensor, k: int, generator):
        """k steps generated from a real context (B, c, ...), each fed back as shown (frame
        probabilities, or latents): (B, k, ...) as shown, the first step's raw output (pixel logits
        or latent) and its noise."""
        frames, first, noise = list(context.unbind(1)), None, None
        for i in range(k):
            n = gaussian_noise((len(context), self.config.noise), generator, context.device).to(context.dtype)
            out = self.generate(torch.stack(frames[-self.config.context:], 1), generator, noise=n)
            first, noise = (out, n) if i == 0 else (first, noise)
            frames.append(self.shown(out))
        return torch.stack(frames[self.config.context:], 1), first, noise

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
        """IoU of the generated next frame and its pixel cross-entropy, averaged over noise samples."""
        c = self.config.context
        if self.two_stage:
            return self._evaluate_latents(batch, samples, generator)
        context, real = batch[:, :c], batch[:, c]                                # the next frame only
        iou, xent = [], []
        for _ in range(samples):
            logits = self.generate(context, generator)
            iou.append(frame_iou(logits > 0, real > 0.5))
            xent.append(-frame_log_likelihood(logits, real))
        return {"iou": torch.stack(iou, 1).mean(1), "pixel_xent": torch.stack(xent, 1).mean(1)}

    def _evaluate_latents(self, batch: torch.Tensor, samples: int, generator) -> dict[str, torch.Tensor]:
        c = self.config.context
        mu = self.vae.encoder(batch[:, :c + 1].flatten(0, 1)[:, None]).float().chunk(2, -1)[0]   # uncached
        mu = mu.view(len(batch), c + 1, -1)
        iou, se = [], []
        for _ in range(max(1, samples)):
            z = self.generate(mu[:, :c], generator)                              # (B, D)
            iou.append(frame_iou(self.vae.decode(z) > 0, batch[:, c] > 0.5))
            se.append(self.reconstruction(z, mu[:, c]))
        return {"iou": torch.stack(iou, 1).mean(1), "latent_se": torch.stack(se, 1).mean(1)}

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary") -> torch.Tensor:
        """Seed frames (B, context, H, W) -> (B, 1 + steps, H, W) in [0, 1]; temperature scales the
        noise (0 = no noise), and the shown frame is fed back as context."""
        check_rollout_options(temperature, feedback)
        if self.two_stage:   # latents fed back as they are, all frames decoded at the end
            z = list(self.vae.latents(seed)[0].unbind(1))
            for _ in range(steps):
                z.append(self.generate(torch.stack(z[-self.config.context:], 1), generator, temperature))
            new = torch.stack(z[seed.shape[1]:], 1) if steps else seed.new_zeros(len(seed), 0, self.vae.latent)
            return torch.cat([seed[:, -1:], self.vae.decode_frames(new, feedback, generator).to(seed.dtype)], 1)
        frames = list(seed.unbind(1))
        out = [frames[-1]]
        for _ in range(steps):
            context = torch.stack(frames[-self.config.context:], 1)
            probs = torch.sigmoid(self.generate(context, generator, temperature).float())
            x = feedback_frames(probs, feedback, generator).to(seed.dtype)
            frames.append(x)
            out.append(x)
        return torch.stack(out, 1)

"""Shared building blocks: conv encoder/decoder for any frame size, and the Gumbel-Softmax tools.

Gumbel-Softmax / Concrete relaxation: Jang, Gu & Poole, "Categorical Reparameterization with
Gumbel-Softmax", ICLR 2017 (eq. 1: Gumbel-Max; eq. 2: the relaxed sample
y_k = softmax((log pi_k + g_k) / tau); Sec. 2.2: the straight-through variant);
Maddison, Mnih & Teh, "The Concrete Distribution", ICLR 2017.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- Gumbel-Softmax
def gumbel_noise(shape, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Standard Gumbel noise g = -log(-log u), float32.

    u is drawn on the generator's device (CPU by default, so a seed gives the same numbers on
    every device) and clamped away from 0 and 1: log(0) would give inf and a NaN gradient.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    u = u.clamp(tiny, 1.0 - torch.finfo(torch.float32).eps)
    return (-torch.log(-torch.log(u))).to(device if device is not None else gen_device)


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed one-hot sample over the last axis (eq. 2); hard=True gives the straight-through
    sample: one-hot in the forward pass, the relaxed sample's gradient in the backward pass."""
    if tau <= 0:
        raise ValueError(f"Gumbel-Softmax temperature must be > 0, got {tau}")
    g = gumbel_noise(logits.shape, generator, logits.device)
    y = torch.softmax((logits.float().log_softmax(-1) + g) / tau, dim=-1)
    if hard:
        one_hot = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
        y = one_hot - y.detach() + y
    return y.to(logits.dtype)


def sample_one_hot(logits: torch.Tensor, generator: torch.Generator | None = None,
                   temperature: float = 1.0) -> torch.Tensor:
    """An exact categorical sample as a one-hot vector (Gumbel-Max, eq. 1), no gradient.

    temperature scales the logits (1 = the model's distribution, < 1 sharper); 0 takes the argmax.
    """
    logits = logits.float().log_softmax(-1)
    if temperature == 0:
        index = logits.argmax(-1)
    else:
        index = (logits / temperature + gumbel_noise(logits.shape, generator, logits.device)).argmax(-1)
    return F.one_hot(index, logits.shape[-1]).float()


def kl_categorical(logits_q: torch.Tensor, logits_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per categorical variable, summed over the last (class) axis, in float32.

    Written with log_softmax and q * (log q - log p) so q = 0 contributes exactly 0, not NaN.
    """
    log_q = logits_q.float().log_softmax(-1)
    log_p = logits_p.float().log_softmax(-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def temperature_at(step: int, tau0: float, tau_min: float, rate: float, every: int = 1) -> float:
    """tau = max(tau_min, tau0 * exp(-rate * step)), updated every `every` steps (paper, Sec. 4.2)."""
    step = (step // max(every, 1)) * max(every, 1)
    return max(tau_min, tau0 * math.exp(-rate * step))


# ----------------------------------------------------------------------------- conv nets
def _conv_grid(height: int, width: int, levels: int) -> tuple[int, int]:
    """Spatial size after `levels` stride-2 convolutions on the input padded to a multiple of 2^levels."""
    f = 2 ** levels
    return math.ceil(height / f), math.ceil(width / f)


class ConvEncoder(nn.Module):
    """(B, C, H, W) frames -> (B, out_dim) features, for any H and W.

    The input is zero-padded on the right/bottom to a multiple of 2^levels so that odd sizes
    (e.g. DanceNet's 120x208) work with the same stride-2 stack.
    """

    def __init__(self, in_channels: int, frame_size, out_dim: int, channels=(32, 64, 128, 256),
                 hidden: int = 512):
        super().__init__()
        self.frame_size, self.levels = tuple(frame_size), len(channels)
        layers, c_in = [], in_channels
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        gh, gw = _conv_grid(*self.frame_size, self.levels)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * gh * gw, hidden), nn.SiLU(),
                                  nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_size
        gh, gw = _conv_grid(h, w, self.levels)
        f = 2 ** self.levels
        x = F.pad(x, (0, gw * f - w, 0, gh * f - h))
        return self.head(self.convs(x))


class ConvDecoder(nn.Module):
    """(B, in_dim) codes -> (B, out_channels, H, W) logits, mirroring ConvEncoder, cropped to H x W."""

    def __init__(self, in_dim: int, frame_size, out_channels: int = 1,
                 channels=(32, 64, 128, 256), hidden: int = 512):
        super().__init__()
        self.frame_size = tuple(frame_size)
        self.grid = _conv_grid(*self.frame_size, len(channels))
        rev = list(channels)[::-1]
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(),
                                nn.Linear(hidden, rev[0] * self.grid[0] * self.grid[1]), nn.SiLU())
        layers = []
        for c_in, c_out in zip(rev, rev[1:] + [rev[-1]]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU()]
        layers.append(nn.Conv2d(rev[-1], out_channels, 3, 1, 1))
        self.deconvs = nn.Sequential(*layers)
        self.top = rev[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_size
        x = self.fc(z).view(len(z), self.top, *self.grid)   # (B, C, gh, gw)
        return self.deconvs(x)[..., :h, :w]

"""Shared building blocks: conv encoder/decoder for any frame size, the Gumbel-Softmax tools,
Gaussian and Bernoulli pieces, the mixture density head, and the rollout helpers.

Gumbel-Softmax / Concrete relaxation: Jang, Gu & Poole, "Categorical Reparameterization with
Gumbel-Softmax", ICLR 2017 (eq. 1: Gumbel-Max; eq. 2: the relaxed sample
y_k = softmax((log pi_k + g_k) / tau); Sec. 2.2: the straight-through variant);
Maddison, Mnih & Teh, "The Concrete Distribution", ICLR 2017.

Gaussian latents: Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (Sec. 2.4: the
reparameterization z = mu + sigma * eps; Appendix B: the closed-form KL to N(0, I)).

Mixture density head: Bishop, "Mixture Density Networks", 1994; in the form of Graves,
"Generating Sequences With Recurrent Neural Networks", 2013, Sec. 4.1 (eq. 20: softmax mixture
weights, eq. 21: identity means, eq. 22: exp standard deviations, eq. 26: the negative
log-likelihood), with diagonal instead of bivariate Gaussians. Sampling temperature as in Ha & Eck,
"A Neural Representation of Sketch Drawings", ICLR 2018, Sec. 3.3: logits / tau, variances * tau.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import require


# ----------------------------------------------------------------------------- class-axis softmax
SHORT_CLASS_AXIS = 16   # below this many classes the CPU kernels run far faster across the other axis


def log_softmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last (class) axis, in float32. PyTorch's CPU kernel vectorises along the
    reduced axis, so for the short class axes of categorical codes (K < 16) it runs one row at a
    time: 5-10x slower than reducing the transposed tensor, which vectorises across rows (measured
    on (100, 20, 10): 300 against 50 us). The transposed form computes the same sums in the same
    order on every device."""
    return _over_classes(logits, torch.log_softmax)


def softmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the last (class) axis, in float32 (see log_softmax_classes)."""
    return _over_classes(logits, torch.softmax)


def _over_classes(logits: torch.Tensor, normalise) -> torch.Tensor:
    x = logits.float()
    if x.dim() < 2 or x.shape[-1] >= SHORT_CLASS_AXIS:
        return normalise(x, -1)
    return normalise(x.mT.contiguous(), -2).mT


# ----------------------------------------------------------------------------- noise
def noise(draw, shape, generator: torch.Generator | None, dtype=torch.float32) -> torch.Tensor:
    """Noise from `draw` (torch.rand, torch.randn, or partial(torch.randint, low, high) with an
    integer dtype) on the generator's device: CPU by default, so a seed gives the same numbers on
    every device. The one place noise is drawn."""
    device = generator.device if generator is not None else torch.device("cpu")
    return draw(shape, generator=generator, device=device, dtype=dtype)


def uniform_open(shape, generator: torch.Generator | None) -> torch.Tensor:
    """Uniforms kept inside (0, 1): log(0) would give inf and a NaN gradient."""
    return noise(torch.rand, shape, generator).clamp(torch.finfo(torch.float32).tiny,
                                                     1.0 - torch.finfo(torch.float32).eps)


def on_device(x: torch.Tensor, device=None) -> torch.Tensor:
    return x if device is None else x.to(device)


# ----------------------------------------------------------------------------- Gumbel-Softmax
def gumbel_noise(shape, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Standard Gumbel noise g = -log(-log u), float32, moved to `device` (see noise())."""
    return on_device(-torch.log(-torch.log(uniform_open(shape, generator))), device)


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed one-hot sample over the last axis (eq. 2); hard=True gives the straight-through
    sample: one-hot in the forward pass, the relaxed sample's gradient in the backward pass."""
    if tau <= 0:
        raise ValueError(f"Gumbel-Softmax temperature must be > 0, got {tau}")
    g = gumbel_noise(logits.shape, generator, logits.device)
    y = softmax_classes((log_softmax_classes(logits) + g) / tau)
    if hard:
        one_hot = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
        y = one_hot - y.detach() + y
    return y.to(logits.dtype)


def sample_one_hot(logits: torch.Tensor, generator: torch.Generator | None = None,
                   temperature: float = 1.0) -> torch.Tensor:
    """An exact categorical sample as a one-hot vector (Gumbel-Max, eq. 1), no gradient.

    temperature scales the logits (1 = the model's distribution, < 1 sharper); 0 takes the argmax.
    """
    logits = log_softmax_classes(logits)
    if temperature == 0:
        index = logits.argmax(-1)
    else:
        index = (logits / temperature + gumbel_noise(logits.shape, generator, logits.device)).argmax(-1)
    return F.one_hot(index, logits.shape[-1]).float()


def kl_categorical(logits_q: torch.Tensor, logits_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per categorical variable, summed over the last (class) axis, in float32.

    Written with log_softmax and q * (log q - log p) so q = 0 contributes exactly 0, not NaN.
    """
    log_q = log_softmax_classes(logits_q)
    log_p = log_softmax_classes(logits_p)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def temperature_at(step: int, tau0: float, tau_min: float, rate: float, every: int = 1) -> float:
    """tau = max(tau_min, tau0 * exp(-rate * step)), updated every `every` steps (paper, Sec. 4.2)."""
    step = (step // max(every, 1)) * max(every, 1)
    return max(tau_min, tau0 * math.exp(-rate * step))


# ----------------------------------------------------------------------------- conv nets
# Conv weights and activations are kept channels-last (N, H, W, C in memory): oneDNN's CPU kernels
# and cuDNN's tensor-core kernels both prefer it. The conv gumbel-vae's training step at the demo's
# size runs about 20% faster on one CPU thread (benchmarks/throughput.py); values are unchanged
# up to floating-point reassociation. Only the layout differs: shapes and indexing are as before.
CONV_LAYOUT = torch.channels_last
def _conv_grid(height: int, width: int, levels: int) -> tuple[int, int]:
    """Spatial size after `levels` stride-2 convolutions on the input padded to a multiple of 2^levels."""
    f = 2 ** levels
    return math.ceil(height / f), math.ceil(width / f)


def pad_to_grid(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Zero-pad (..., H, W) on the right/bottom to multiples of 2^levels (what ConvEncoder does)."""
    h, w = x.shape[-2:]
    gh, gw = _conv_grid(h, w, levels)
    f = 2 ** levels
    return F.pad(x, (0, gw * f - w, 0, gh * f - h))


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
        self.to(memory_format=CONV_LAYOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_size
        gh, gw = _conv_grid(h, w, self.levels)
        f = 2 ** self.levels
        x = F.pad(x, (0, gw * f - w, 0, gh * f - h)).contiguous(memory_format=CONV_LAYOUT)
        return self.head(self.convs(x))


class PixelHead(nn.Conv2d):
    """The decoder's last layer: a 3x3 convolution (stride 1, padding 1) from C feature maps to a
    few output maps, computed as a per-channel (depthwise) 3x3 convolution summed over C. Same
    weights, same result up to floating-point reassociation; measured on one CPU thread at the
    demo's size (C = 16, 64x64, batch 64), oneDNN's direct convolution with one output channel
    takes 24 ms forward against 8 ms this way, and the decoder's top block trains about 25% faster
    (benchmarks/throughput.py measures the whole step)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        O = self.out_channels
        w = self.weight.transpose(0, 1).reshape(C * O, 1, 3, 3)                # channel c * O + o
        taps = F.conv2d(x, w, None, padding=1, groups=C)                         # (B, C * O, H, W)
        return taps.view(B, C, O, H, W).sum(1) + self.bias.view(1, O, 1, 1)


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
        layers.append(PixelHead(rev[-1], out_channels))
        self.deconvs = nn.Sequential(*layers)
        self.top = rev[0]
        self.to(memory_format=CONV_LAYOUT)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.crop(self.last_block(self.trunk(z)))

    @property
    def last_block(self) -> nn.Sequential:
        """The last, full-resolution block: transposed conv, norm, SiLU, PixelHead (most of a decode's cost)."""
        return self.deconvs[-4:]

    @property
    def trunk_channels(self) -> int:
        """C, the channels of the features the last block reads."""
        return self.last_block[0].in_channels

    def trunk(self, z: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) codes -> the features (B, C, H/2, W/2) the last block reads."""
        x = self.fc(z).view(len(z), self.top, *self.grid).contiguous(memory_format=CONV_LAYOUT)   # (B, C, gh, gw)
        return self.deconvs[:-4](x)

    def crop(self, logits: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_size
        return logits[..., :h, :w]


# ----------------------------------------------------------------------------- Gaussians
LOG_2PI = math.log(2 * math.pi)


def gaussian_noise(shape, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Standard normal noise, float32, moved to `device` (see noise())."""
    return on_device(noise(torch.randn, shape, generator), device)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None,
                   scale: float = 1.0) -> torch.Tensor:
    """z = mu + scale * sigma * eps (Kingma & Welling Sec. 2.4); scale 0 gives the mean."""
    eps = gaussian_noise(mu.shape, generator, mu.device).to(mu.dtype)
    return mu + scale * torch.exp(0.5 * logvar) * eps


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag(exp(logvar))) summed over the last axis, in float32."""
    x, mu, logvar = x.float(), mu.float(), logvar.float()
    return -0.5 * ((x - mu) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def kl_gaussian(mu_q, logvar_q, mu_p=None, logvar_p=None) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) summed over the last axis (float32); p = N(0, I) by default."""
    mu_q, logvar_q = mu_q.float(), logvar_q.float()
    mu_p = torch.zeros_like(mu_q) if mu_p is None else mu_p.float()
    logvar_p = torch.zeros_like(logvar_q) if logvar_p is None else logvar_p.float()
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1).sum(-1)


# ----------------------------------------------------------------------------- mixture density head
class MDNHead(nn.Module):
    """(..., in_dim) features -> a mixture of M diagonal Gaussians over a dim-vector:
    logit_pi (..., M), mu (..., M, dim), log_sigma (..., M, dim).

    sigma is a standard deviation (never a variance), bounded below by exp(min_log_sigma) through a
    softplus, so the density stays finite when a latent dimension is (almost) constant.
    """

    def __init__(self, in_dim: int, dim: int, mixtures: int, min_log_sigma: float = -7.0):
        super().__init__()
        self.dim, self.mixtures, self.min_log_sigma = dim, mixtures, min_log_sigma
        self.proj = nn.Linear(in_dim, mixtures * (1 + 2 * dim))

    def forward(self, h: torch.Tensor):
        m, d = self.mixtures, self.dim
        out = self.proj(h).float()
        logit_pi, rest = out[..., :m], out[..., m:].unflatten(-1, (m, 2 * d))    # (..., M), (..., M, 2D)
        mu, raw = rest[..., :d], rest[..., d:]                                    # (..., M, D) each
        log_sigma = self.min_log_sigma + F.softplus(raw - self.min_log_sigma)
        return logit_pi, mu, log_sigma


def mdn_log_prob(logit_pi: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                 x: torch.Tensor) -> torch.Tensor:
    """log sum_m pi_m prod_d N(x_d; mu_md, sigma_md^2), shape (...), in float32 nats."""
    x = x.float()[..., None, :]                                                   # (..., 1, D)
    z = (x - mu) * torch.exp(-log_sigma)                                          # (..., M, D)
    comp = -0.5 * (z ** 2 + LOG_2PI).sum(-1) - log_sigma.sum(-1)                  # (..., M)
    return torch.logsumexp(log_softmax_classes(logit_pi) + comp, dim=-1)


def mdn_sample(logit_pi: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
               generator: torch.Generator | None, temperature: float = 1.0) -> torch.Tensor:
    """A sample (..., D): component m ~ Cat(softmax(logit_pi / tau)), then x ~ N(mu_m, tau * sigma_m^2).
    tau = 1 is the model's distribution; tau = 0 takes the mean of the most likely component."""
    one_hot = sample_one_hot(logit_pi, generator, temperature)[..., None]          # (..., M, 1)
    mean = (one_hot * mu).sum(-2)                                                 # (..., D)
    sigma = (one_hot * log_sigma.exp()).sum(-2)
    eps = gaussian_noise(mean.shape, generator, mean.device)
    return mean + math.sqrt(temperature) * sigma * eps


# ----------------------------------------------------------------------------- frames
FEEDBACK = ("binary", "sample", "probs")


def frame_log_likelihood(x_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log prod_pixels Bernoulli(target; sigmoid(x_logits)) per frame: (..., H, W) -> (...), float32 nats."""
    return -F.binary_cross_entropy_with_logits(x_logits.float(), target.float(), reduction="none").sum((-2, -1))


def feedback_frames(probs: torch.Tensor, mode: str, generator: torch.Generator | None) -> torch.Tensor:
    """Pixel probabilities -> the frame a rollout shows and feeds back: thresholded ("binary"), a
    Bernoulli sample ("sample", uniforms drawn on the generator's device) or the probabilities."""
    if mode == "probs":
        return probs
    if mode == "binary":
        return (probs > 0.5).to(probs.dtype)
    u = noise(torch.rand, probs.shape, generator).to(probs.device)
    return (u < probs).to(probs.dtype)


def check_rollout_options(temperature: float, feedback: str) -> None:
    require(feedback in FEEDBACK, f"feedback must be one of {', '.join(FEEDBACK)}, got {feedback!r}")
    require(temperature >= 0, f"temperature must be >= 0, got {temperature}")


def frame_iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Intersection over union per frame of boolean masks (..., H, W); two empty masks give 1."""
    inter = (pred & truth).sum((-2, -1)).float()
    union = (pred | truth).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


# ----------------------------------------------------------------------------- importance sampling
def importance_chunks(samples: int, chunk: int, draw) -> dict[str, torch.Tensor]:
    """Call draw(s) for chunks of at most `chunk` importance samples (bounding the memory of one
    call) and join its {name: (B, s)} results along the sample axis: {name: (B, samples)}."""
    parts: dict[str, list[torch.Tensor]] = {}
    for s0 in range(0, samples, chunk):
        for name, value in draw(min(chunk, samples - s0)).items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values, 1) for name, values in parts.items()}


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """Negative importance-weighted bound (Burda et al. 2016, eq. 8) from log weights (B, S):
    -log (1/S) sum_s w_s, computed stably."""
    return -(torch.logsumexp(log_w, 1) - math.log(log_w.shape[1]))


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """in -> hidden (SiLU) x (layers - 1) -> out."""
    dims = [in_dim] + [hidden] * (layers - 1)
    mods = []
    for a, b in zip(dims, dims[1:]):
        mods += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*mods, nn.Linear(dims[-1], out_dim))

"""Gradient estimators for a discrete latent code, Bernoulli latents, and NVIL's variance reduction.

`sample_code` returns the code the decoder sees; its gradient path *is* the estimator:

    gumbel          y = softmax((log pi + g) / tau), g ~ Gumbel(0, 1)    Jang, Gu & Poole 2017, eq. 2.
                    Pathwise gradient of a relaxed objective: biased for tau > 0, the bias vanishing
                    (and the variance growing) as tau -> 0.
    st-gumbel       forward: one_hot(argmax y); backward: the gradient of y      Jang et al. 2017, Sec. 2.2.
    st              forward: z ~ Cat(pi) one-hot; backward: the gradient of pi = E[z], i.e. the sample is
                    treated as the identity of its mean. The Straight-Through estimator of Bengio,
                    Leonard & Courville 2013 as Jang et al. 2017 (Sec. 3.1) state it and use it as
                    their "ST" baseline of Table 1. No temperature.
    score-function  z ~ Cat(pi) one-hot with no path gradient; the encoder learns from the likelihood
                    ratio (score function) E_q[l(x, z) grad log q(z | x)] (Williams 1992), with NVIL's
                    variance reduction (Mnih & Gregor 2014, "Variance reduction techniques"), see NVILBaseline.

Bernoulli latents are the K = 2 case, stored as two-class logits (log-odds, 0) so that the
categorical KL, one-hot evaluation and importance weights apply unchanged. Their relaxed sample
is the binary Concrete / Gumbel-sigmoid (Maddison, Mnih & Teh 2017, "binary Concrete"; Jang et
al. 2017 use the K = 2 Gumbel-Softmax): y = sigmoid((log-odds + L) / tau), L ~ Logistic(0, 1),
which has exactly the law of the first coordinate of eq. 2 with K = 2, because the difference of
two independent Gumbel(0, 1) variables is Logistic(0, 1).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import gumbel_softmax, log_softmax_classes, on_device, sample_one_hot, softmax_classes, uniform_open

ESTIMATORS = ("gumbel", "st-gumbel", "st", "score-function")
RELAXED = ("gumbel", "st-gumbel")          # the estimators that use the temperature


# ----------------------------------------------------------------------------- Bernoulli latents
def logistic_noise(shape, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Standard logistic noise L = log u - log(1 - u), float32, drawn on the generator's device
    (CPU by default: a seed gives the same numbers everywhere); u is kept inside (0, 1)."""
    u = uniform_open(shape, generator)
    return on_device(torch.log(u) - torch.log1p(-u), device)


def binary_concrete(log_odds: torch.Tensor, tau: float, hard: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Relaxed Bernoulli sample y = sigmoid((log-odds + L) / tau), same shape as log_odds (B, N).

    hard=True is the straight-through variant: the bit 1[y > 0.5] forward, the gradient of y backward.
    """
    if tau <= 0:
        raise ValueError(f"binary Concrete temperature must be > 0, got {tau}")
    noise = logistic_noise(log_odds.shape, generator, log_odds.device)
    y = torch.sigmoid((log_odds.float() + noise) / tau)
    if hard:
        y = (y > 0.5).to(y.dtype) - y.detach() + y
    return y.to(log_odds.dtype)


def bernoulli_logits(log_odds: torch.Tensor) -> torch.Tensor:
    """(..., N) log-odds of bit = 1 -> (..., N, 2) two-class logits (log-odds, 0); class 0 is bit 1."""
    return torch.stack([log_odds, torch.zeros_like(log_odds)], -1)


def bits_to_code(bits: torch.Tensor) -> torch.Tensor:
    """(..., N) bits (hard or relaxed) -> (..., N, 2) codes (bit, 1 - bit), matching bernoulli_logits."""
    return torch.stack([bits, 1 - bits], -1)


def _sample_bits(log_odds: torch.Tensor, estimator: str, tau: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """(B, N) log-odds -> (B, N) bits carrying the estimator's gradient path."""
    if estimator in RELAXED:
        return binary_concrete(log_odds, tau, hard=estimator == "st-gumbel", generator=generator)
    noise = logistic_noise(log_odds.shape, generator, log_odds.device)
    bits = (log_odds.detach().float() + noise > 0).to(log_odds.dtype)     # exact: P(bit = 1) = sigmoid
    if estimator == "st":
        p = torch.sigmoid(log_odds)
        return bits - p.detach() + p
    return bits


# ----------------------------------------------------------------------------- one entry point
def sample_code(logits: torch.Tensor, estimator: str, tau: float, generator: torch.Generator | None,
                bernoulli: bool = False) -> torch.Tensor:
    """(B, N, K) code logits -> (B, N, K) code for the decoder, with the estimator's gradient path.

    For Bernoulli latents, logits are bernoulli_logits (K = 2) and the code is bits_to_code(bits).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if bernoulli:
        return bits_to_code(_sample_bits(logits[..., 0] - logits[..., 1], estimator, tau, generator))
    if estimator in RELAXED:
        return gumbel_softmax(logits, tau, hard=estimator == "st-gumbel", generator=generator)
    one_hot = sample_one_hot(logits.detach(), generator).to(logits.dtype)   # (B, N, K), Gumbel-Max (eq. 1)
    if estimator == "st":
        p = softmax_classes(logits).to(logits.dtype)
        return one_hot - p.detach() + p
    return one_hot


def log_probs(logits: torch.Tensor, bernoulli: bool = False) -> torch.Tensor:
    """(..., N, K) logits -> log-probabilities, float32. Bernoulli codes (log-odds, 0) use log-sigmoid
    of the log-odds (the same numbers, without a softmax over an axis of length 2: faster on CPU)."""
    if bernoulli:
        log_odds = (logits[..., 0] - logits[..., 1]).float()
        return torch.stack([F.logsigmoid(log_odds), F.logsigmoid(-log_odds)], -1)
    return log_softmax_classes(logits)


def code_log_prob(code: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log q(z | x) of one-hot codes (B, N, K) under logits (B, N, K), summed over the N variables: (B,)."""
    return (code.float() * log_softmax_classes(logits)).sum((-2, -1))


def scale_gradient(x: torch.Tensor, scale) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by `scale` in the backward pass."""
    return x.detach() + (x - x.detach()) * scale


# ----------------------------------------------------------------------------- NVIL
class NVILBaseline(nn.Module):
    """NVIL's variance reduction for the score-function estimator (Mnih & Gregor 2014, the section
    "Variance reduction techniques": centring, input-dependent centring, variance normalisation).

    The gradient of E_q[l(x, z)] w.r.t. the encoder is E_q[(l(x, z) - b) grad log q(z|x)] for any
    b that does not depend on z (E_q[grad log q] = 0). NVIL uses b = c + C_psi(x):
      - centring: c, an exponential running mean of l (rate alpha = 0.8, as in the paper);
      - input-dependent centring: C_psi(x), an MLP with one tanh hidden layer (100 units in the
        paper) trained to minimise E[(l - c - C_psi(x))^2], the squared error of the centred signal;
      - variance normalisation: the encoder's gradient is divided by max(1, sqrt(v)), v a running
        estimate of the variance of l - c - C_psi(x) (scale(); the caller applies it).
    The running statistics used for a batch come from earlier batches only, so the advantage is
    independent of the batch's own samples and the estimator stays unbiased (up to the scale).
    """

    def __init__(self, in_dim: int, hidden: int = 100, alpha: float = 0.8, normalise: bool = True):
        super().__init__()
        self.alpha, self.normalise = alpha, normalise
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(()))                       # c
        self.register_buffer("var", torch.ones(()))                         # v
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def scale(self) -> torch.Tensor:
        """max(1, sqrt(v)): the divisor of the encoder's gradient (1 when normalisation is off)."""
        if not self.normalise:
            return torch.ones_like(self.var)
        return self.var.sqrt().clamp_min(1.0)

    def forward(self, x: torch.Tensor, signal: torch.Tensor):
        """x (B, ...) encoder input, signal (B,) learning signal l(x, z) ->
        (advantage l - c - C_psi(x) (B,) without gradient, the baseline's squared-error loss)."""
        signal = signal.detach().float()                                    # (B,)
        b = self.net(x.detach().flatten(1).float()).squeeze(-1)             # (B,)
        residual = signal - self.mean - b                                   # (B,)
        loss = residual.pow(2).mean()
        if self.training:
            self._update(signal, residual.detach())
        return residual.detach(), loss

    @torch.no_grad()
    def _update(self, signal: torch.Tensor, residual: torch.Tensor) -> None:
        """Exponential running mean of l and variance of l - c - C_psi(x); the first batch replaces
        the initial guesses (c = 0, v = 1) instead of being averaged with them."""
        a = self.alpha * (self.batches > 0).float()
        self.mean.mul_(a).add_((1 - a) * signal.mean())
        self.var.mul_(a).add_((1 - a) * residual.pow(2).mean())
        self.batches.add_(1)

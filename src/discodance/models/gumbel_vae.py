"""gumbel-vae: a VAE whose latent is N categorical variables of K classes.

Model (the report "Dance Generation Using Discrete Latent Variables"; estimator from Jang, Gu &
Poole 2017, "Categorical Reparameterization with Gumbel-Softmax"):

    q(z | x_t)      = prod_n Cat(z_n; softmax(enc(x_{t-c+1..t})_n))     conv encoder on the current frame(s)
    p(z)            = prod_n Cat(z_n; 1/K)  (or a learned Cat(pi_n))    prior
    p(x_{t+h} | z)  = prod_pixels Bernoulli(sigmoid(dec(z)))            conv decoder, the next frame

Training maximises the ELBO  E_q[log p(x_{t+h} | z)] - KL(q(z|x_t) || p(z))  (Jang et al. eq. 2
for the relaxed sample, Sec. 2.2 for straight-through). Because any q gives a lower bound on
log p(x), the bound stays valid when q sees the current frame and p decodes the next one; h = 0 is
the plain autoencoding VAE. Generation follows the report's chain: encode the current frame,
sample a code, decode the next frame, feed it back, repeat (frames 1, 2, ..., 16, ...).

Evaluation uses one-hot samples z ~ q (no relaxation): the negative ELBO and the importance-
weighted bound of Burda et al. 2016 (eq. 8) log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x).

Options (estimators.py holds the estimators and the Bernoulli helpers, mlp.py the flat nets):
    arch       conv (default) | mlp: 784-512-256-(latent)-256-512-784 for flat data such as MNIST
               (Jang et al. 2017, Sec. 4.3); mlp_hidden sets the hidden sizes.
    estimator  gumbel | st-gumbel | st (straight-through with the plain categorical sample) |
               score-function (likelihood ratio with NVIL's baseline, Mnih & Gregor 2014)
    latent     categorical (N variables of K classes) | bernoulli (N bits; K must be 2): codes are
               kept as two-class logits (log-odds, 0), so KL, evaluation and rollouts are shared.

With score-function, the learning signal is l(x, z) = log p(x | z): the KL term is analytic for
every estimator, so the score function only has to carry the reconstruction term (the same
objective and still unbiased; NVIL's full signal log p(x,z) - log q(z|x) would also estimate the
KL's gradient by sampling, which its exact gradient makes unnecessary). NVIL's
variance normalisation divides the whole encoder gradient (score term and KL alike, as in NVIL
where the signal carries both) by max(1, running std); forward() then returns two losses,
{"model": ..., "baseline": squared error of the centred signal}, one optimizer each.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import require
from .base import DanceModel, check_conv_settings
from .blocks import (ConvDecoder, ConvEncoder, check_rollout_options, feedback_frames, frame_iou, frame_log_likelihood,
                     importance_chunks, iwae_bound, kl_categorical, log_softmax_classes, sample_one_hot,
                     temperature_at)
from .estimators import ESTIMATORS, NVILBaseline, bernoulli_logits, log_probs, sample_code, scale_gradient
from .mlp import MLPDecoder, MLPEncoder



@dataclass
class GumbelVAEConfig:
    frame_size: tuple[int, int] = (64, 64)
    latents: int = 32             # N categorical variables
    classes: int = 16             # K classes each
    context: int = 2              # frames the encoder sees: the current one and context-1 before it (1 = the report)
    horizon: int = 1              # decode frame t+horizon (1 = next frame, the report's chain; 0 = autoencoder)
    estimator: str = "gumbel"     # gumbel (relaxed) | st-gumbel (straight-through Gumbel) | st | score-function
    tau0: float = 1.0             # temperature schedule tau = max(tau_min, tau0 * exp(-anneal_rate * step))
    tau_min: float = 0.5
    anneal_rate: float = 3e-4
    anneal_every: int = 100
    prior: str = "uniform"        # uniform | learned (a trainable Cat(pi_n) per variable)
    kl_weight: float = 1.0
    channels: tuple[int, ...] = (32, 64, 128, 256)
    hidden: int = 512
    arch: str = "conv"            # conv | mlp (flat data; the Gumbel-Softmax paper's VAE)
    mlp_hidden: tuple[int, ...] = (512, 256)   # arch=mlp: encoder hidden sizes, the decoder mirrors them
    latent: str = "categorical"   # categorical | bernoulli (latents bits; needs classes=2)
    baseline_hidden: int = 100    # score-function: tanh units of NVIL's input-dependent baseline
    nvil_alpha: float = 0.8       # score-function: rate of the running mean/variance of the signal
    nvil_normalise: bool = True   # score-function: divide the encoder gradient by max(1, running std)

    def validate(self) -> "GumbelVAEConfig":
        require(self.classes >= 2, f"classes (K) must be >= 2, got {self.classes}")
        require(self.latents >= 1, f"latents (N) must be >= 1, got {self.latents}")
        require(self.tau0 > 0 and self.tau_min > 0, f"temperatures must be > 0, got tau0={self.tau0}, tau_min={self.tau_min}")
        require(self.anneal_rate >= 0 and self.anneal_every >= 1, "anneal_rate must be >= 0 and anneal_every >= 1")
        require(self.context >= 1 and self.horizon >= 0, "context must be >= 1 and horizon >= 0")
        require(self.estimator in ESTIMATORS, f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        require(self.arch in ("conv", "mlp"), f"arch must be conv or mlp, got {self.arch!r}")
        require(self.latent in ("categorical", "bernoulli"), f"latent must be categorical or bernoulli, got {self.latent!r}")
        require(self.latent != "bernoulli" or self.classes == 2,
                f"latent=bernoulli needs classes=2 (two-class logits per bit), got classes={self.classes}")
        require(len(self.mlp_hidden) >= 1 and min(self.mlp_hidden) >= 1, f"mlp_hidden must be positive, got {self.mlp_hidden}")
        require(self.baseline_hidden >= 1, f"baseline_hidden must be >= 1, got {self.baseline_hidden}")
        require(0 <= self.nvil_alpha < 1, f"nvil_alpha must be in [0, 1), got {self.nvil_alpha}")
        require(self.prior in ("uniform", "learned"), f"prior must be uniform or learned, got {self.prior!r}")
        require(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        check_conv_settings(self.frame_size, self.channels)
        return self


class GumbelVAE(DanceModel):
    config_class = GumbelVAEConfig

    def __init__(self, config: GumbelVAEConfig):
        super().__init__(config.validate())
        c = config
        self.bernoulli = c.latent == "bernoulli"
        code_dim = c.latents if self.bernoulli else c.latents * c.classes   # a bit per Bernoulli variable
        if c.arch == "mlp":
            self.encoder = MLPEncoder(c.context, c.frame_size, code_dim, c.mlp_hidden)
            self.decoder = MLPDecoder(code_dim, c.frame_size, 1, c.mlp_hidden)
        else:
            self.encoder = ConvEncoder(c.context, c.frame_size, code_dim, c.channels, c.hidden)
            self.decoder = ConvDecoder(code_dim, c.frame_size, 1, c.channels, c.hidden)
        self.prior_logits = nn.Parameter(torch.zeros(c.latents, c.classes), requires_grad=c.prior == "learned")
        if c.estimator == "score-function":
            in_dim = c.context * c.frame_size[0] * c.frame_size[1]
            self.nvil = NVILBaseline(in_dim, c.baseline_hidden, c.nvil_alpha, c.nvil_normalise)

    # --------------------------------------------------------------------------- protocol
    @property
    def window(self) -> int:
        return self.config.context + self.config.horizon

    @property
    def seed_frames(self) -> int:
        return self.config.context

    def optimizer_groups(self):
        """One group; with score-function a second one, "baseline", for NVIL's baseline network."""
        baseline = {id(p) for p in self.nvil.parameters()} if hasattr(self, "nvil") else set()
        groups = {"model": [p for p in self.parameters() if p.requires_grad and id(p) not in baseline]}
        if baseline:
            groups["baseline"] = list(self.nvil.parameters())
        return groups

    def tau(self, step: int) -> float:
        c = self.config
        return temperature_at(step, c.tau0, c.tau_min, c.anneal_rate, c.anneal_every)

    # --------------------------------------------------------------------------- pieces
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, context, H, W) -> code logits (B, N, K); Bernoulli: (B, N, 2) = (log-odds, 0)."""
        if self.bernoulli:
            return bernoulli_logits(self.encoder(frames))                        # (B, N, 2)
        return self.encoder(frames).view(len(frames), self.config.latents, self.config.classes)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, K) one-hot or relaxed codes -> pixel logits (B, H, W); Bernoulli: the bits z[..., 0]."""
        return self.decoder(z[..., 0] if self.bernoulli else z.flatten(1))[:, 0]

    def split(self, batch: torch.Tensor):
        """A window (B, context + horizon, H, W) -> encoder input (B, C, H, W), target (B, H, W)."""
        c = self.config.context
        return batch[:, :c], batch[:, c - 1 + self.config.horizon]

    def log_likelihood(self, x_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per frame (B,), in float32 nats."""
        return frame_log_likelihood(x_logits, target)

    # --------------------------------------------------------------------------- training
    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        x, target = self.split(batch)
        logits = self.encode(x)                                                 # (B, N, K)
        score_function = self.config.estimator == "score-function"
        if score_function:  # NVIL's variance normalisation of the whole encoder gradient
            scale = self.nvil.scale()                                           # from earlier batches
            logits = scale_gradient(logits, 1.0 / scale)
        tau = self.tau(step)
        z = sample_code(logits, self.config.estimator, tau, generator, self.bernoulli)   # (B, N, K)
        ll = self.log_likelihood(self.decode(z), target)                        # (B,)
        log_q = log_probs(logits, self.bernoulli)                               # (B, N, K)
        log_p = log_probs(self.prior_logits, self.bernoulli)                    # (N, K)
        kl = (log_q.exp() * (log_q - log_p)).sum((-2, -1))                      # (B,), KL(q || p)
        pixels = target.shape[-1] * target.shape[-2]
        loss = (-ll + self.config.kl_weight * kl).mean() / pixels               # nats per pixel
        logs = self._train_logs(loss, -ll, kl, tau, log_q)
        if not score_function:
            return loss, logs
        advantage, baseline_loss = self.nvil(x, ll)                             # (B,), scalar
        log_qz = (z.float() * log_q).sum((-2, -1))                              # (B,) log q(z | x)
        loss = loss - (advantage * log_qz).mean() / pixels                      # E[(l - c - C(x)) grad log q]
        logs.update(baseline_mse=baseline_loss.item(), nvil_scale=float(scale), signal_mean=float(self.nvil.mean))
        return {"model": loss, "baseline": baseline_loss}, logs

    @torch.no_grad()
    def _train_logs(self, loss, rec, kl, tau, log_q) -> dict:
        perplexity = torch.exp(-(log_q.exp() * log_q).sum(-1)).mean()
        return {"loss": loss.item(), "rec_nats": rec.mean().item(), "kl_nats": kl.mean().item(),
                "tau": tau, "code_perplexity": perplexity.item()}

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
                 chunk: int = 64) -> dict[str, torch.Tensor]:
        """Per-frame negative ELBO and importance-weighted bound (nats), with one-hot samples."""
        x, target = self.split(batch)
        logits = self.encode(x).float()                                          # (B, N, K)
        log_q, log_p = log_softmax_classes(logits), log_softmax_classes(self.prior_logits)
        kl = kl_categorical(logits, self.prior_logits).sum(-1)                   # (B,)

        def draw(s: int) -> dict[str, torch.Tensor]:                            # each (B, s)
            z = sample_one_hot(logits.repeat_interleave(s, 0), generator)        # (B*s, N, K)
            x_logits = self.decode(z.to(batch.dtype))
            ll = self.log_likelihood(x_logits, target.repeat_interleave(s, 0)).view(-1, s)
            log_pz = (z * log_p).sum((-2, -1)).view(-1, s)
            log_qz = (z * log_q.repeat_interleave(s, 0)).sum((-2, -1)).view(-1, s)
            pred = (x_logits > 0).view(-1, s, *target.shape[-2:])
            return {"log_w": ll + log_pz - log_qz, "rec": -ll, "iou": frame_iou(pred, target[:, None] > 0.5)}

        d = importance_chunks(samples, chunk, draw)
        return {"nelbo": d["rec"].mean(1) + kl, "iwae": iwae_bound(d["log_w"]), "rec": d["rec"].mean(1), "kl": kl,
                "iou": d["iou"].mean(1)}

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary") -> torch.Tensor:
        """The report's chain from seed frames (B, context, H, W) -> (B, 1 + steps, H, W) in [0, 1].

        Each step encodes the last `context` frames, samples a code from q (temperature scales the
        code logits; 0 takes the most likely code), decodes the next frame and feeds it back as a
        binarized frame ("binary"), a Bernoulli sample of the pixels ("sample") or the raw
        probabilities ("probs").
        """
        check_rollout_options(temperature, feedback)
        frames = list(seed.unbind(1))
        out = [frames[-1]]
        for _ in range(steps):
            context = torch.stack(frames[-self.config.context:], 1)
            z = sample_one_hot(self.encode(context), generator, temperature).to(seed.dtype)
            probs = torch.sigmoid(self.decode(z).float())
            nxt = feedback_frames(probs, feedback, generator).to(seed.dtype)
            frames.append(nxt)
            out.append(nxt)
        return torch.stack(out, 1)

    @torch.no_grad()
    def sample_prior(self, num: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """Independent frames decoded from codes z ~ p(z): (num, H, W) probabilities."""
        logits = self.prior_logits.detach().expand(num, -1, -1)
        z = sample_one_hot(logits, generator, temperature).to(self.prior_logits.device)
        return torch.sigmoid(self.decode(z).float())

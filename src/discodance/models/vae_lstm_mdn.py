"""vae-lstm-mdn: DanceNet (jsn5/dancenet) done right — a Gaussian conv VAE per frame, and an LSTM with a
mixture density head over the next latent.

Model (VAE: Kingma & Welling 2014, eq. 10 with the Gaussian KL of Appendix B; MDN: Bishop 1994 in the
form of Graves 2013, Sec. 4.1, eqs. 20-26, diagonal Gaussians):

    q(z_t | x_t)          = N(mu(x_t), diag sigma^2(x_t))                conv encoder, one frame
    p(x_t | z_t)          = prod_pixels Bernoulli(sigmoid(dec(z_t)))     conv decoder
    p(z_t | z_<t)         = sum_m pi_m N(mu_m, diag sigma_m^2)           LSTM(z_<t) -> MDN head

Training (one loop, one optimizer): on a window x_1..x_T, sample z_t ~ q, then minimise
    VAE:  -log p(x_t | z_t) + kl_weight * KL(q(z_t | x_t) || N(0, I))          (shapes the encoder)
    MDN:  -log p(z_t | z_<t)   with z detached                                  (fits the latent dynamics)
Detaching keeps the MDN from pulling the encoder towards easy-to-predict, uninformative codes; it
makes the run the two DanceNet stages trained concurrently rather than one after the other
(mdn_start > 0 delays the MDN term: a VAE-only first stage inside the same run). The MDN sees the
z *samples* the decoder is trained on, so the model we roll out is one generative model, with the
sequential bound (per frame, over the window)
    log p(x_1..T) >= E_q[ sum_t log p(x_t|z_t) + log p_MDN(z_t|z_<t) - log q(z_t|x_t) ],
reported as 'nelbo' (the single-sample bound) and 'iwae' (Burda et al. 2016, eq. 8, over whole windows).
'nelbo_static' is the per-frame bound with the N(0, I) prior, i.e. the VAE alone.

DanceNet's bugs, and what this implementation does instead:
  1. Its LSTM saw one frame at a time (input reshaped to sequence length 1, a stateless model), so
     it was a feed-forward map z_t -> z_t+1 with no memory. Here the LSTM trains on windows of
     seq_len consecutive frames (backpropagation through time truncated at the window) and the
     rollout carries its (h, c) state from the seed frames through every generated frame.
  2. It trained the MDN on MinMax-scaled latents but fed unscaled (inverse-transformed) latents back
     into it at generation time. Here no scaler exists: the KL term keeps latents near unit scale,
     and exactly the same z (samples of q, or of the MDN) go into the LSTM in training and rollout.
  3. Its sampler built the covariance as diag(sigma) — sigma used as a variance — while its loss used
     sigma as a standard deviation, and its temperature multiplied sigma. Here sigma is a standard
     deviation everywhere and temperature tau scales the mixture logits by 1/tau and the variances by tau.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import require
from .base import DanceModel, check_conv_settings
from .blocks import (ConvDecoder, ConvEncoder, MDNHead, check_rollout_options, feedback_frames, frame_iou,
                     frame_log_likelihood, gaussian_log_prob, importance_chunks, iwae_bound, kl_gaussian,
                     mdn_log_prob, mdn_sample, reparameterize)


@dataclass
class VAELSTMMDNConfig:
    frame_size: tuple[int, int] = (64, 64)
    latent: int = 128             # Gaussian latent dimensions per frame (DanceNet: 128)
    lstm_layers: int = 3          # DanceNet: 3 x 512
    lstm_hidden: int = 512
    mixtures: int = 24            # Gaussians in the MDN head (DanceNet: 24)
    seq_len: int = 8              # frames per training window = truncated-BPTT length
    seed_len: int = 4             # real frames that warm up the LSTM state before a rollout
    kl_weight: float = 1.0
    mdn_weight: float = 1.0
    mdn_start: int = 0            # step at which the MDN term switches on (0 = joint from the start)
    min_log_sigma: float = -7.0   # lower bound of the MDN's log standard deviations
    channels: tuple[int, ...] = (32, 64, 128, 256)
    hidden: int = 512

    def validate(self) -> "VAELSTMMDNConfig":
        check_conv_settings(self.frame_size, self.channels)
        require(self.latent >= 1 and self.lstm_layers >= 1 and self.lstm_hidden >= 1 and self.mixtures >= 1,
                "latent, lstm_layers, lstm_hidden and mixtures must be >= 1")
        require(self.seq_len >= 2, f"seq_len must be >= 2 (the MDN predicts the next latent), got {self.seq_len}")
        require(1 <= self.seed_len, f"seed_len must be >= 1, got {self.seed_len}")
        require(self.kl_weight >= 0 and self.mdn_weight >= 0, "kl_weight and mdn_weight must be >= 0")
        require(self.mdn_start >= 0, f"mdn_start must be >= 0, got {self.mdn_start}")
        return self


class VAELSTMMDN(DanceModel):
    config_class = VAELSTMMDNConfig

    def __init__(self, config: VAELSTMMDNConfig):
        super().__init__(config.validate())
        c = config
        self.encoder = ConvEncoder(1, c.frame_size, 2 * c.latent, c.channels, c.hidden)
        self.decoder = ConvDecoder(c.latent, c.frame_size, 1, c.channels, c.hidden)
        self.lstm = nn.LSTM(c.latent, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.mdn = MDNHead(c.lstm_hidden, c.latent, c.mixtures, c.min_log_sigma)

    @property
    def window(self) -> int:
        return self.config.seq_len

    @property
    def seed_frames(self) -> int:
        return self.config.seed_len

    # --------------------------------------------------------------------------- pieces
    def encode(self, frames: torch.Tensor):
        """(..., H, W) frames -> mu, logvar (..., latent)."""
        lead = frames.shape[:-2]
        out = self.encoder(frames.reshape(-1, 1, *frames.shape[-2:]))           # (B*, 2D)
        mu, logvar = out.view(*lead, 2 * self.config.latent).chunk(2, -1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., latent) -> pixel logits (..., H, W)."""
        return self.decoder(z.reshape(-1, z.shape[-1]))[:, 0].view(*z.shape[:-1], *self.frame_size)

    def dynamics(self, z: torch.Tensor, state=None):
        """MDN parameters of p(z_t | z_<t) for every t of z (B, T, D): the LSTM reads a zero start
        vector then z_1..z_T-1, so output t predicts z_t. Returns (logit_pi, mu, log_sigma), state."""
        inputs = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)          # (B, T, D)
        h, state = self.lstm(inputs, state)                                      # (B, T, hidden)
        return self.mdn(h), state

    def step(self, z: torch.Tensor, state):
        """One LSTM step on z (B, D) from `state`: MDN parameters of the next latent, and the new state."""
        h, state = self.lstm(z[:, None], state)                                  # (B, 1, hidden)
        return self.mdn(h[:, 0]), state

    # --------------------------------------------------------------------------- training
    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        c = self.config
        mu, logvar = self.encode(batch)                                          # (B, T, D) each
        z = reparameterize(mu, logvar, generator)                                # (B, T, D)
        rec = -frame_log_likelihood(self.decode(z), batch)                       # (B, T)
        kl = kl_gaussian(mu, logvar)                                             # (B, T)
        mdn_nll = -mdn_log_prob(*self.dynamics(z.detach())[0], z.detach())       # (B, T)
        pixels = batch.shape[-1] * batch.shape[-2]
        mdn_w = c.mdn_weight if step >= c.mdn_start else 0.0
        loss = (rec + c.kl_weight * kl + mdn_w * mdn_nll).mean() / pixels       # nats per pixel
        with torch.no_grad():  # latent dimensions the encoder uses: mean KL above 0.01 nats
            kl_dims = 0.5 * (logvar.float().exp() + mu.float() ** 2 - 1 - logvar.float()).mean((0, 1))  # (D,)
        logs = {"loss": loss.item(), "rec_nats": rec.mean().item(), "kl_nats": kl.mean().item(),
                "mdn_nll_nats": mdn_nll.mean().item(), "active_dims": float((kl_dims > 0.01).sum())}
        return loss, logs

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
                 chunk: int = 16) -> dict[str, torch.Tensor]:
        """Per-frame sequential bounds over the window (nats), the static VAE bound, and the IoU of
        the last frame predicted by the MDN from the earlier ones."""
        B, T = batch.shape[:2]
        mu, logvar = self.encode(batch)                                          # (B, T, D)

        def draw(s: int) -> dict[str, torch.Tensor]:                            # each (B, s)
            m, lv, x = (t.repeat_interleave(s, 0) for t in (mu, logvar, batch))  # (B*s, T, ...)
            z = reparameterize(m, lv, generator)                                 # (B*s, T, D)
            ll = frame_log_likelihood(self.decode(z), x)                         # (B*s, T)
            params, _ = self.dynamics(z)
            log_p = mdn_log_prob(*params, z)                                     # (B*s, T)
            log_q = gaussian_log_prob(z, m, lv)
            z_last = mdn_sample(*(p[:, -1] for p in params), generator)          # (B*s, D) from z_<T
            pred = self.decode(z_last) > 0
            return {"log_w": (ll + log_p - log_q).sum(1).view(B, s), "rec": -ll.sum(1).view(B, s),
                    "cross": (log_q - log_p).sum(1).view(B, s), "iou": frame_iou(pred, x[:, -1] > 0.5).view(B, s)}

        d = importance_chunks(samples, chunk, draw)
        rec = d["rec"].mean(1) / T
        return {"nelbo": -d["log_w"].mean(1) / T, "iwae": iwae_bound(d["log_w"]) / T, "rec": rec,
                "kl": d["cross"].mean(1) / T, "nelbo_static": rec + kl_gaussian(mu, logvar).mean(1),
                "iou": d["iou"].mean(1)}

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary") -> torch.Tensor:
        """Seed frames (B, seed_len, H, W) -> (B, 1 + steps, H, W) in [0, 1].

        The seed frames are encoded once (z ~ q) and run through the LSTM, warming its state; then
        each step samples the next latent from the MDN (temperature tau), decodes it, and feeds the
        sampled latent (never a re-encoded frame) back with the carried LSTM state. `feedback` only
        chooses how the decoded frame is shown: thresholded, Bernoulli-sampled or as probabilities.
        """
        check_rollout_options(temperature, feedback)
        mu, logvar = self.encode(seed)                                           # (B, S, D)
        z_seed = reparameterize(mu, logvar, generator)
        params, state = self.dynamics(z_seed)                                    # state after z_<S
        params, state = self.step(z_seed[:, -1], state)                          # predicts z_S+1
        out = [seed[:, -1]]
        for _ in range(steps):
            z = mdn_sample(*params, generator, temperature).to(seed.dtype)       # (B, D)
            probs = torch.sigmoid(self.decode(z).float())
            out.append(feedback_frames(probs, feedback, generator).to(seed.dtype))
            params, state = self.step(z, state)
        return torch.stack(out, 1)

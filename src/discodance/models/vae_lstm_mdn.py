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

Stages (`stage`): DanceNet trained in two stages -- the VAE on single frames, then the LSTM-MDN on
the latents of the frozen encoder -- and that is also what fits a CPU budget: a joint step pushes
seq_len frames of every window through both conv nets, a stage-2 step only the LSTM.
    stage=joint   both losses on windows, in one run (above)
    stage=vae     the first stage alone: -log p(x|z) + kl_weight * KL on single frames (window 1);
                  such a run has no dynamics and only serves as a base_run
    stage=lstm    the second stage: base_run names a stage=vae (or joint) run, whose encoder and decoder
                  are loaded and frozen; each distinct frame is encoded once (code_cache.ContextCache)
                  and the LSTM-MDN trains on z ~ q (latents=sample) or on the means (latents=mean)
    (`discodance train` and `compare` train the first stage themselves when base_run is not given.)

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
from .code_cache import ContextCache
from .frame_vae import VAE_KEYS, base_config_of, read_frame_vae

STAGES = ("joint", "vae", "lstm")
DECODE_CHUNK = 64                             # latents decoded per call in a rollout


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
    stage: str = "lstm"           # lstm (DanceNet's second stage on base_run's VAE) | vae (first stage alone) | joint
    base_run: str = ""            # stage=lstm: the run folder of a trained stage=vae (or joint) run
    base_config: dict | None = None   # filled from base_run: its model config
    latents: str = "sample"       # stage=lstm: the LSTM-MDN learns z ~ q (sample) or the means (mean)

    def validate(self) -> "VAELSTMMDNConfig":
        check_conv_settings(self.frame_size, self.channels)
        require(self.latent >= 1 and self.lstm_layers >= 1 and self.lstm_hidden >= 1 and self.mixtures >= 1,
                "latent, lstm_layers, lstm_hidden and mixtures must be >= 1")
        require(self.seq_len >= 2, f"seq_len must be >= 2 (the MDN predicts the next latent), got {self.seq_len}")
        require(1 <= self.seed_len, f"seed_len must be >= 1, got {self.seed_len}")
        require(self.kl_weight >= 0 and self.mdn_weight >= 0, "kl_weight and mdn_weight must be >= 0")
        require(self.mdn_start >= 0, f"mdn_start must be >= 0, got {self.mdn_start}")
        require(self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        require(self.latents in ("sample", "mean"), f"latents must be sample or mean, got {self.latents!r}")
        if self.stage == "lstm":
            require(isinstance(self.base_config, dict),
                    "stage=lstm needs a trained first stage: --set base_run=RUN_FOLDER (a stage=vae run; discodance "
                    "train and compare train one first), or --set stage=joint")
            same = all(_same(self.base_config.get(k), getattr(self, k)) for k in (*VAE_KEYS, "frame_size"))
            require(same, "stage=lstm: latent, channels, hidden and frame size must be the base run's "
                          f"({', '.join(f'{k}={self.base_config.get(k)}' for k in VAE_KEYS)})")
        return self


def _same(a, b) -> bool:
    return list(a) == list(b) if isinstance(b, (list, tuple)) else a == b




class VAELSTMMDN(DanceModel):
    config_class = VAELSTMMDNConfig

    @classmethod
    def complete_config(cls, config: VAELSTMMDNConfig) -> VAELSTMMDNConfig:
        """stage=lstm: base_run -> its absolute path, its model config, and its VAE's settings."""
        if config.stage == "lstm" and config.base_config is None and config.base_run:
            config.base_run, config.base_config = base_config_of(config.base_run)
            for key in VAE_KEYS:
                value = config.base_config.get(key)
                setattr(config, key, tuple(value) if isinstance(value, list) else value)
        return config

    @classmethod
    def first_stage(cls, sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """stage=lstm without base_run: the model and --set values of the run to train first."""
        if sets.get("stage", cls.config_class.stage) != "lstm" or sets.get("base_run"):
            return None
        keep = ("channels", "hidden", "latent", "kl_weight")
        return "vae-lstm-mdn", {"stage": "vae", **{k: v for k, v in sets.items() if k in keep}}

    def __init__(self, config: VAELSTMMDNConfig):
        super().__init__(config.validate())
        c = config
        self.encoder = ConvEncoder(1, c.frame_size, 2 * c.latent, c.channels, c.hidden)
        self.decoder = ConvDecoder(c.latent, c.frame_size, 1, c.channels, c.hidden)
        self.lstm = nn.LSTM(c.latent, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.mdn = MDNHead(c.lstm_hidden, c.latent, c.mixtures, c.min_log_sigma)
        if c.stage == "lstm":
            self.encoder.requires_grad_(False)
            self.decoder.requires_grad_(False)
        self.latent_cache = ContextCache(1)   # stage=lstm: (mu, logvar) of each distinct frame; never saved

    def load_pretrained(self) -> None:
        """stage=lstm: the base run's encoder and decoder, frozen, when a new run starts."""
        if self.config.stage != "lstm":
            return
        state = read_frame_vae(self.config.base_run)["model"]
        vae = {k: v for k, v in state.items() if k.split(".")[0] in ("encoder", "decoder")}
        missing = [k for k in self.state_dict() if k.split(".")[0] in ("encoder", "decoder") and k not in vae]
        require(not missing, f"base_run {self.config.base_run} lacks the VAE weights {missing[:3]}")
        self.load_state_dict({**self.state_dict(), **vae})

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.latent_cache.clear()   # cached latents belong to the encoder weights being replaced
        return super().load_state_dict(state_dict, strict, assign)

    @property
    def window(self) -> int:
        return 1 if self.config.stage == "vae" else self.config.seq_len

    def optimizer_groups(self):
        parts = {"joint": (self,), "vae": (self.encoder, self.decoder), "lstm": (self.lstm, self.mdn)}
        return {"model": [p for m in parts[self.config.stage] for p in m.parameters() if p.requires_grad]}

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
    @torch.no_grad()
    def cached_latents(self, frames: torch.Tensor):
        """stage=lstm: mu, logvar (B, T, D) of frames (B, T, H, W), each distinct frame encoded once."""
        rows = self.latent_cache.lookup(frames, lambda ctx: self.encoder(ctx).float())   # (B, T, 2D)
        return rows.to(frames.dtype).chunk(2, -1)

    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        if self.config.stage == "lstm":
            return self._forward_dynamics(batch, generator)
        c = self.config
        mu, logvar = self.encode(batch)                                          # (B, T, D) each
        z = reparameterize(mu, logvar, generator)                                # (B, T, D)
        rec = -frame_log_likelihood(self.decode(z), batch)                       # (B, T)
        kl = kl_gaussian(mu, logvar)                                             # (B, T)
        if c.stage == "vae":                                                     # no dynamics to fit
            mdn_nll = torch.zeros_like(rec)
        else:
            mdn_nll = -mdn_log_prob(*self.dynamics(z.detach())[0], z.detach())   # (B, T)
        pixels = batch.shape[-1] * batch.shape[-2]
        mdn_w = c.mdn_weight if step >= c.mdn_start else 0.0
        loss = (rec + c.kl_weight * kl + mdn_w * mdn_nll).mean() / pixels       # nats per pixel
        with torch.no_grad():  # latent dimensions the encoder uses: mean KL above 0.01 nats
            kl_dims = 0.5 * (logvar.float().exp() + mu.float() ** 2 - 1 - logvar.float()).mean((0, 1))  # (D,)
        logs = {"loss": loss.item(), "rec_nats": rec.mean().item(), "kl_nats": kl.mean().item(),
                "mdn_nll_nats": mdn_nll.mean().item(), "active_dims": float((kl_dims > 0.01).sum())}
        return loss, logs

    def _forward_dynamics(self, batch: torch.Tensor, generator):
        """Stage 2: the LSTM-MDN's negative log-likelihood of the frozen encoder's latents."""
        mu, logvar = self.cached_latents(batch)                                  # (B, T, D) each
        z = reparameterize(mu, logvar, generator) if self.config.latents == "sample" else mu
        mdn_nll = -mdn_log_prob(*self.dynamics(z)[0], z)                         # (B, T)
        loss = mdn_nll.mean() / (batch.shape[-1] * batch.shape[-2])              # nats per pixel, as joint
        return loss, {"loss": loss.item(), "mdn_nll_nats": mdn_nll.mean().item()}

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
                 chunk: int = 16) -> dict[str, torch.Tensor]:
        """Per-frame sequential bounds over the window (nats), the static VAE bound, and the IoU of
        the last frame predicted by the MDN from the earlier ones. stage=vae: the per-frame bounds
        with the N(0, I) prior, and the IoU of the reconstruction."""
        B, T = batch.shape[:2]
        mu, logvar = self.encode(batch)                                          # (B, T, D)
        if self.config.stage == "vae":
            return self._evaluate_static(batch, mu, logvar, samples, generator, chunk)

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

    def _evaluate_static(self, batch, mu, logvar, samples: int, generator, chunk: int) -> dict[str, torch.Tensor]:
        B, T = batch.shape[:2]
        zeros = torch.zeros_like(mu)

        def draw(s: int) -> dict[str, torch.Tensor]:                            # each (B, s)
            m, lv, x = (t.repeat_interleave(s, 0) for t in (mu, logvar, batch))  # (B*s, T, ...)
            z = reparameterize(m, lv, generator)
            logits = self.decode(z)
            ll = frame_log_likelihood(logits, x)                                 # (B*s, T)
            log_w = ll + gaussian_log_prob(z, zeros.repeat_interleave(s, 0), zeros.repeat_interleave(s, 0)) \
                - gaussian_log_prob(z, m, lv)
            return {"log_w": log_w.sum(1).view(B, s), "rec": -ll.sum(1).view(B, s),
                    "iou": frame_iou(logits > 0, x > 0.5).mean(-1).view(B, s)}     # reconstructions

        d = importance_chunks(samples, chunk, draw)
        rec, kl = d["rec"].mean(1) / T, kl_gaussian(mu, logvar).mean(1)
        return {"nelbo": rec + kl, "iwae": iwae_bound(d["log_w"]) / T, "rec": rec, "kl": kl,
                "nelbo_static": rec + kl, "iou": d["iou"].mean(1)}

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
        require(self.config.stage != "vae", "this is a stage=vae run (DanceNet's first stage): it has no "
                "dynamics to roll out; train the second stage on it: --set stage=lstm --set base_run=RUN")
        mu, logvar = self.encode(seed)                                           # (B, S, D)
        z_seed = reparameterize(mu, logvar, generator)
        params, state = self.dynamics(z_seed)                                    # state after z_<S
        params, state = self.step(z_seed[:, -1], state)                          # predicts z_S+1
        latents = []
        for _ in range(steps):
            z = mdn_sample(*params, generator, temperature)                      # (B, D)
            latents.append(z)
            params, state = self.step(z, state)
        B = len(seed)
        flat = torch.stack(latents, 1).flatten(0, 1) if latents else mu.new_zeros(0, self.config.latent)
        frames = [feedback_frames(torch.sigmoid(self.decode(flat[i:i + DECODE_CHUNK]).float()), feedback, generator)
                  for i in range(0, len(flat), DECODE_CHUNK)]                     # decoded in batches over time
        out = torch.cat(frames).view(B, steps, *self.frame_size) if frames else seed[:, :0]
        return torch.cat([seed[:, -1:], out.to(seed.dtype)], 1)

"""lstm-ae: the composite LSTM autoencoder of Srivastava, Mansimov & Salakhutdinov, "Unsupervised Learning
of Video Representations using LSTMs", ICML 2015 (Sec. 2.2: the autoencoder, Sec. 2.3: the future
predictor, Sec. 2.5: the composite model that does both from one encoding).

    encoder LSTM reads phi(x_1) .. phi(x_I)                       phi: conv encoder per frame
    its final state (h, c) is copied into two decoder LSTMs:
      reconstruction decoder -> x_I, x_I-1, .., x_1               (input in reverse order, Sec. 2.2)
      future decoder         -> x_I+1, .., x_I+F                  (Sec. 2.3)
    every decoder output -> conv decoder -> Bernoulli pixel probabilities

The loss is the pixel cross-entropy of both targets (the paper's choice for binary frames), per frame,
i.e. the exact negative log-likelihood of the model's independent Bernoulli outputs. The decoders are
unconditioned (Sec. 2.4 reports both variants work similarly; unconditioned ones have no
teacher-forcing gap between training and rollout); as their input they read a learned vector per
output position instead of zeros. Both decoders share one conv frame decoder.

There is no latent variable, so there is no ELBO: evaluate() reports the exact conditional
negative log-likelihood of the future frames given the input window ('nll', nats per frame, and
'nll_next' for the first future frame alone) and the IoU of the first predicted frame.

Rollout: repeated future prediction — encode the last I frames (real seed frames at first, then the
model's own fed-back frames), predict the next F frames, append them, repeat.

Two stages (`--set base_run=RUN`, a vae-lstm-mdn stage=vae run, frame_vae.py; or `two_stage=true`,
with which `compare` trains that first stage itself): the model then
works on the frozen per-frame VAE's latents instead of pixels. The encoder LSTM reads z ~ q of the
input frames; both decoders end in one mixture density head (Bishop 1994) over latents, so the
loss is the mixture's negative log-likelihood of the real latents (reconstruction reversed, as
above), and the future decoder is conditioned (Sec. 2.4): it reads the previous latent, the real
one in training and its own sample in a rollout. Why: a deterministic future prediction is the
mean of the possible futures, which in pixels is a blurred standing pose and rolled out freezes;
a sampled mixture keeps moving, and a step costs the LSTMs alone, not a conv net per frame.
Frames are decoded by the frozen decoder. evaluate() then reports 'latent_nll' (nats per latent
vector) instead of the pixel 'nll', and the IoU of the frame decoded from the likeliest first
predicted latent.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import require
from .base import DanceModel, check_conv_settings
from .blocks import (ConvDecoder, ConvEncoder, MDNHead, check_rollout_options, feedback_frames, frame_iou,
                     frame_log_likelihood, mdn_log_prob, mdn_sample, reparameterize)
from .frame_vae import FrozenFrameVAE, check_two_stage, complete_two_stage, latent_first_stage


@dataclass
class LSTMAEConfig:
    frame_size: tuple[int, int] = (64, 64)
    input_frames: int = 4         # I: frames the encoder reads (= rollout seed frames)
    future_frames: int = 4        # F: frames the future decoder predicts per pass
    features: int = 256           # conv encoding of one frame
    lstm_hidden: int = 512
    lstm_layers: int = 2
    query: int = 32               # size of the learned per-position decoder inputs
    rec_weight: float = 1.0       # weight of the reconstruction branch (0 = future predictor only)
    channels: tuple[int, ...] = (32, 64, 128, 256)
    hidden: int = 512
    base_run: str = ""            # a vae-lstm-mdn stage=vae run: model its frozen latents (two stages)
    base_config: dict | None = None   # filled from base_run: its model config
    mixtures: int = 8             # two stages: Gaussians in the mixture over each predicted latent
    two_stage: bool = True        # on a first stage's latents (base_run; train and compare train the base first);
                                  # false = end to end through conv nets on frames

    def validate(self) -> "LSTMAEConfig":
        check_conv_settings(self.frame_size, self.channels)
        require(self.input_frames >= 1 and self.future_frames >= 1, "input_frames and future_frames must be >= 1")
        require(min(self.features, self.lstm_hidden, self.lstm_layers, self.query, self.hidden) >= 1,
                "features, lstm_hidden, lstm_layers, query and hidden must be >= 1")
        require(self.rec_weight >= 0, f"rec_weight must be >= 0, got {self.rec_weight}")
        check_two_stage(self)
        return self


class LSTMAE(DanceModel):
    config_class = LSTMAEConfig

    @classmethod
    def complete_config(cls, config: LSTMAEConfig) -> LSTMAEConfig:
        return complete_two_stage(config)

    @classmethod
    def first_stage(cls, sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        return latent_first_stage(sets)

    def __init__(self, config: LSTMAEConfig):
        super().__init__(config.validate())
        c = config
        self.two_stage = c.base_config is not None
        if self.two_stage:
            self.vae = FrozenFrameVAE(c.base_config)
            inputs, future_inputs = self.vae.latent, self.vae.latent             # the decoder reads the previous latent
            self.head = MDNHead(c.lstm_hidden, self.vae.latent, c.mixtures)
        else:
            self.frame_encoder = ConvEncoder(1, c.frame_size, c.features, c.channels, c.hidden)
            self.frame_decoder = ConvDecoder(c.lstm_hidden, c.frame_size, 1, c.channels, c.hidden)
            inputs, future_inputs = c.features, c.query
            self.future_queries = nn.Parameter(0.1 * torch.randn(c.future_frames, c.query))
        self.encoder = nn.LSTM(inputs, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.rec_decoder = nn.LSTM(c.query, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.future_decoder = nn.LSTM(future_inputs, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.rec_queries = nn.Parameter(0.1 * torch.randn(c.input_frames, c.query))

    def load_pretrained(self) -> None:
        """Two stages: the base run's VAE, frozen, when a new run starts."""
        if self.two_stage:
            self.vae.load_run(self.config.base_run)

    @property
    def window(self) -> int:
        return self.config.input_frames + self.config.future_frames

    @property
    def seed_frames(self) -> int:
        return self.config.input_frames

    # --------------------------------------------------------------------------- pieces
    def encode(self, frames: torch.Tensor):
        """(B, I, H, W) -> the encoder LSTM's final state (h, c), each (layers, B, hidden)."""
        B, T = frames.shape[:2]
        feats = self.frame_encoder(frames.reshape(B * T, 1, *frames.shape[-2:])).view(B, T, -1)  # (B, I, Fe)
        _, state = self.encoder(feats)
        return state

    def decode(self, lstm: nn.LSTM, queries: torch.Tensor, state) -> torch.Tensor:
        """Unroll a decoder LSTM from `state` over its learned inputs -> pixel logits (B, L, H, W)."""
        B = state[0].shape[1]
        out, _ = lstm(queries.expand(B, -1, -1), state)                          # (B, L, hidden)
        return self.frame_decoder(out.reshape(-1, out.shape[-1]))[:, 0].view(B, -1, *self.frame_size)

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """Future pixel logits (B, F, H, W) from input frames (B, I, H, W)."""
        return self.decode(self.future_decoder, self.future_queries, self.encode(inputs))

    # --------------------------------------------------------------------------- training
    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        if self.two_stage:
            return self._forward_latents(batch, generator)
        I = self.config.input_frames
        inputs, future = batch[:, :I], batch[:, I:]
        state = self.encode(inputs)
        rec = -frame_log_likelihood(self.decode(self.rec_decoder, self.rec_queries, state),
                                    inputs.flip(1)).mean(1)                      # (B,) per frame
        fut = -frame_log_likelihood(self.decode(self.future_decoder, self.future_queries, state),
                                    future).mean(1)                              # (B,)
        pixels = batch.shape[-1] * batch.shape[-2]
        loss = (self.config.rec_weight * rec + fut).mean() / pixels              # nats per pixel
        return loss, {"loss": loss.item(), "rec_nats": rec.mean().item(), "future_nats": fut.mean().item()}

    def latent_nll(self, z: torch.Tensor):
        """Mixture NLLs (nats per latent) of latents z (B, I + F, D): reversed inputs, and the future
        given the inputs with the previous real latent as each future step's input."""
        I = self.config.input_frames
        _, state = self.encoder(z[:, :I])
        rec_h, _ = self.rec_decoder(self.rec_queries.expand(len(z), -1, -1), state)   # (B, I, hidden)
        fut_h, _ = self.future_decoder(z[:, I - 1:-1], state)                   # (B, F, hidden)
        rec = -mdn_log_prob(*self.head(rec_h), z[:, :I].flip(1))                 # (B, I)
        return rec, -mdn_log_prob(*self.head(fut_h), z[:, I:])                   # (B, F)

    def _forward_latents(self, batch: torch.Tensor, generator):
        mu, logvar = self.vae.latents(batch)                                     # (B, I + F, D) each
        rec, fut = self.latent_nll(reparameterize(mu, logvar, generator))
        loss = (self.config.rec_weight * rec.mean(1) + fut.mean(1)).mean() / (batch.shape[-1] * batch.shape[-2])
        return loss, {"loss": loss.item(), "rec_nats": rec.mean().item(), "future_nats": fut.mean().item()}

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
        """Exact conditional NLL of the future frames (nats per frame), of the first one, the input
        reconstruction NLL, and the IoU of the first predicted frame. Deterministic: samples unused.
        Two stages: the latents' mixture NLLs, over `samples` draws of z ~ q, and the IoU of the
        frame decoded from the likeliest first predicted latent."""
        I = self.config.input_frames
        if self.two_stage:
            return self._evaluate_latents(batch, samples, generator)
        inputs, future = batch[:, :I], batch[:, I:]
        state = self.encode(inputs)
        fut_logits = self.decode(self.future_decoder, self.future_queries, state)   # (B, F, H, W)
        nll = -frame_log_likelihood(fut_logits, future)                          # (B, F)
        rec = -frame_log_likelihood(self.decode(self.rec_decoder, self.rec_queries, state), inputs.flip(1))
        iou = frame_iou(fut_logits[:, 0] > 0, future[:, 0] > 0.5)
        return {"nll": nll.mean(1), "nll_next": nll[:, 0], "rec": rec.mean(1), "iou": iou}

    def _evaluate_latents(self, batch: torch.Tensor, samples: int, generator) -> dict[str, torch.Tensor]:
        I = self.config.input_frames
        mu, logvar = self.vae.encoder(batch.flatten(0, 1)[:, None]).float().view(*batch.shape[:2], -1).chunk(2, -1)
        draws = [self.latent_nll(reparameterize(mu, logvar, generator)) for _ in range(max(1, samples))]
        rec = torch.stack([r.mean(1) for r, _ in draws]).mean(0)
        fut = torch.stack([f for _, f in draws]).mean(0)                         # (B, F)
        _, state = self.encoder(mu[:, :I])
        h, _ = self.future_decoder(mu[:, I - 1:I], state)                        # the first future step
        first = mdn_sample(*self.head(h[:, 0]), None, temperature=0.0)           # (B, D) likeliest mean
        iou = frame_iou(self.vae.decode(first) > 0, batch[:, I] > 0.5)
        return {"latent_nll": fut.mean(1), "latent_nll_next": fut[:, 0], "rec": rec, "iou": iou}

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary") -> torch.Tensor:
        """Seed frames (B, input_frames, H, W) -> (B, 1 + steps, H, W) in [0, 1] by repeated future
        prediction. The model is deterministic: randomness enters only through feedback="sample";
        temperature is accepted for the common interface and has no effect."""
        check_rollout_options(temperature, feedback)
        if self.two_stage:
            return self._rollout_latents(seed, steps, generator, temperature, feedback)
        frames = list(seed.unbind(1))
        out = [frames[-1]]
        I = self.config.input_frames
        while len(out) < steps + 1:
            probs = torch.sigmoid(self.predict(torch.stack(frames[-I:], 1)).float())   # (B, F, H, W)
            for x in feedback_frames(probs, feedback, generator).to(seed.dtype).unbind(1):
                frames.append(x)
                out.append(x)
        return torch.stack(out[:steps + 1], 1)

    def _rollout_latents(self, seed, steps: int, generator, temperature: float, feedback: str) -> torch.Tensor:
        """Two stages: sample future latents pass by pass (temperature scales the mixture as in
        vae-lstm-mdn), feed them back as latents, decode all frames at the end in batches."""
        c = self.config
        mu, logvar = self.vae.latents(seed)
        z = list(reparameterize(mu, logvar, generator).unbind(1))                # seed latents, each (B, D)
        new = []
        while len(new) < steps:
            _, state = self.encoder(torch.stack(z[-c.input_frames:], 1))
            prev = z[-1]
            for _ in range(c.future_frames):
                h, state = self.future_decoder(prev[:, None], state)
                prev = mdn_sample(*self.head(h[:, 0]), generator, temperature).to(seed.dtype)
                z.append(prev)
                new.append(prev)
        z = torch.stack(new[:steps], 1) if steps else mu.new_zeros(len(seed), 0, self.vae.latent)
        return torch.cat([seed[:, -1:], self.vae.decode_frames(z, feedback, generator).to(seed.dtype)], 1)

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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import require
from .base import DanceModel, check_conv_settings
from .blocks import (ConvDecoder, ConvEncoder, check_rollout_options, feedback_frames, frame_iou,
                     frame_log_likelihood)


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

    def validate(self) -> "LSTMAEConfig":
        check_conv_settings(self.frame_size, self.channels)
        require(self.input_frames >= 1 and self.future_frames >= 1, "input_frames and future_frames must be >= 1")
        require(min(self.features, self.lstm_hidden, self.lstm_layers, self.query, self.hidden) >= 1,
                "features, lstm_hidden, lstm_layers, query and hidden must be >= 1")
        require(self.rec_weight >= 0, f"rec_weight must be >= 0, got {self.rec_weight}")
        return self


class LSTMAE(DanceModel):
    config_class = LSTMAEConfig

    def __init__(self, config: LSTMAEConfig):
        super().__init__(config.validate())
        c = config
        self.frame_encoder = ConvEncoder(1, c.frame_size, c.features, c.channels, c.hidden)
        self.encoder = nn.LSTM(c.features, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.rec_decoder = nn.LSTM(c.query, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.future_decoder = nn.LSTM(c.query, c.lstm_hidden, c.lstm_layers, batch_first=True)
        self.rec_queries = nn.Parameter(0.1 * torch.randn(c.input_frames, c.query))
        self.future_queries = nn.Parameter(0.1 * torch.randn(c.future_frames, c.query))
        self.frame_decoder = ConvDecoder(c.lstm_hidden, c.frame_size, 1, c.channels, c.hidden)

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

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None
                 ) -> dict[str, torch.Tensor]:
        """Exact conditional NLL of the future frames (nats per frame), of the first one, the input
        reconstruction NLL, and the IoU of the first predicted frame. Deterministic: samples unused."""
        I = self.config.input_frames
        inputs, future = batch[:, :I], batch[:, I:]
        state = self.encode(inputs)
        fut_logits = self.decode(self.future_decoder, self.future_queries, state)   # (B, F, H, W)
        nll = -frame_log_likelihood(fut_logits, future)                          # (B, F)
        rec = -frame_log_likelihood(self.decode(self.rec_decoder, self.rec_queries, state), inputs.flip(1))
        iou = frame_iou(fut_logits[:, 0] > 0, future[:, 0] > 0.5)
        return {"nll": nll.mean(1), "nll_next": nll[:, 0], "rec": rec.mean(1), "iou": iou}

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary") -> torch.Tensor:
        """Seed frames (B, input_frames, H, W) -> (B, 1 + steps, H, W) in [0, 1] by repeated future
        prediction. The model is deterministic: randomness enters only through feedback="sample";
        temperature is accepted for the common interface and has no effect."""
        check_rollout_options(temperature, feedback)
        frames = list(seed.unbind(1))
        out = [frames[-1]]
        I = self.config.input_frames
        while len(out) < steps + 1:
            probs = torch.sigmoid(self.predict(torch.stack(frames[-I:], 1)).float())   # (B, F, H, W)
            for x in feedback_frames(probs, feedback, generator).to(seed.dtype).unbind(1):
                frames.append(x)
                out.append(x)
        return torch.stack(out[:steps + 1], 1)

"""The settings of `code-prior` (models/code_prior.py) as one documented, validated dataclass:
what the prior learns from (base run, codes), its architecture, training and rollout sampling.
docs/code-prior.md explains each setting and the measurements behind its default."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import from_dict
from ..errors import require
from .gumbel_vae import GumbelVAEConfig

CODES = ("smooth", "argmax", "sample")
ARCHS = ("transformer", "mlp")
# first stages (first_stage): the gumbel-vae as the chain uses it, or one that autoencodes single frames
BASES = {"next-frame": {}, "autoencoder": {"context": "1", "horizon": "0"}}


@dataclass
class CodePriorConfig:
    frame_size: tuple[int, int] = (64, 64)
    base_run: str = ""                 # run folder (or checkpoint) of a trained gumbel-vae
    base_config: dict | None = None    # that run's model config: filled in from base_run, saved with this run
    base: str = "next-frame"           # without base_run, the first stage to train: next-frame | autoencoder
    arch: str = "transformer"          # transformer | mlp
    codes: str = "smooth"              # the codes of real frames: smooth | argmax | sample (see read_codes)
    switch_cost: float = 0.5           # codes=smooth: nats a variable pays for changing class between frames (0.5 beat 1 with blend: docs/code-prior.md)
    corrupt: float = 0.1               # share of input codes replaced by random classes in training
    self_feed: float = 0.0             # transformer: share of input steps replaced by the prior's own samples in training
    temperature: float = 1.0           # rollout: the prior's sampling temperature; a caller's temperature multiplies it
    top_k: int = 0                     # rollout: sample among the k likeliest classes per variable (0 = all)
    top_p: float = 1.0                 # rollout: ... and among the smallest set of probability >= top_p
    deblip: bool = True                # rollout: a class a variable takes for one step only (A, B, A) becomes A
    blend: int = 1                     # rollout: decode each frame from its code mixed with +-blend neighbours' (blend_codes)
    stay: float = 0.0                  # rollout (transformer): nats added to each variable's log-probability of keeping its class (0.5 before the mixture)
    decode_dtype: str = "bfloat16"     # rollout decoding on CPU: bfloat16 (autocast; only where the CPU has bfloat16 kernels, else float32) | float32
    fast_channels: int = 8             # maps of the distilled last decoder block rollouts decode with (fast_decoder.py; conv bases); 0 = none
    distil_frames: int = 4             # frames per training step that block is distilled on (4 converged in a 500-step pilot; each costs a teacher decode)
    decoder: str = "fast"              # rollout: fast (the distilled block, when the run has one) | base (the base VAE's own decoder)
    # arch=transformer
    context: int = 64                  # codes the transformer attends to (its training windows are context + 1)
    mixture: int = 8                   # components of the next code's distribution (1: its N variables independent given the past; docs/code-prior.md)
    slide: int = 0                     # rollout: codes the full context window moves at a time (0: context // 2)
    width: int = 64                    # 64 beat 128 at equal budget on both datasets (docs/code-prior.md)
    blocks: int = 4
    heads: int = 4
    dropout: float = 0.0
    prompt: int = 7                    # seed codes encoded from real frames before sampling
    # arch=mlp
    order: int = 2                     # k: previous codes the MLP conditions on
    seq_len: int = 8                   # code positions per training window
    hidden: int = 512
    layers: int = 2                    # MLP layers

    def validate(self) -> "CodePriorConfig":
        require(self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        require(self.base in BASES, f"base must be one of {', '.join(BASES)}, got {self.base!r}")
        require(self.order >= 1, f"order must be >= 1, got {self.order}")
        require(self.seq_len > self.order, f"seq_len ({self.seq_len}) must exceed order ({self.order})")
        require(self.hidden >= 1 and self.layers >= 1, "hidden and layers must be >= 1")
        require(self.codes in CODES, f"codes must be one of {', '.join(CODES)}, got {self.codes!r}")
        require(0 <= self.corrupt < 1, f"corrupt must be in [0, 1), got {self.corrupt}")
        require(0 <= self.self_feed < 1, f"self_feed must be in [0, 1), got {self.self_feed}")
        require(self.switch_cost >= 0, f"switch_cost must be >= 0, got {self.switch_cost}")
        require(self.decode_dtype in ("float32", "bfloat16"), f"decode_dtype must be float32 or bfloat16, got {self.decode_dtype!r}")
        require(self.fast_channels >= 0 and self.distil_frames >= 1,
                f"fast_channels must be >= 0 and distil_frames >= 1, got {self.fast_channels}, {self.distil_frames}")
        require(self.decoder in ("fast", "base"), f"decoder must be fast or base, got {self.decoder!r}")
        require(0 <= self.blend <= 32, f"blend must be in 0..32, got {self.blend}")
        require(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        require(math.isfinite(self.stay) and self.stay >= 0, f"stay must be a finite number >= 0, got {self.stay}")
        require(self.top_k >= 0 and 0 < self.top_p <= 1, f"top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")
        require(self.context >= 2 and self.blocks >= 1 and self.prompt >= 1, "context >= 2, blocks >= 1, prompt >= 1")
        require(self.slide < self.context, f"slide ({self.slide}) must be below context ({self.context}); 0 = context // 2")
        require(self.heads >= 1 and self.width % self.heads == 0, f"width ({self.width}) must be a multiple of heads ({self.heads})")
        require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        require(1 <= self.mixture <= 256, f"mixture must be in 1..256, got {self.mixture}")
        require(self.base_config is not None, "code-prior needs a trained gumbel-vae: --set base_run=RUN_FOLDER")
        require(isinstance(self.base_config, dict), f"base_config must be a gumbel-vae config, got {self.base_config!r}")
        base = from_dict(GumbelVAEConfig, self.base_config).validate()
        require(base.latent == "categorical", "code-prior needs a gumbel-vae with latent=categorical")
        require(tuple(base.frame_size) == tuple(self.frame_size),
                f"the base gumbel-vae was trained on {list(base.frame_size)} frames, this data has {list(self.frame_size)}")
        return self

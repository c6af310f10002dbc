"""code-prior: a learned prior over the discrete codes of a trained gumbel-vae, so that generation
samples codes and decodes them without re-encoding frames.

Model: the frozen gumbel-vae supplies q(z_t | x_t-c+1..t) (N categorical variables of K classes, Jang
et al. 2017) and p(x_t+h | z_t); this model adds an autoregressive prior over its codes,

    arch=transformer (default)  p(z_t | z_<t)      a causal transformer over the last `context` codes
                                                   (code_transformer.py; Bailando / T2M-GPT's second stage)
    arch=mlp                    p(z_t | z_t-k..t-1) an MLP on the last k = `order` codes (a k-th order Markov chain)

where the transformer's next code is a mixture of `mixture` components, in each of which the N
variables of step t are independent (the MLP's: independent given the past, as in the VAE's
posterior; code_transformer.py says why a mixture: variables that switch together). It is trained
on code windows of real frames, with the cross-entropy of the codes of q under the prior, the
prior's part of the sequential bound

    log p(x_{1+h..T+h}) >= E_q[ sum_t log p(x_t+h | z_t) + log p(z_t | z_<t) - log q(z_t | x_t) ]

(Jensen's inequality holds for any q, including one that reads frames the decoder does not model;
the first codes of a window, which have no history, use the VAE's own prior). Which codes:

    codes=smooth (default)  per variable, the sequence maximising sum_t log q(z_t) - switch_cost * [z_t != z_t-1]
                            (Viterbi, smooth_codes): a pose keeps its code while it barely moves
    codes=argmax            q's most likely code of each frame on its own
    codes=sample            samples of q as inputs, q's probabilities as targets (soft cross-entropy)

Why smooth: the base VAE's posteriors are broad (about 1.9 nats of entropy per variable of 16
classes on the built-in dancer), so frame-by-frame argmax codes flip fine-detail variables back
and forth while the pose barely moves, and decoding them flickers at twice the real rate even
with a perfect prior (samples of q: six times); smoothed codes decode with near-real flicker at
the same reconstruction IoU (docs/code-prior.md has the measurements). `corrupt` replaces
that share of the input codes by random classes (T2M-GPT's corrupted sequences), so the prior
learns to continue from histories with mistakes in them, as its own samples will have;
`self_feed` replaces that share of steps by the prior's own samples (scheduled sampling).
evaluate() reports the training loss ('xent', nats per frame), that bound per frame ('nelbo'), its
importance-weighted version over whole windows (Burda et al. 2016, eq. 8: 'iwae'), the gumbel-vae's
own per-frame bound on the same windows ('nelbo_base'), and the IoU of a frame decoded from a code
the prior predicted from real history.

Training speed: the frozen encoder's output for each encoder context of real frames is cached by
frame content (code_cache.py), so after the first pass over the data a step costs only the prior.

Rollout: encode the seed frames once, sample codes from the prior (temperature, per-variable top_k
and top_p), then decode all frames in large batches; frames are never re-encoded. The transformer
keeps a key/value cache and slides its window, so rollouts can be of any length.

The base run: `--set base_run=RUN` names a trained gumbel-vae run folder. validate() copies that
run's model config into base_config and __init__ loads its weights (weights_only) and freezes them;
the frozen VAE is part of this model's state dict, so the code-prior run is self-contained and
`discodance generate/evaluate` do not need the base run any more.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import load_checkpoint
from ..config import from_dict
from ..errors import require
from .base import DanceModel
from .blocks import (check_rollout_options, feedback_frames, frame_iou, frame_log_likelihood, importance_chunks,
                     iwae_bound, log_softmax_classes, mlp, noise, sample_one_hot)
from .code_cache import ContextCache
from .code_smoothing import blend_codes, remove_blips, smooth_codes
from .code_transformer import CodeTransformer, NextCodes, corrupt_codes, mixture_log_prob, pick_component, sample_codes
from .fast_decoder import FastTop, cpu_has_bfloat16, decode_fast, distillation_loss, pick_positions
from .code_prior_config import BASES, CodePriorConfig
from .gumbel_vae import GumbelVAE, GumbelVAEConfig

DECODE_CHUNK = 64     # frames decoded per call in a rollout (larger batches are slower per frame on CPU)


def _read_base(run: str) -> dict:
    ckpt = load_checkpoint(run)
    require(ckpt["config"]["model"] == "gumbel-vae",
            f"base_run {run} is a {ckpt['config']['model']!r} run; code-prior needs a gumbel-vae run")
    return ckpt


class CodePrior(DanceModel):
    config_class = CodePriorConfig
    rollout_settings = ("temperature", "top_k", "top_p", "stay", "deblip", "blend", "slide", "decode_dtype", "decoder")

    @classmethod
    def complete_config(cls, config: CodePriorConfig) -> CodePriorConfig:
        """base_run -> its absolute path and its model config (saved with this run, which then no
        longer needs the base run: its state dict holds the frozen VAE)."""
        if config.base_config is None and config.base_run:
            config.base_run = str(Path(config.base_run).resolve())  # recorded absolute, like the run's data path
            config.base_config = _read_base(config.base_run)["config"]["model_config"]
        return config

    @classmethod
    def first_stage(cls, sets: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """A gumbel-vae: base=next-frame (default) trains it as the chain does (the gumbel-vae's own
        settings; the same VAE the report's chain decodes with), base=autoencoder makes it autoencode
        single frames (context 1, horizon 0), as Bailando's and T2M-GPT's first stages do. Measured
        in docs/compare: the autoencoder's frames are sharper (built-in dancer: implausible share
        at 256 frames 0.10 against 0.20, flicker 0.94x real against 1.13x), but its prior drifts over
        1,024 frames on the dancer and its salsa poses are too diverse (Dist_g +41 % against +12 %)."""
        if sets.get("base_run"):
            return None
        base = sets.get("base", cls.config_class.base)
        require(base in BASES, f"base must be one of {', '.join(BASES)}, got {base!r}")
        return "gumbel-vae", dict(BASES[base])

    def __init__(self, config: CodePriorConfig):
        super().__init__(config.validate())
        c = config
        self.vae = GumbelVAE(from_dict(GumbelVAEConfig, c.base_config))
        self.vae.requires_grad_(False)
        self.vae.decoder.to(memory_format=torch.channels_last)   # oneDNN's faster transposed convs on CPU
        v = self.vae.config
        if c.arch == "mlp":
            self.transition = mlp(c.order * v.latents * v.classes, c.hidden, v.latents * v.classes, c.layers)
        else:
            self.gpt = CodeTransformer(v.latents, v.classes, c.context, c.width, c.blocks, c.heads, c.dropout,
                                       c.mixture)
        self.code_cache = ContextCache(v.context)   # not a module or buffer: never saved
        self.fast = None                            # the distilled last decoder block (fast_decoder.py)
        if c.fast_channels and v.arch == "conv":
            self.fast = FastTop(self.vae.decoder.trunk_channels, c.fast_channels)

    def load_pretrained(self) -> None:
        """The base run's weights, into the frozen VAE, when a new code-prior run starts."""
        ckpt = _read_base(self.config.base_run)
        same = dataclasses.asdict(from_dict(GumbelVAEConfig, ckpt["config"]["model_config"])) == \
            dataclasses.asdict(self.vae.config)
        require(same, f"base_run {self.config.base_run} has changed since this run's settings were read")
        self.vae.load_state_dict(ckpt["model"])
        self.code_cache.clear()

    @classmethod
    def saved_settings(cls, settings: dict, state_dict: dict) -> dict:
        """Runs saved before the fast block (no fast.* weights) decode with the base; runs saved
        before the mixture head (no gpt.mix_head) have one component."""
        legacy = {"fast_channels": 0 if not any(k.startswith("fast.") for k in state_dict) else None,
                  "mixture": 1 if "gpt.mix_head.weight" not in state_dict else None}
        return {**{k: v for k, v in legacy.items() if v is not None and k not in settings}, **settings}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.code_cache.clear()   # the cached codes belong to the encoder weights being replaced
        return super().load_state_dict(state_dict, strict, assign)

    # --------------------------------------------------------------------------- protocol
    @property
    def window(self) -> int:
        v = self.vae.config
        return v.context - 1 + self.train_codes + v.horizon

    @property
    def train_codes(self) -> int:
        """Code positions per training window: the transformer's context + 1, the MLP's seq_len."""
        return self.config.context + 1 if self.config.arch == "transformer" else self.config.seq_len

    @property
    def first(self) -> int:
        """Positions at the start of a window that have no history to be predicted from."""
        return 1 if self.config.arch == "transformer" else self.config.order

    @property
    def seed_frames(self) -> int:
        return self.vae.config.context - 1 + self._seed_codes

    @property
    def _seed_codes(self) -> int:
        lead = self.config.prompt if self.config.arch == "transformer" else self.config.order
        return max(lead, self.vae.config.horizon, 1)

    def optimizer_groups(self):
        net = self.transition if self.config.arch == "mlp" else self.gpt
        return {"model": list(net.parameters()) + ([] if self.fast is None else list(self.fast.parameters()))}

    # --------------------------------------------------------------------------- codes of real frames
    @torch.no_grad()
    def code_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """q's logits at every position of frames (B, F, H, W): (B, F - context + 1, N, K)."""
        c = self.vae.config.context
        B, P = frames.shape[0], frames.shape[1] - c + 1
        ctx = frames.unfold(1, c, 1).movedim(-1, 2)                              # (B, P, c, H, W)
        return self.vae.encode(ctx.reshape(B * P, c, *frames.shape[-2:])).view(B, P, *self.vae.prior_logits.shape)

    @torch.no_grad()
    def cached_log_q(self, frames: torch.Tensor) -> torch.Tensor:
        """log q (B, F - context + 1, N, K) in float32, encoded once per distinct frame context."""
        return self.code_cache.lookup(frames, lambda ctx: log_softmax_classes(self.vae.encode(ctx)))

    def read_codes(self, logits: torch.Tensor, generator) -> torch.Tensor:
        """Class indices (B, T, N) of q's logits (B, T, N, K) at consecutive frames: the argmax, a
        sample, or (codes="smooth") the sequence that best trades q's log-probability against
        switches (smooth_codes): each pose keeps its code while it barely moves."""
        if self.config.codes == "smooth":
            return smooth_codes(log_softmax_classes(logits), self.config.switch_cost)
        return sample_one_hot(logits, generator, 0 if self.config.codes == "argmax" else 1.0).argmax(-1)

    # --------------------------------------------------------------------------- the prior
    def next_logits(self, history: torch.Tensor) -> torch.Tensor:
        """MLP: transition logits (B, N, K) from the last k codes (B, k, N, K), oldest first."""
        return self.transition(history.flatten(1)).view(len(history), *history.shape[-2:])

    def transition_logits(self, codes: torch.Tensor) -> torch.Tensor:
        """MLP: logits of p(z_t | z_t-k..t-1) for t = k..T-1 of one-hot codes (B, T, N, K): (B, T - k, N, K)."""
        k, (B, T) = self.config.order, codes.shape[:2]
        flat = codes.flatten(2)                                                  # (B, T, N*K)
        hist = torch.cat([flat[:, i:T - k + i] for i in range(k)], -1)           # (B, T-k, k*N*K)
        return self.transition(hist).view(B, T - k, *codes.shape[-2:])

    def sequence_dist(self, codes: torch.Tensor) -> NextCodes:
        """p(z_t | z_<t) for t = first .. T-1 of class indices (B, T, N): mix (B, T - first, M),
        logits (B, T - first, M, N, K) (the MLP's: one component)."""
        if self.config.arch == "mlp":
            logits = self.transition_logits(F.one_hot(codes, self.vae.config.classes).float())
            return NextCodes(logits.new_zeros(*logits.shape[:2], 1), logits[:, :, None])
        return self.gpt(codes[:, :-1])

    def prior_loss(self, codes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (B, T - first) in nats of targets under the prior given codes (B, T, N, K)
        one-hot or (B, T, N) class indices; targets are class indices (B, T - first, N) or
        distributions (B, T - first, N, K)."""
        idx = codes if codes.dtype == torch.long else codes.argmax(-1)
        return -mixture_log_prob(self.sequence_dist(idx), targets.float() if targets.is_floating_point() else targets)

    @torch.no_grad()
    def sample_next(self, prompt: torch.Tensor, steps: int, generator=None, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
        """Class indices (B, steps, N) sampled after prompt codes (B, P, N)."""
        if self.config.arch == "transformer":
            return self.gpt.generate(prompt, steps, generator, temperature, top_k, top_p, self.config.stay,
                                     self.config.slide)
        k, K = self.config.order, self.vae.config.classes
        codes = list(F.one_hot(prompt[:, -k:], K).float().unbind(1))
        for _ in range(steps):
            nxt = sample_codes(self.next_logits(torch.stack(codes[-k:], 1)), generator, temperature, top_k, top_p)
            codes.append(F.one_hot(nxt, K).float())
        return torch.stack(codes[k:], 1).argmax(-1) if steps else prompt[:, :0]

    # --------------------------------------------------------------------------- training
    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        log_q = self.cached_log_q(batch)[:, :self.train_codes]                   # (B, T, N, K)
        codes = self.read_codes(log_q, generator)                                # (B, T, N) class indices
        targets = self.code_targets(log_q, codes)                                 # (B, T - first, N[, K])
        inputs = self.feed_own_samples(corrupt_codes(codes, self.config.corrupt, log_q.shape[-1], generator), generator)
        xent = self.prior_loss(inputs, targets)                                  # (B, T - s)
        soft = targets.is_floating_point()                                       # codes=sample: q's probabilities
        entropy = -(targets * targets.clamp_min(1e-12).log()).sum((-2, -1)) if soft else 0.0   # H(q)
        loss = xent.mean() / (batch.shape[-1] * batch.shape[-2])                 # nats per pixel
        logs = {"xent_nats": xent.mean().item(), "kl_nats": (xent - entropy).mean().item(),
                "cached_contexts": float(len(self.code_cache))}
        if self.fast is not None:                    # its own parameters: the sum trains each part on its loss
            distil, figures = self.distil(codes, generator)
            loss = loss + distil
            logs.update(figures)
        return loss, {"loss": loss.item(), **logs}

    def distil(self, codes: torch.Tensor, generator=None) -> tuple[torch.Tensor, dict]:
        """The fast block's distillation loss on `distil_frames` codes of real frames (B, T, N),
        half one-hot and half blended over +-max(1, blend) steps, as rollouts decode them."""
        K, width = self.vae.config.classes, max(1, self.config.blend)
        rows, steps = pick_positions(codes.shape[:2], self.config.distil_frames, width, generator)
        rows, steps = rows.to(codes.device), steps.to(codes.device)
        half = len(rows) // 2
        picked = torch.arange(len(rows) - half, device=codes.device)
        blended = blend_codes(codes[rows[half:]], K, width)[picked, steps[half:]]
        z = torch.cat([F.one_hot(codes[rows[:half], steps[:half]], K).float(), blended])   # (M, N, K)
        return distillation_loss(self.vae.decoder, self.fast, z.flatten(1))

    @torch.no_grad()
    def feed_own_samples(self, codes: torch.Tensor, generator=None) -> torch.Tensor:
        """Scheduled sampling in one extra pass (Mihaylova & Martins 2019, "Scheduled Sampling for
        Transformers", Sec. 3): the prior predicts every step of codes (B, T, N) from the steps
        before it, and a `self_feed` share of the steps 1..T-1 is replaced by a sample of that
        prediction, so training sees the kind of history its own rollouts make."""
        if self.config.self_feed <= 0 or self.config.arch != "transformer":
            return codes
        own = sample_codes(pick_component(self.gpt(codes[:, :-1]), generator), generator)   # (B, T-1, N)
        pick = noise(torch.rand, own.shape[:2], generator).to(codes.device) < self.config.self_feed
        return torch.cat([codes[:, :1], torch.where(pick[..., None], own, codes[:, 1:])], 1)

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
                 chunk: int = 8) -> dict[str, torch.Tensor]:
        v, s, T = self.vae.config, self.first, self.train_codes
        logits = self.code_logits(batch)[:, :T].float()                          # (B, T, N, K)
        first = v.context - 1 + v.horizon
        target = batch[:, first:first + T]                                       # (B, T, H, W) frames decoded from z_t
        log_q, base = log_softmax_classes(logits), log_softmax_classes(self.vae.prior_logits)
        B = len(batch)

        def draw(n: int) -> dict[str, torch.Tensor]:                            # each (B, n)
            lq, x = log_q.repeat_interleave(n, 0), target.repeat_interleave(n, 0)
            z = sample_one_hot(lq, generator)                                    # (B*n, T, N, K)
            dist = self.sequence_dist(z.argmax(-1))                              # (B*n, T-s, M[, N, K])
            log_pz = torch.cat([(z[:, :s] * base).sum((-2, -1)), mixture_log_prob(dist, z[:, s:].argmax(-1))], 1)  # (B*n, T)
            log_qz = (z * lq).sum((-2, -1))
            ll = frame_log_likelihood(self.vae.decode(z.flatten(0, 1)), x.flatten(0, 1)).view(-1, T)
            kl_base = (lq.exp() * (lq - base)).sum((-2, -1))                     # (B*n, T)
            if dist.mix.shape[-1] == 1:                                          # KL(q || p) exactly
                log_p = torch.cat([base.expand(len(z), s, -1, -1), log_softmax_classes(dist.logits[:, :, 0])], 1)
                kl = (lq.exp() * (lq - log_p)).sum((-2, -1))
            else:                     # a mixture: exact on the first positions (the VAE's prior), one-sample after
                kl = torch.cat([kl_base[:, :s], (log_qz - log_pz)[:, s:]], 1)
            z_last = sample_one_hot(pick_component(dist.at(slice(None), -1), generator), generator)  # from real history
            last = self.vae.decode(z_last)                                       # (B*n, H, W) logits
            return {"log_w": (ll + log_pz - log_qz).sum(1).view(B, n),
                    "nelbo": (kl - ll).sum(1).view(B, n), "nelbo_base": (kl_base - ll).sum(1).view(B, n),
                    "kl": kl.sum(1).view(B, n),
                    "iou": frame_iou(last > 0, x[:, -1] > 0.5).view(B, n),
                    "fast_flips": self._fast_flips(z_last, last).view(B, n)}

        d = importance_chunks(samples, chunk, draw)
        fast = {} if self.fast is None else {"fast_flips": d["fast_flips"].mean(1)}
        return {**fast, "xent": self.code_xent(logits, generator), "nelbo": d["nelbo"].mean(1) / T,
                "iwae": iwae_bound(d["log_w"]) / T, "kl": d["kl"].mean(1) / T,
                "rec": (d["nelbo"] - d["kl"]).mean(1) / T, "nelbo_base": d["nelbo_base"].mean(1) / T,
                "iou": d["iou"].mean(1)}

    def _fast_flips(self, z: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        """Share of pixels (per frame of codes z (M, N, K)) the fast block thresholds differently
        from the base decoder's logits (M, H, W) (NaN without a fast block)."""
        if self.fast is None:
            return z.new_full((len(z),), float("nan"))
        fast = decode_fast(self.vae.decoder, self.fast, z.flatten(1))[:, 0]
        return (fast > 0).ne(base_logits > 0).float().mean((-2, -1))

    def code_xent(self, logits: torch.Tensor, generator=None) -> torch.Tensor:
        """The training loss on these windows, without corruption: the prior's cross-entropy (B,) in
        nats per frame of the codes it is trained on (read_codes of q's logits (B, T, N, K)). On
        held-out windows, set against the training log's xent_nats, it shows how much the prior
        has memorised rather than learned (docs/code-prior.md)."""
        codes = self.read_codes(logits, generator)
        return self.prior_loss(codes, self.code_targets(log_softmax_classes(logits), codes)).mean(1)

    def code_targets(self, log_q: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """What the prior learns at positions first..T-1 of log q (B, T, N, K) read as codes (B, T, N):
        q's probabilities (codes=sample, (B, T - first, N, K)) or the codes themselves (class indices)."""
        s = self.first
        return log_q[:, s:].exp() if self.config.codes == "sample" else codes[:, s:]

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary", top_k: int | None = None,
                top_p: float | None = None) -> torch.Tensor:
        """Seed frames (B, seed_frames, H, W) -> (B, 1 + steps, H, W) in [0, 1].

        The seed is encoded once into m codes; then codes are sampled from the prior at the
        config's temperature times `temperature` (which scales its logits; 0 takes the most likely
        code; top_k / top_p default to the config's)
        and decoded, each from its code mixed with its neighbours' (config.blend: a held code still
        moves). Code z_t decodes frame t + horizon, so the first `horizon` frames come from the
        seed's own codes. `feedback` only chooses how decoded frames are shown: nothing is fed
        back into an encoder.
        """
        check_rollout_options(temperature, feedback)
        top_k = self.config.top_k if top_k is None else top_k
        top_p = self.config.top_p if top_p is None else top_p
        h, m = self.vae.config.horizon, self._seed_codes
        prompt = self.read_codes(self.code_logits(seed).float(), generator)[:, -m:]   # (B, m, N)
        new = self.sample_next(prompt, max(0, steps - h) + self.config.blend, generator,   # + blend: the last
                               temperature * self.config.temperature, top_k, top_p)    # frames blend both ways
        codes = torch.cat([prompt, new], 1)
        codes = remove_blips(codes) if self.config.deblip else codes
        if self.config.blend:                         # blended with the prompt's codes too: no seam at frame 1
            codes = blend_codes(codes, self.vae.config.classes, self.config.blend)
        codes = codes[:, m - h:m - h + steps]                                     # frames 1..steps
        return torch.cat([seed[:, -1:], self.decode_codes(codes, feedback, generator).to(seed.dtype)], 1)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (M, N, K) -> pixel logits (M, H, W) with the decoder the `decoder` setting picks."""
        if self.config.decoder == "fast" and self.fast is not None:
            return decode_fast(self.vae.decoder, self.fast, z.flatten(1))[:, 0]
        return self.vae.decode(z)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor, feedback: str = "binary", generator=None) -> torch.Tensor:
        """Class indices (B, T, N) or soft codes (B, T, N, K) -> frames (B, T, H, W), decoded
        DECODE_CHUNK frames at a time."""
        B, T = codes.shape[:2]
        soft = codes.is_floating_point()
        flat = codes.reshape(B * T, *codes.shape[2:])
        dtype = next(self.vae.parameters()).dtype
        device = flat.device.type
        bf16 = self.config.decode_dtype == "bfloat16" and device == "cpu" and cpu_has_bfloat16()   # else float32
        out = []
        for i in range(0, B * T, DECODE_CHUNK):
            chunk = flat[i:i + DECODE_CHUNK]
            z = (chunk if soft else F.one_hot(chunk, self.vae.config.classes)).to(dtype)
            with torch.autocast(device, torch.bfloat16, enabled=bf16):
                logits = self._decode(z)
            out.append(feedback_frames(torch.sigmoid(logits.float()), feedback, generator))
        return torch.cat(out).view(B, T, *out[0].shape[-2:]) if out else codes.new_zeros(B, 0, *self.frame_size).float()

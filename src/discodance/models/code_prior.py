"""code-prior: a learned transition prior over the discrete codes of a trained gumbel-vae (the issue's
`--prior markov`), so that generation samples codes and decodes them without re-encoding frames.

Model: the frozen gumbel-vae supplies q(z_t | x_t-c+1..t) (N categorical variables of K classes, Jang
et al. 2017) and p(x_t+h | z_t); this model adds a k-th order Markov prior over its codes

    p(z_t | z_t-k..t-1) = prod_n Cat(z_t,n; softmax(MLP([z_t-k, .., z_t-1])_n))      N x K one-hots in, N x K logits out

(the N variables of step t are independent given the previous codes, as in the VAE's posterior). It
is trained on code windows of real frames: z_<t are samples of q (or its argmax, codes="argmax"), and
the target is q(z_t) itself, i.e. the cross-entropy E_q[-log p(z_t | z_<t)], the prior's part of
the sequential bound

    log p(x_{1+h..T+h}) >= E_q[ sum_t log p(x_t+h | z_t) + log p(z_t | z_<t) - log q(z_t | x_t) ]

(Jensen's inequality holds for any q, including one that reads frames the decoder does not model;
the first k codes of a window use the VAE's own prior). evaluate() reports that bound per frame
('nelbo'), its importance-weighted version over whole windows (Burda et al. 2016, eq. 8: 'iwae'), the
gumbel-vae's own per-frame bound on the same windows ('nelbo_base'), and the IoU of a frame decoded
from a code the prior predicted from real history.

Rollout: encode the seed frames once, then sample codes from the prior (temperature scales its
logits) and decode each one; frames are never re-encoded, so each generated frame costs one decoder
pass and one small MLP, against the report's chain's encoder + decoder.

The base run: `--set base_run=RUN` names a trained gumbel-vae run folder. validate() copies that
run's model config into base_config and __init__ loads its weights (weights_only) and freezes them;
the frozen VAE is part of this model's state dict, so the code-prior run is self-contained and
`discodance generate/evaluate` do not need the base run any more.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import from_dict
from ..errors import require
from .base import DanceModel
from .blocks import check_rollout_options, feedback_frames, frame_iou, frame_log_likelihood, mlp, sample_one_hot
from .gumbel_vae import GumbelVAE, GumbelVAEConfig

CODES = ("sample", "argmax")


@dataclass
class CodePriorConfig:
    frame_size: tuple[int, int] = (64, 64)
    base_run: str = ""                 # run folder (or checkpoint) of a trained gumbel-vae
    base_config: dict | None = None    # that run's model config: filled in from base_run, saved with this run
    order: int = 2                     # k: previous codes the prior conditions on
    seq_len: int = 8                   # code positions per training window
    hidden: int = 512
    layers: int = 2                    # MLP layers
    codes: str = "sample"              # the code of a real frame: a sample of q, or its argmax

    def validate(self) -> "CodePriorConfig":
        require(self.order >= 1, f"order must be >= 1, got {self.order}")
        require(self.seq_len > self.order, f"seq_len ({self.seq_len}) must exceed order ({self.order})")
        require(self.hidden >= 1 and self.layers >= 1, "hidden and layers must be >= 1")
        require(self.codes in CODES, f"codes must be one of {', '.join(CODES)}, got {self.codes!r}")
        if self.base_config is None:
            require(bool(self.base_run), "code-prior needs a trained gumbel-vae: --set base_run=RUN_FOLDER")
            self.base_run = str(Path(self.base_run).resolve())  # recorded absolute, like the run's data path
            self.base_config = _read_base(self.base_run)["config"]["model_config"]
        require(isinstance(self.base_config, dict), f"base_config must be a gumbel-vae config, got {self.base_config!r}")
        base = from_dict(GumbelVAEConfig, self.base_config).validate()
        require(tuple(base.frame_size) == tuple(self.frame_size),
                f"the base gumbel-vae was trained on {list(base.frame_size)} frames, this data has {list(self.frame_size)}")
        return self


def _read_base(run: str) -> dict:
    from ..train import load_checkpoint  # here, not at the top: train imports the model registry
    ckpt = load_checkpoint(run)
    require(ckpt["config"]["model"] == "gumbel-vae",
            f"base_run {run} is a {ckpt['config']['model']!r} run; code-prior needs a gumbel-vae run")
    return ckpt


class CodePrior(DanceModel):
    config_class = CodePriorConfig

    def __init__(self, config: CodePriorConfig):
        super().__init__(config.validate())
        c = config
        self.vae = GumbelVAE(from_dict(GumbelVAEConfig, c.base_config))
        self._load_base()
        self.vae.requires_grad_(False)
        v = self.vae.config
        self.transition = mlp(c.order * v.latents * v.classes, c.hidden, v.latents * v.classes, c.layers)

    def _load_base(self) -> None:
        """Load the base run's weights when it is there and matches base_config; otherwise (a saved
        code-prior run being reloaded, whose state dict holds the VAE) leave them to load_state_dict."""
        run = self.config.base_run
        if not run or not (Path(run).is_dir() or Path(run).is_file()):
            return
        ckpt = _read_base(run)
        same = dataclasses.asdict(from_dict(GumbelVAEConfig, ckpt["config"]["model_config"])) == \
            dataclasses.asdict(self.vae.config)
        if same:
            self.vae.load_state_dict(ckpt["model"])

    # --------------------------------------------------------------------------- protocol
    @property
    def window(self) -> int:
        v = self.vae.config
        return v.context - 1 + self.config.seq_len + v.horizon

    @property
    def seed_frames(self) -> int:
        return self.vae.config.context - 1 + self._seed_codes

    @property
    def _seed_codes(self) -> int:
        return max(self.config.order, self.vae.config.horizon, 1)

    def optimizer_groups(self):
        return {"model": list(self.transition.parameters())}

    # --------------------------------------------------------------------------- pieces
    @torch.no_grad()
    def code_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """q's logits at every position of frames (B, F, H, W): (B, F - context + 1, N, K)."""
        c = self.vae.config.context
        B, P = frames.shape[0], frames.shape[1] - c + 1
        ctx = frames.unfold(1, c, 1).movedim(-1, 2)                              # (B, P, c, H, W)
        return self.vae.encode(ctx.reshape(B * P, c, *frames.shape[-2:])).view(B, P, *self.vae.prior_logits.shape)

    def read_codes(self, logits: torch.Tensor, generator) -> torch.Tensor:
        """One-hot codes (..., N, K) of q: a sample, or the argmax (codes="argmax")."""
        return sample_one_hot(logits, generator, 0 if self.config.codes == "argmax" else 1.0)

    def next_logits(self, history: torch.Tensor) -> torch.Tensor:
        """Transition logits (B, N, K) from the last k codes (B, k, N, K), oldest first."""
        return self.transition(history.flatten(1)).view(len(history), *history.shape[-2:])

    def transition_logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits of p(z_t | z_t-k..t-1) for t = k..T-1 of codes (B, T, N, K): (B, T - k, N, K)."""
        k, (B, T) = self.config.order, codes.shape[:2]
        flat = codes.flatten(2)                                                  # (B, T, N*K)
        hist = torch.cat([flat[:, i:T - k + i] for i in range(k)], -1)           # (B, T-k, k*N*K)
        return self.transition(hist).view(B, T - k, *codes.shape[-2:])

    def prior_loss(self, codes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (B, T - k) in nats of target distributions (B, T - k, N, K) under the prior
        given the codes (B, T, N, K) before each target."""
        log_p = self.transition_logits(codes).float().log_softmax(-1)
        return -(targets.float() * log_p).sum((-2, -1))

    # --------------------------------------------------------------------------- training
    def forward(self, batch: torch.Tensor, step: int = 0, generator: torch.Generator | None = None):
        logits = self.code_logits(batch).float()                                 # (B, P, N, K)
        codes = self.read_codes(logits, generator).to(batch.dtype)
        k = self.config.order
        targets = codes[:, k:] if self.config.codes == "argmax" else logits[:, k:].softmax(-1)
        xent = self.prior_loss(codes, targets)                                   # (B, P-k)
        entropy = -(targets * targets.clamp_min(1e-12).log()).sum((-2, -1))      # H(q), 0 for argmax
        loss = xent.mean() / (batch.shape[-1] * batch.shape[-2])                 # nats per pixel
        return loss, {"loss": loss.item(), "xent_nats": xent.mean().item(),
                      "kl_nats": (xent - entropy).mean().item()}

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, batch: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None,
                 chunk: int = 8) -> dict[str, torch.Tensor]:
        v, k, T = self.vae.config, self.config.order, self.config.seq_len
        logits = self.code_logits(batch)[:, :T].float()                          # (B, T, N, K)
        first = v.context - 1 + v.horizon
        target = batch[:, first:first + T]                                       # (B, T, H, W) frames decoded from z_t
        log_q, base = logits.log_softmax(-1), self.vae.prior_logits.float().log_softmax(-1)
        B = len(batch)
        log_w, nelbo, nelbo_base, kls, iou = [], [], [], [], []
        for s0 in range(0, samples, chunk):
            s = min(chunk, samples - s0)
            lq, x = log_q.repeat_interleave(s, 0), target.repeat_interleave(s, 0)
            z = sample_one_hot(lq, generator)                                    # (B*s, T, N, K)
            trans = self.transition_logits(z).float().log_softmax(-1)            # (B*s, T-k, N, K)
            log_p = torch.cat([base.expand(len(z), k, -1, -1), trans], 1)        # (B*s, T, N, K)
            ll = frame_log_likelihood(self.vae.decode(z.flatten(0, 1)), x.flatten(0, 1)).view(-1, T)
            kl = (lq.exp() * (lq - log_p)).sum((-2, -1))                         # (B*s, T)
            kl_base = (lq.exp() * (lq - base)).sum((-2, -1))
            log_w.append((ll + (z * (log_p - lq)).sum((-2, -1))).sum(1).view(B, s))
            nelbo.append((kl - ll).sum(1).view(B, s))
            nelbo_base.append((kl_base - ll).sum(1).view(B, s))
            kls.append(kl.sum(1).view(B, s))
            z_last = sample_one_hot(trans[:, -1], generator)                     # predicted from real history
            iou.append(frame_iou(self.vae.decode(z_last) > 0, x[:, -1] > 0.5).view(B, s))
        log_w, nelbo, nelbo_base, kls, iou = (torch.cat(t, 1) for t in (log_w, nelbo, nelbo_base, kls, iou))
        iwae = -(torch.logsumexp(log_w, 1) - math.log(samples)) / T
        return {"nelbo": nelbo.mean(1) / T, "iwae": iwae, "kl": kls.mean(1) / T,
                "rec": (nelbo - kls).mean(1) / T, "nelbo_base": nelbo_base.mean(1) / T, "iou": iou.mean(1)}

    # --------------------------------------------------------------------------- generation
    @torch.no_grad()
    def rollout(self, seed: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                temperature: float = 1.0, feedback: str = "binary") -> torch.Tensor:
        """Seed frames (B, seed_frames, H, W) -> (B, 1 + steps, H, W) in [0, 1].

        The seed is encoded once into m = max(order, horizon, 1) codes; then codes are sampled from
        the prior (temperature scales its logits, 0 takes the most likely code) and decoded. Code z_t
        decodes frame t + horizon, so the first `horizon` frames come from the seed's own codes.
        `feedback` only chooses how decoded frames are shown: nothing is fed back into an encoder.
        """
        check_rollout_options(temperature, feedback)
        h, m, k = self.vae.config.horizon, self._seed_codes, self.config.order
        codes = list(self.read_codes(self.code_logits(seed).float(), generator).to(seed.dtype).unbind(1))
        out = [seed[:, -1]]
        for i in range(1, steps + 1):
            index = m - 1 + i - h                                                # the code that decodes frame i
            while len(codes) <= index:
                logits = self.next_logits(torch.stack(codes[-k:], 1))
                codes.append(sample_one_hot(logits, generator, temperature).to(seed.dtype))
            probs = torch.sigmoid(self.vae.decode(codes[index]).float())
            out.append(feedback_frames(probs, feedback, generator).to(seed.dtype))
        return torch.stack(out, 1)

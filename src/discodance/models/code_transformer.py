"""A causal transformer over sequences of discrete frame codes (GPT, written nanoGPT-style).

Each step t is one frame's code z_t = (z_t,1 .. z_t,N), N categorical variables of K classes. The
step's input vector is the sum of N learned per-variable embeddings of its classes plus a learned
position embedding; the output is the distribution of the next step's code, a mixture of M
components in each of which the N variables are independent (M = 1: independent given the past,
as in the VAE's posterior):

    h_t^0        = sum_n E_n[z_t,n] + P[t]                                  (D,)   t = 0 .. T-1
    h^l          = h^l-1 + Attn(LN(h^l-1)),  h^l += MLP(LN(h^l))           pre-LN blocks, causal attention
    [a, l]       = W LN(h_t^L)                                              a (M,), l (M, N, K)
    p(z_t+1 | z_<=t) = sum_m softmax(a)_m prod_n Cat(z_t+1,n; softmax(l_m,n))

Why a mixture: with M = 1 each variable draws its next class on its own. Measured, a rollout's
variables then switch at the real rate but rarely all hold together, and over 1,024 frames the
rollouts settled on part of the training take (the long-rollout drift); with M = 8 components the
drift is gone (docs/code-prior.md, "Variables that move together"). A component draws all N
variables' classes from one joint choice ("all hold", "all move to this next pose"). A mixture of
factorised categoricals is the latent-class model (Lazarsfeld 1950); as an output layer it is
Bishop's (1994) mixture density network with categorical components. Sampling picks a
component by its weight, then every variable from it.

Attention is Vaswani et al. 2017, "Attention Is All You Need" (eq. 1: softmax(Q K^T / sqrt(d_k)) V;
Sec. 3.2.2: multi-head; Sec. 3.2.3: the mask that keeps position t from seeing t' > t; Sec. 3.5:
learned position embeddings as the alternative to sinusoids). Using a GPT over the codes of a
frozen discrete autoencoder is the second stage of Bailando (Siyao et al., "Bailando: 3D Dance
Generation by Actor-Critic GPT with Choreographic Memory", CVPR 2022, Sec. 3.2: a GPT predicts the
next code indices of the choreographic memory with a cross-entropy loss) and of T2M-GPT (Zhang et
al., "T2M-GPT: Generating Human Motion from Textual Descriptions with Discrete Representations",
CVPR 2023, Sec. 3.2: p(S) = prod_i p(S_i | S_<i) trained by maximum likelihood; its corrupted
sequences, a share of input codes replaced by random ones so that training sees the mistakes that
sampling makes, are `corrupt_codes` here).

Sampling: temperature, per-variable top-k and nucleus (top-p) filtering (Holtzman et al. 2020,
"The Curious Case of Neural Text Degeneration", Sec. 3.1); a key/value cache makes each new step
cost one position's work; rollouts of any length slide the context window (see `generate`).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .blocks import gumbel_noise, log_softmax_classes, noise, softmax_classes


class NextCodes(NamedTuple):
    """The prior's distribution of a next step's code: a mixture of M factorised components."""
    mix: torch.Tensor      # (..., M) component logits
    logits: torch.Tensor   # (..., M, N, K) class logits of each component's N variables

    def at(self, *index) -> "NextCodes":
        """The distributions at `index` of the leading axes, e.g. at(slice(None), -1): each sequence's last."""
        return NextCodes(self.mix[index], self.logits[index])


class KVCache:
    """Every layer's keys and values of the positions seen so far, preallocated for the whole context
    so that a generation step writes one position instead of copying the cache (torch.cat)."""

    def __init__(self, layers: int, batch: int, heads: int, context: int, head_width: int, like: torch.Tensor):
        shape = (layers, batch, heads, context, head_width)
        self.keys, self.values = like.new_zeros(shape), like.new_zeros(shape)   # (L, B, h, C, d) each
        self.length = 0                                                         # positions filled


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        assert width % heads == 0, f"width {width} must be divisible by heads {heads}"
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """x (B, T, D) at positions S .. S+T-1, S = cache.length (0 without a cache); the new keys
        and values are written into the cache at those positions."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, T, d) each
        S = 0
        if cache is not None:
            S = cache.length
            cache.keys[layer, :, :, S:S + T], cache.values[layer, :, :, S:S + T] = k, v
            k, v = cache.keys[layer, :, :, :S + T], cache.values[layer, :, :, :S + T]   # (B, h, S + T, d)
        drop = self.dropout if self.training else 0.0
        if S == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        elif T == 1:  # one new position sees everything cached and itself
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:  # new position i (absolute S + i) sees every cached position and the new ones up to itself
            mask = torch.ones(T, S + T, dtype=torch.bool, device=x.device).tril(S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, T, D)                                  # (B, T, D)
        return self.proj(y)

    def step(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """forward() for one new position x (B, D) at cache.length, in as few operations as
        possible: at batch 1 a generation step is bound by per-operation overhead, not arithmetic."""
        B, D = x.shape
        S = cache.length
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).view(B, 3, self.heads, 1, D // self.heads).unbind(1)
        keys, values = cache.keys[layer], cache.values[layer]                   # (B, h, C, d)
        keys[:, :, S:S + 1], values[:, :, S:S + 1] = k, v
        y = F.scaled_dot_product_attention(q, keys[:, :, :S + 1], values[:, :, :S + 1])   # (B, h, 1, d)
        return F.linear(y.view(B, D), self.proj.weight, self.proj.bias)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))

    def step(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """forward() for one new position (B, D), without module calls (see CausalSelfAttention.step)."""
        D = x.shape[-1]
        x = x + self.attn.step(F.layer_norm(x, (D,), self.ln1.weight, self.ln1.bias), cache, layer)
        up, down = self.mlp[0], self.mlp[2]
        h = F.gelu(F.linear(F.layer_norm(x, (D,), self.ln2.weight, self.ln2.bias), up.weight, up.bias))
        return x + F.linear(h, down.weight, down.bias)


class CodeTransformer(nn.Module):
    """codes (B, T, N) long -> each next step's NextCodes: mix (B, T, M), logits (B, T, M, N, K); T <= context."""

    def __init__(self, latents: int, classes: int, context: int = 64, width: int = 128, layers: int = 4,
                 heads: int = 4, dropout: float = 0.0, mixture: int = 1):
        super().__init__()
        self.latents, self.classes, self.context, self.mixture = latents, classes, context, mixture
        self.code_emb = nn.Embedding(latents * classes, width)                  # N tables of K rows, stacked
        self.pos_emb = nn.Embedding(context, width)
        self.register_buffer("offsets", torch.arange(latents) * classes, persistent=False)   # (N,)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, mixture * latents * classes)
        self.mix_head = nn.Linear(width, mixture) if mixture > 1 else None        # the components' weights
        self.apply(_init)

    def new_cache(self, batch: int) -> KVCache:
        """An empty key/value cache for `batch` sequences of up to `context` steps."""
        heads = self.blocks[0].attn.heads
        width = self.pos_emb.weight.shape[1]
        return KVCache(len(self.blocks), batch, heads, self.context, width // heads, self.pos_emb.weight)

    def forward(self, codes: torch.Tensor, cache: KVCache | None = None) -> NextCodes:
        """The distribution of every next step (mix (B, T, M), logits (B, T, M, N, K)). With a cache
        holding S steps, codes are steps S .. S+T-1: only they are computed, and the cache is
        extended by them."""
        return self.next_codes(self.features(codes, cache))

    def features(self, codes: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """forward()'s final features (B, T, D), from which next_codes reads the distributions."""
        B, T, N = codes.shape
        S = 0 if cache is None else cache.length
        assert S + T <= self.context, f"{S + T} steps exceed the context of {self.context}"
        x = self.embed(codes) + self.pos_emb.weight[S:S + T]                    # (B, T, D)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length = S + T
        return self.ln_f(x)

    def next_codes(self, h: torch.Tensor) -> NextCodes:
        """Final features (..., D) -> NextCodes (M = 1: one component of weight 1)."""
        lead = h.shape[:-1]
        logits = F.linear(h, self.head.weight, self.head.bias).view(*lead, self.mixture, self.latents, self.classes)
        if self.mix_head is None:
            return NextCodes(h.new_zeros(*lead, 1), logits)
        return NextCodes(F.linear(h, self.mix_head.weight, self.mix_head.bias), logits)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """sum_n E_n[z_t,n] of codes (B, T, N): (B, T, D), as one matrix product of the codes' N-hot
        vectors with the stacked tables. Gathering N rows per step and summing them costs a quarter of
        a training step on CPU (the gather and its scatter-add backward); the product costs a few %."""
        B, T, N = codes.shape
        weight = self.code_emb.weight                                           # (N*K, D)
        hot = weight.new_zeros(B * T, N * self.classes).scatter_(1, (codes + self.offsets).view(B * T, N), 1.0)
        return (hot @ weight).view(B, T, -1)

    def step(self, codes: torch.Tensor, cache: KVCache) -> NextCodes:
        """forward() for one new step: codes (B, N) at position cache.length -> its NextCodes (B, M[, N, K])."""
        return self.next_codes(self.step_features(codes, cache))

    def step_features(self, codes: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """step()'s final features (B, D), from which next_codes reads the distributions."""
        B, N = codes.shape
        S = cache.length
        assert S < self.context, f"{S + 1} steps exceed the context of {self.context}"
        x = F.embedding_bag(codes + self.offsets, self.code_emb.weight, mode="sum") + self.pos_emb.weight[S]  # (B, D)
        for i, block in enumerate(self.blocks):
            x = block.step(x, cache, i)
        cache.length = S + 1
        D = x.shape[-1]
        return F.layer_norm(x, (D,), self.ln_f.weight, self.ln_f.bias)

    def drawn_logits(self, h: torch.Tensor, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """pick_component(next_codes(h), ...) for features h (B, D): class logits (B, N, K) of one
        drawn component each, from the same draw. For a single sequence on the CPU only the drawn
        component's logits are computed: the head's M * N * K rows (2 MB of weights at M = 8,
        N = 32, K = 16) are more than a cache holds, and reading them all took 70 us of a 1 ms
        step against 15 us for one component's. Batches use the full head (it is one product)."""
        B, D = h.shape
        if self.mix_head is None or B > 1 or h.device.type != "cpu":
            return pick_component(self.next_codes(h), generator, temperature)
        m = int(draw_component(F.linear(h, self.mix_head.weight, self.mix_head.bias), generator, temperature))
        weight, bias = self.head.weight.view(self.mixture, -1, D), self.head.bias.view(self.mixture, -1)
        return F.linear(h, weight[m], bias[m]).view(1, self.latents, self.classes)

    def generate(self, prompt: torch.Tensor, steps: int, generator: torch.Generator | None = None,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, stay: float = 0.0,
                 slide: int = 0) -> torch.Tensor:
        """prompt codes (B, P, N) -> the next `steps` sampled codes (B, steps, N).

        The loop runs in inference mode, which skips autograd's bookkeeping on each of a step's ~90
        small operations (measured: 12 % of a step at batch 1); the codes are copied out of it so
        that callers get an ordinary tensor.
        """
        with torch.inference_mode():
            codes = self._generate(prompt, steps, generator, temperature, top_k, top_p, stay, slide)
        return codes.clone()

    def _generate(self, prompt: torch.Tensor, steps: int, generator: torch.Generator | None, temperature: float,
                  top_k: int, top_p: float, stay: float, slide: int) -> torch.Tensor:
        """generate() itself.

        `stay` adds that many nats to each variable's log-probability of keeping its previous class.

        Each step feeds one new code through the key/value cache. When the cache holds `context`
        steps, the window slides by `slide` codes (0: context // 2): the last context - slide codes
        are re-encoded from scratch (their position embeddings restart at 0, as every training
        window's do) and decoding goes on from there, so a step costs one position's work plus a
        re-encode of context - slide positions every `slide` steps. A smaller slide keeps more
        history at every slide and costs more re-encoding.
        """
        B, P, N = prompt.shape
        assert 0 <= slide < self.context, f"slide {slide} must be in [0, {self.context})"
        keep = self.context - slide if slide else max(1, self.context // 2)
        codes = prompt.new_empty(B, P + steps, N)                               # prompt, then the samples
        codes[:, :P] = prompt
        cache = self.new_cache(B)
        h = self.features(prompt[:, -self.context:], cache)[:, -1]               # (B, D)
        for t in range(P, P + steps):
            logits = self.drawn_logits(h, generator, temperature)               # (B, N, K)
            if stay:  # raw logits suffice: a variable's softmax ignores a shift of all its classes
                logits = logits.scatter_add(-1, codes[:, t - 1, :, None], logits.new_full((B, N, 1), stay))
            codes[:, t] = sample_codes(logits, generator, temperature, top_k, top_p)
            if cache.length >= self.context:                                    # full: slide and re-encode
                cache.length = 0
                h = self.features(codes[:, t + 1 - keep:t + 1], cache)[:, -1]
            else:
                h = self.step_features(codes[:, t], cache)
        return codes[:, P:]


def _init(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------- the mixture
def mixture_log_prob(dist: NextCodes, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability (...) under the mixture of codes given as class indices (..., N); for
    target distributions over each variable's classes (..., N, K), log sum_m w_m exp(sum_n,k
    t_nk log p_m,n,k), which is E_t[log p] for one component and a lower bound on it for several
    (the evidence bound with component weights that ignore z; codes=sample trains a mixture on it). Indices skip the (..., M, N, K)
    product with one-hot targets, most of a mixture's training step on CPU."""
    logits = dist.logits.float()                                                # (..., M, N, K)
    if not targets.is_floating_point():
        index = targets.unsqueeze(-2).unsqueeze(-1).expand(*logits.shape[:-1], 1)   # (..., M, N, 1)
        per = PickedLogSoftmax.apply(logits, index).sum(-1)                     # (..., M)
    else:
        per = (targets.unsqueeze(-3) * log_softmax_classes(logits)).sum((-2, -1))   # (..., M)
    return torch.logsumexp(F.log_softmax(dist.mix.float(), -1) + per, -1)


class PickedLogSoftmax(torch.autograd.Function):
    """log_softmax(logits)[..., index] over the last axis: logits (..., K), index (..., 1) -> (...).
    The same numbers as gathering from log_softmax, in fewer passes over the (..., M, N, K) logits
    of a mixture (the backward builds softmax * -grad in place and adds grad at the index): with
    8 components the head's loss was most of a training step."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, -1, keepdim=True)                        # (..., 1)
        ctx.save_for_backward(logits, index, lse)
        return (logits.gather(-1, index) - lse).squeeze(-1)

    @staticmethod
    @once_differentiable                                  # the backward works in place
    def backward(ctx, grad: torch.Tensor):
        logits, index, lse = ctx.saved_tensors
        g = grad.unsqueeze(-1)                                                  # (..., 1)
        out = (logits - lse).exp_().mul_(-g)                                    # -softmax * grad
        return out.scatter_add_(-1, index.contiguous(), g.expand_as(index).contiguous()), None


def pick_component(dist: NextCodes, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
    """The class logits (..., N, K) of one component per distribution, drawn by its weight at
    `temperature` (0: the heaviest). One component: its logits, and no noise is drawn."""
    if dist.mix.shape[-1] == 1:
        return dist.logits[..., 0, :, :]
    pick = draw_component(dist.mix, generator, temperature)[..., None, None, None]
    return dist.logits.gather(-3, pick.expand(*pick.shape[:-3], 1, *dist.logits.shape[-2:])).squeeze(-3)


def draw_component(mix: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Component indices (...) drawn from component logits (..., M) at `temperature` (0: the heaviest).
    The logits are not normalised: Gumbel-max ignores a shift of all of a row's logits."""
    mix = mix.float()
    if temperature > 0:
        mix = (mix if temperature == 1 else mix / temperature) + gumbel_noise(mix.shape, generator, mix.device)
    return mix.argmax(-1)


# ----------------------------------------------------------------------------- sampling
def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Per variable (last axis = classes): keep the top_k most likely classes (0 = all) and the
    smallest set whose probability reaches top_p (1 = all); the others get -inf."""
    logits = log_softmax_classes(logits)
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[..., -1:]                           # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = softmax_classes(sorted_logits)
        ahead = probs.cumsum(-1) - probs                                        # mass of the likelier classes
        drop = torch.zeros_like(ahead, dtype=torch.bool).scatter(-1, order, ahead >= top_p)   # class order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_codes(logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Class indices (...) from logits (..., K): Gumbel-max on the filtered logits / temperature; 0 = argmax.
    The noise comes from the generator's device, so a seed gives the same codes on every device.
    Unfiltered logits are not normalised: Gumbel-max ignores a shift of all of a variable's logits,
    and a step at batch 1 is bound by its number of operations."""
    logits = filter_logits(logits, top_k, top_p) if top_k or top_p < 1 else logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits if temperature == 1 else logits / temperature
    return (logits + gumbel_noise(logits.shape, generator, logits.device)).argmax(-1)


def corrupt_codes(codes: torch.Tensor, rate: float, classes: int, generator: torch.Generator | None) -> torch.Tensor:
    """Replace each code of (B, T, N) by a uniformly random class with probability `rate` (T2M-GPT's
    corrupted sequences); the uniforms are drawn on the generator's device."""
    if rate <= 0:
        return codes
    u = noise(torch.rand, codes.shape, generator).to(codes.device)
    random = noise(partial(torch.randint, 0, classes), codes.shape, generator, torch.int64).to(codes.device)
    return torch.where(u < rate, random, codes)

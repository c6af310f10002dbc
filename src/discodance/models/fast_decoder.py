"""A distilled stand-in for the frozen decoder's last block, so that a prior's rollouts, which only
decode, decode at a fraction of the cost.

Why: the conv decoder (blocks.ConvDecoder) ends in a full-resolution block, a transposed
convolution from C to C maps followed by GroupNorm, SiLU and the pixel head. On a CPU that block
is most of a decode (measured at 64x64, C = 32, batch 64, one AVX2 thread: about 115 of 180 ms),
because its norm and activation run over C full-size maps. The chain must encode as well as
decode every frame, so a prior that shares the chain's decoder can be at most
(encode + decode) / decode times as fast as the chain (about 1.3x on that CPU at batch 64).

What: FastTop reads the same half-resolution features as the teacher's last block and maps them
to pixel logits through a narrow transposed convolution (`channels` maps, no norm), SiLU and a
pixel head. It is trained by distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge
in a Neural Network", Sec. 2: the student fits the teacher's soft outputs; here each pixel's
Bernoulli probability, so the loss is the per-pixel binary cross-entropy to the teacher's
probabilities, whose minimum is the teacher's own entropy) on the codes of real frames, one-hot and
blended as rollouts decode them. The teacher stays frozen, so the prior's likelihood figures are
the base VAE's; only rollouts decode with the student (code-prior's `decoder` setting).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import CONV_LAYOUT, ConvDecoder, PixelHead, noise


class FastTop(nn.Module):
    """(B, C, H/2, W/2) features of ConvDecoder.trunk -> (B, out_channels, H', W') pixel logits
    (uncropped, like the teacher's last block)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(in_channels, channels, 4, 2, 1), nn.SiLU(),
                                 PixelHead(channels, out_channels))
        self.to(memory_format=CONV_LAYOUT)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def decode_fast(decoder: ConvDecoder, top: FastTop, z: torch.Tensor) -> torch.Tensor:
    """(B, in_dim) codes -> (B, out_channels, H, W) logits: the teacher's trunk, the student's top."""
    return decoder.crop(top(decoder.trunk(z)))


def distillation_loss(decoder: ConvDecoder, top: FastTop, z: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Codes (M, in_dim) -> the loss: the student's mean per-pixel KL from the teacher's pixel
    Bernoullis (its cross-entropy to the teacher's probabilities less the teacher's entropy, a
    constant: the gradient is the cross-entropy's, and a perfect student scores 0), and figures:
    that KL in nats per pixel and the share of pixels the two decoders threshold differently."""
    with torch.no_grad():
        features = decoder.trunk(z)                                              # (M, C, H/2, W/2)
        teacher = decoder.crop(decoder.last_block(features)).float()           # (M, 1, H, W)
        target = torch.sigmoid(teacher)
        entropy = F.binary_cross_entropy_with_logits(teacher, target)
    student = decoder.crop(top(features)).float()
    loss = F.binary_cross_entropy_with_logits(student, target) - entropy
    with torch.no_grad():
        flips = ((student > 0) != (teacher > 0)).float().mean()
    return loss, {"distil_kl": loss.item(), "distil_flips": flips.item()}


def pick_positions(shape: tuple[int, int], count: int, margin: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random (row, step) positions of a (B, T) grid of codes, steps kept `margin` away from
    both ends (where a blended code has all its neighbours)."""
    B, T = shape
    margin = min(margin, (T - 1) // 2)
    rows = noise(torch.rand, (count,), generator).mul(B).long().clamp_max(B - 1)
    steps = margin + noise(torch.rand, (count,), generator).mul(T - 2 * margin).long().clamp_max(T - 2 * margin - 1)
    return rows, steps


def cpu_has_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 / AMX). Elsewhere it is emulated:
    on an AVX2-only CPU, decoding a batch of 64 frames under bfloat16 autocast took 26x as long as
    in float32 (transposed convolutions fall back to a slow reference kernel)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False

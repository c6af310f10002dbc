"""Where shimmer comes from, removed at the source: the codes a frame sequence is read as, and the
codes a rollout decodes.

The base VAE's posteriors are broad, so frame-by-frame argmax codes flip fine-detail variables
back and forth (A, B, A) while the pose barely moves, and the decoder redraws every flip as pixels
that flip and flip straight back. `smooth_codes` reads real frames with a switching cost (so the
prior trains on codes that keep still while the pose does); `remove_blips` takes one-step
excursions out of sampled codes before they are decoded; `blend_codes` decodes each frame from its
code mixed with its neighbours', so a held code still moves. docs/code-prior.md has the measurements.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def remove_blips(codes: torch.Tensor) -> torch.Tensor:
    """Class indices (B, T, N) with every one-step excursion of a variable (A, B, A) set back to its
    neighbour (A, A, A), left to right. Sampling each step's codes leaves such blips where the
    real data's smoothed codes (smooth_codes) have almost none, and the decoder draws each one as
    pixels that flip and flip straight back: shimmer. The prior still conditions on what it
    sampled; only the decoded codes change."""
    z = codes.clone()
    for t in range(1, z.shape[1] - 1):
        blip = (z[:, t - 1] == z[:, t + 1]) & (z[:, t] != z[:, t - 1])             # (B, N)
        z[:, t] = torch.where(blip, z[:, t - 1], z[:, t])
    return z


def smooth_codes(log_q: torch.Tensor, cost: float) -> torch.Tensor:
    """Per variable, the class sequence maximising sum_t log q(z_t) - cost * [z_t != z_t-1] over
    log-probabilities (B, T, N, K): (B, T, N) indices, by the Viterbi recursion. cost = 0 is the
    argmax. The base VAE's posteriors are broad, so frame-by-frame argmax codes flip fine-detail
    variables back and forth (A, B, A) while the pose barely moves, and the decoder redraws every
    flip: that, and sampling each step's code independently, is where shimmer comes from."""
    B, T, N, K = log_q.shape
    classes = torch.arange(K, device=log_q.device)
    score, back = log_q[:, 0], []                                                # (B, N, K)
    for t in range(1, T):
        best, arg = score.max(-1, keepdim=True)                                  # (B, N, 1)
        stay = score >= best - cost                                              # keeping the class beats switching
        back.append(torch.where(stay, classes, arg))                             # (B, N, K) previous class
        score = torch.maximum(score, best - cost) + log_q[:, t]
    z = [score.argmax(-1)]                                                       # (B, N) last step
    for prev in reversed(back):
        z.append(prev.gather(-1, z[-1][..., None])[..., 0])
    return torch.stack(z[::-1], 1)


def blend_codes(codes: torch.Tensor, classes: int, width: int) -> torch.Tensor:
    """Class indices (B, T, N) -> soft codes (B, T, N, K): each step's one-hot code averaged with its
    neighbours' within +-width steps, weights width + 1 - |offset| (a triangle), renormalised at
    the ends. width = 0 gives the one-hot codes. Smoothed codes hold a class while the pose barely
    moves, and a held code decodes to the very same frame: the dancer freezes. Mixing in the
    neighbours' classes turns each switch into an in-between over 2 * width + 1 frames (the
    gumbel-vae's decoder is trained on relaxed, i.e. soft, codes, so mixtures are in its range)."""
    z = F.one_hot(codes, classes).float()                                         # (B, T, N, K)
    if width == 0:
        return z
    B, T, N, K = z.shape
    kernel = torch.tensor([width + 1.0 - abs(i) for i in range(-width, width + 1)], device=z.device)
    x = z.permute(0, 2, 3, 1).reshape(-1, 1, T)                                   # (B*N*K, 1, T)
    num = F.conv1d(F.pad(x, (width, width)), kernel.view(1, 1, -1))
    den = F.conv1d(F.pad(torch.ones(1, 1, T, device=z.device), (width, width)), kernel.view(1, 1, -1))
    return (num / den).view(B, N, K, T).permute(0, 3, 1, 2)

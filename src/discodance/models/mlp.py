"""Fully connected encoder/decoder for flat data (e.g. 28x28 binarized MNIST).

The layer sizes default to the architecture of the Gumbel-Softmax paper's VAE experiment
(Jang, Gu & Poole 2017, Sec. 4.3: 784-512-256-(latent)-256-512-784 with ReLU units); the decoder
mirrors the encoder's hidden sizes. Both take and return the same tensor layouts as the conv
pair in blocks.py, so the discrete VAE can swap one for the other.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _stack(dims: list[int]) -> list[nn.Module]:
    """Linear + ReLU for every consecutive pair of dims."""
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


class MLPEncoder(nn.Module):
    """(B, C, H, W) frames -> (B, out_dim) features: flatten, then in -> hidden[0] -> ... -> out."""

    def __init__(self, in_channels: int, frame_size, out_dim: int, hidden=(512, 256)):
        super().__init__()
        h, w = frame_size
        dims = [in_channels * h * w, *hidden]
        self.net = nn.Sequential(nn.Flatten(), *_stack(dims), nn.Linear(dims[-1], out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)                                                        # (B, out_dim)


class MLPDecoder(nn.Module):
    """(B, in_dim) codes -> (B, out_channels, H, W) logits; hidden sizes are the encoder's, reversed."""

    def __init__(self, in_dim: int, frame_size, out_channels: int = 1, hidden=(512, 256)):
        super().__init__()
        self.frame_size, self.out_channels = tuple(frame_size), out_channels
        h, w = self.frame_size
        dims = [in_dim, *reversed(tuple(hidden))]
        self.net = nn.Sequential(*_stack(dims), nn.Linear(dims[-1], out_channels * h * w))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), self.out_channels, *self.frame_size)     # (B, C, H, W)

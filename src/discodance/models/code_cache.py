"""A cache of a frozen encoder's outputs keyed on frame content, so a prior over codes trains at
the speed of its own network rather than the encoder's.

The trainer hands every model windows of frames (models/base.py) and knows nothing else; a prior
over a frozen VAE's codes only needs the code of each encoder context in the window. The cache
maps each distinct frame (its exact bytes) to an id and each context of ids to the encoder's
output row, computed once the first time the context is seen. A window of F frames then costs F
dictionary look-ups, and a dataset is encoded once per process (about one epoch of windows).

It lives on the model object but outside its state dict (nothing is saved), and must be
cleared whenever the encoder's weights change (CodePrior.load_state_dict does).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


class ContextCache:
    """encode(contexts (M, c, H, W)) -> rows (M, ...) memoised per distinct context of c frames."""

    def __init__(self, context: int, max_batch: int = 512):
        self.context, self.max_batch = context, max_batch
        self.clear()

    def clear(self) -> None:
        self.frame_ids: dict[bytes, int] = {}
        self.row_of: dict[tuple[int, ...], int] = {}
        self.rows: torch.Tensor | None = None                                   # (R, ...) stored rows
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.row_of)

    def _ids(self, frames: torch.Tensor) -> np.ndarray:
        """Frames (B, F, H, W) in [0, 1] -> integer ids (B, F), one per distinct frame."""
        B, F = frames.shape[:2]
        # x * 255 + 0.5 truncated is round() for frames in [0, 1], in one pass fewer over the batch
        raw = frames.detach().float().mul(255).add_(0.5).to(torch.uint8).cpu().numpy().reshape(B * F, -1)
        ids = self.frame_ids
        return np.array([ids.setdefault(r.tobytes(), len(ids)) for r in raw], dtype=np.int64).reshape(B, F)

    def lookup(self, frames: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """encode's rows for every context of `frames` (B, F, H, W): (B, F - c + 1, ...)."""
        c = self.context
        B, P = frames.shape[0], frames.shape[1] - c + 1
        ids = self._ids(frames)                                                  # (B, F)
        keys = [tuple(row[p:p + c]) for row in ids.tolist() for p in range(P)]  # B * P contexts
        new = {}
        for i, key in enumerate(keys):
            if key not in self.row_of and key not in new:
                new[key] = i
        self.misses += len(new)
        self.hits += len(keys) - len(new)
        if new:
            self._add(frames, list(new.items()), encode)
        index = torch.tensor([self.row_of[k] for k in keys], device=self.rows.device)
        return self.rows[index].view(B, P, *self.rows.shape[1:])

    @torch.no_grad()
    def _add(self, frames: torch.Tensor, items: list[tuple[tuple, int]], encode) -> None:
        c, P = self.context, frames.shape[1] - self.context + 1
        out = []
        for s in range(0, len(items), self.max_batch):
            chunk = items[s:s + self.max_batch]
            ctx = torch.stack([frames[i // P, i % P:i % P + c] for _, i in chunk])   # (m, c, H, W)
            out.append(encode(ctx).detach())
        new_rows = torch.cat(out)
        start = 0 if self.rows is None else len(self.rows)
        self.rows = new_rows if self.rows is None else torch.cat([self.rows, new_rows])
        for j, (key, _) in enumerate(items):
            self.row_of[key] = start + j

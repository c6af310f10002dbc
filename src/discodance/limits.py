"""Up-front size checks: refuse absurd models and outputs with a message naming the number, before
anything is allocated (an allocation error deep inside torch is a traceback, and may take the machine
down with it first)."""
from __future__ import annotations

import torch

from .data.budget import available_memory, human_bytes
from .errors import DiscodanceError, require

# Training holds each parameter four times (weights, gradients, Adam's two moments), in float32.
TRAIN_BYTES_PER_PARAMETER = 16
MAX_PARAMETERS = 2_000_000_000   # far beyond anything these models need, far below an allocator failure


def require_memory(nbytes: float, what: str, share: float = 0.8) -> None:
    """Refuse when `what` needs more than `share` of the memory available now."""
    free = available_memory()
    if free is None:  # the system does not say: do not refuse on a guess
        return
    nbytes = float(min(nbytes, 10 ** 30))  # a 400-digit --steps must not overflow the message
    require(nbytes <= share * free,
            f"{what}: about {human_bytes(nbytes)} of memory needed, but only {human_bytes(free)} is available")


def count_parameters(name: str, config) -> int:
    """Parameters of model `name` built on the meta device: no memory is allocated. Settings that
    no layer accepts (negative sizes, ...) are one-line errors here, not tracebacks later."""
    from .models import build_model
    try:
        with torch.device("meta"):
            model = build_model(name, config)
    except DiscodanceError:
        raise
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DiscodanceError(f"{name} cannot be built with these settings: {first}") from None
    return sum(p.numel() for p in model.parameters())


def check_model_size(name: str, config) -> int:
    """Refuse a model too large to train here; returns its parameter count."""
    n = count_parameters(name, config)
    require(n <= MAX_PARAMETERS, f"{name} with these settings has {n:,} parameters (at most {MAX_PARAMETERS:,})")
    require_memory(n * TRAIN_BYTES_PER_PARAMETER, f"training {name} with {n:,} parameters")
    return n

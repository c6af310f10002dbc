"""A run folder's files: the checkpoint (save/load without pickled code) and the metrics log.

checkpoint.pt holds plain state dicts, the JSON-able run config and the training loop's log state;
it is written to a temporary file and renamed, and loaded with torch.load(weights_only=True), so a
checkpoint can never run code. metrics.jsonl holds one JSON object per log or validation line;
numbers that are not finite are written as null, so every line stays valid JSON.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .errors import DiscodanceError, require

CHECKPOINT = "checkpoint.pt"
LOG = "metrics.jsonl"


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model, optimizers, step: int, elapsed: float, run_config: dict,
                    log_state: dict | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": "discodance-checkpoint", "version": 1, "step": step, "elapsed": elapsed,
                "model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "config": json.loads(json.dumps(run_config)), "log_state": log_state or {}}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint safely (weights_only: tensors and plain containers, no code)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    require(path.is_file(), f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise DiscodanceError(f"{path} is not a readable discodance checkpoint ({type(e).__name__})") from None
    require(isinstance(ckpt, dict) and ckpt.get("format") == "discodance-checkpoint",
            f"{path} is not a discodance checkpoint")
    config = ckpt.get("config")
    require(isinstance(config, dict) and isinstance(config.get("model"), str)
            and isinstance(config.get("model_config"), dict) and isinstance(ckpt.get("model"), dict)
            and isinstance(ckpt.get("step"), int),
            f"{path} is damaged: its config, weights or step are missing")
    return ckpt


# ----------------------------------------------------------------------------- metrics log
def _finite(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


class MetricsLog:
    """Appends one JSON line per record (rank 0 only under torchrun)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(_finite(record), allow_nan=False) + "\n")


def read_log(run: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl; a line cut off by a kill (the last one) is skipped."""
    path = Path(run) / LOG if Path(run).is_dir() else Path(run)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to the checkpoint we resume from: the killed run's tail (and a line it
    was cut off in) goes. Written to a temporary file and renamed."""
    if not path.exists():
        return
    keep = [r for r in read_log(path) if r["step"] <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in keep))
    os.replace(tmp, path)

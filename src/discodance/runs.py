"""Opening runs: the device to use, the distributed process group, and a trained run's model,
checkpoint and dataset in one call (every command that reads a run goes through open_run)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import load_checkpoint
from .data.dataset import load_dataset
from .errors import DiscodanceError, require
from .models import REGISTRY, load_model


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DiscodanceError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    require(device.type != "cuda" or torch.cuda.is_available(), f"device {name} requested but CUDA is not available")
    return device


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    return rank, world, device


def open_run(run: str | Path, data: str | Path | None = None, device: torch.device | str = "cpu",
             sets: dict[str, str] | None = None):
    """(model on `device` in eval mode, checkpoint, dataset) of a run folder or checkpoint file;
    `data` defaults to the dataset the run trained on and must have the run's frame size; `sets`
    change the model's sampling settings (its rollout_settings) for this use only."""
    ckpt = with_rollout_settings(load_checkpoint(run), sets or {})
    dataset = load_dataset(data or ckpt["config"].get("data") or "")
    model = load_model(ckpt, device)
    require(dataset.frame_size == model.frame_size,
            f"the model was trained on {list(model.frame_size)} frames but {dataset.path} has {list(dataset.frame_size)}")
    return model, ckpt, dataset


def with_rollout_settings(ckpt: dict, sets: dict[str, str]) -> dict:
    """The checkpoint with its model settings `sets` replaced, allowed only for settings that change
    how the trained model samples, never its weights' shapes or what it learned."""
    if not sets:
        return ckpt
    name = ckpt["config"]["model"]
    allowed = REGISTRY[name].rollout_settings if name in REGISTRY else ()
    for key in sets:
        require(key in allowed, f"--set {key}: after training, {name} can only change its sampling settings ("
                + (", ".join(allowed) if allowed else "it has none") + ")")
    config = {**ckpt["config"], "model_config": {**ckpt["config"]["model_config"], **sets}}
    return {**ckpt, "config": config}


def sampling_settings(model, sets: dict[str, str] | None) -> dict:
    """{"sampling_settings": the changed settings' typed values} for a command's JSON, or {}."""
    return {"sampling_settings": {k: getattr(model.config, k) for k in sets}} if sets else {}

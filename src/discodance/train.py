"""The one training loop. It knows the model protocol (models/base.py) and nothing model-specific.

- AdamW per optimizer group, warm-up + cosine learning rate over the run's progress, gradient
  clipping, skipped steps on non-finite losses.
- Deterministic data order and noise: the global batch of step s is a pure function of
  (seed, s), and so is every process's Gumbel/pixel noise (seed, rank, s). Nothing hidden in RNG
  state, so --resume from a checkpoint reproduces the uninterrupted run bit for bit on CPU.
- Distributed: under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel
  (gloo on CPU, NCCL on GPUs); each rank takes its contiguous slice of the global batch; rank 0
  alone logs, validates and writes checkpoints.
- Run folder: config.json, metrics.jsonl (one JSON object per log/validation line) and
  checkpoint.pt (plain state dicts + JSON-able config, written to a temporary file then renamed;
  loaded with torch.load(weights_only=True), so no pickled code ever runs).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import __version__
from .config import TrainConfig, to_dict, write_json_atomic
from .data.dataset import WindowDataset, load_dataset
from .errors import DiscodanceError, require
from .metrics import evaluate_model
from .models import build_model, model_config

CHECKPOINT = "checkpoint.pt"


# ----------------------------------------------------------------------------- environment
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


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (None where the OS does not say, e.g. Windows).

    On Linux this reads VmHWM (the high-water mark of this process's own address space). The
    usual getrusage(RUSAGE_SELF).ru_maxrss is not used there: it survives fork and execve, so a
    child started by a big parent (a `compare` holding evaluation buffers) reports the parent's
    peak as its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The noise source of one (process, step): a pure function of its arguments."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + step) % (2 ** 63))


def global_batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Indices of the global batch of `step`: a stream of seeded permutations, one per epoch."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(positions // n):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
        mask = positions // n == epoch
        out[mask] = perm[positions[mask] % n]
    return out


def rank_slice(batch_size: int, rank: int, world: int) -> slice:
    require(batch_size % world == 0, f"batch_size {batch_size} must be divisible by the {world} processes")
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay from lr to lr * final_lr_ratio as progress goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return cfg.lr * (cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * cos)


def make_optimizers(model, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One AdamW per named group; no weight decay on biases, norms and priors (1-D tensors)."""
    opts = {}
    for name, params in model.optimizer_groups().items():
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        opts[name] = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                        {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    return opts


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model, optimizers, step: int, elapsed: float, run_config: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": "discodance-checkpoint", "version": 1, "step": step, "elapsed": elapsed,
                "model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "config": json.loads(json.dumps(run_config))}, tmp)
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
    return ckpt


def model_from_checkpoint(ckpt: dict, device="cpu"):
    cfg = ckpt["config"]
    model = build_model(cfg["model"], cfg["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise DiscodanceError(f"the checkpoint's weights do not fit its {cfg['model']} settings "
                              "(edited config or a different discodance version?)") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- run folder
def prepare_run_dir(out: Path, resume: bool, overwrite: bool, rank: int, data: Path) -> None:
    """Create the run folder; with overwrite, empty it first -- but never delete the dataset
    being trained on when it lives inside the run folder (as the demo's does)."""
    if resume:
        require((out / CHECKPOINT).is_file(), f"cannot resume: {out / CHECKPOINT} does not exist")
        return
    data = Path(data).resolve()
    existing = [p for p in out.iterdir() if p.resolve() != data] if out.is_dir() else []
    if existing:
        require(overwrite, f"run folder {out} already exists (pass --overwrite to replace it, or --resume)")
        if rank == 0:
            for p in existing:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (the killed run's tail)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


class MetricsLog:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- the loop
def train(data: str | Path, out: str | Path, model_name: str | None = None, model_overrides: dict | None = None,
          cfg: TrainConfig | None = None, resume: bool = False, overwrite: bool = False,
          stop_at: int | None = None, progress: bool = True) -> Path:
    """Train `model_name` on dataset `data` into run folder `out`; returns the checkpoint path.

    stop_at ends this process right after that step, as if it were killed there (no extra
    checkpoint): used to test --resume. Everything else about the run comes from `cfg` and the model's config.
    """
    out = Path(out)
    dataset = load_dataset(data)
    if resume:
        require((out / CHECKPOINT).is_file(), f"cannot resume: {out / CHECKPOINT} does not exist")
        ckpt = load_checkpoint(out)
        saved = ckpt["config"]
        require(not model_overrides, "model settings cannot change on --resume (drop --set, or start a new run)")
        require(model_name in (None, saved["model"]),
                f"{out} was trained with model {saved['model']}, not {model_name}")
        model_name, mcfg = saved["model"], model_config(saved["model"], dataset.frame_size, saved["model_config"])
        require(tuple(saved["model_config"]["frame_size"]) == dataset.frame_size,
                f"checkpoint frames are {saved['model_config']['frame_size']} but {data} has {list(dataset.frame_size)}")
        cfg = TrainConfig(**{**saved["train"], **({"steps": cfg.steps, "minutes": cfg.minutes} if cfg else {})})
    else:
        ckpt, cfg, model_name = None, cfg or TrainConfig(), model_name or "gumbel-vae"
        mcfg = model_config(model_name, dataset.frame_size, model_overrides)
    cfg = dataclasses.replace(cfg, betas=tuple(cfg.betas)).validate()
    rank, world, device = init_distributed(cfg.device)
    prepare_run_dir(out, resume, overwrite, rank, Path(data))
    if world > 1:
        dist.barrier()

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(model_name, mcfg).to(device)
    windows = WindowDataset(dataset, "train", model.window)
    local = rank_slice(cfg.batch_size, rank, world)
    run_config = {"model": model_name, "model_config": to_dict(mcfg), "train": to_dict(cfg),
                  "data": str(Path(data).resolve()), "frame_size": list(dataset.frame_size),
                  "fps": dataset.fps, "world_size": world, "device": device.type,
                  "discodance_version": __version__, "torch_version": torch.__version__}
    optimizers = make_optimizers(model, cfg)
    step, elapsed = 0, 0.0
    log = MetricsLog(out / "metrics.jsonl", rank == 0)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        for k, o in optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        if rank == 0:
            truncate_log(log.path, step)
    if rank == 0:
        write_json_atomic(out / "config.json", run_config)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    bar = tqdm(total=cfg.steps, initial=step, disable=not progress or rank != 0, desc=f"train {model_name}",
               unit="step", dynamic_ncols=True, file=sys.stderr)
    acc, acc_n, frames_seen, bad_steps = {}, 0, 0, 0
    t_start = time.perf_counter() - elapsed
    t_log = time.perf_counter()
    while step < cfg.steps and not (cfg.minutes and elapsed >= cfg.minutes * 60):
        idx = global_batch_indices(step, cfg.batch_size, len(windows), cfg.seed)[local]
        batch = torch.stack([windows[i] for i in idx]).to(device, non_blocking=True).float().div_(255.0)
        progress_frac = max(step / cfg.steps, elapsed / (cfg.minutes * 60) if cfg.minutes else 0.0)
        lr = learning_rate(cfg, step, progress_frac)
        for o in optimizers.values():
            for g in o.param_groups:
                g["lr"] = lr
        logs, finite = train_step(net, model, optimizers, batch, step, cfg, rank)
        bad_steps = 0 if finite else bad_steps + 1
        require(bad_steps < 20, f"training diverged: the loss was not finite for 20 steps in a row (step {step})")
        step += 1
        frames_seen += len(batch) * world
        elapsed = time.perf_counter() - t_start
        for k, v in logs.items():
            acc[k] = acc.get(k, 0.0) + v
        acc_n += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            record = {"step": step, "time": round(elapsed, 3), "lr": lr,
                      "frames_per_s": frames_seen / max(now - t_log, 1e-9), "max_rss_mb": peak_rss_mb()}
            record.update({k: v / acc_n for k, v in acc.items()})
            log.write(record)
            bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}")
            acc, acc_n, frames_seen, t_log = {}, 0, 0, now
        stopping = step >= cfg.steps or (cfg.minutes and elapsed >= cfg.minutes * 60)
        if rank == 0 and (step % cfg.eval_every == 0 or stopping):
            val = evaluate_model(model, dataset, "val", samples=1, batch_size=cfg.batch_size, seed=cfg.seed,
                                 max_windows=cfg.eval_batches * cfg.batch_size, device=device)
            log.write({"step": step, "time": round(elapsed, 3), **{f"val_{k}": v for k, v in val.items()
                                                                    if isinstance(v, float)}})
        if rank == 0 and (step % cfg.ckpt_every == 0 or stopping):
            save_checkpoint(out / CHECKPOINT, model, optimizers, step, elapsed, run_config)
        if step == stop_at:
            break
    bar.close()
    if world > 1:
        dist.barrier()
    return out / CHECKPOINT


def train_step(net, model, optimizers, batch, step, cfg: TrainConfig, rank: int) -> tuple[dict, bool]:
    """One optimizer step for every group; returns (logs, whether the loss was finite)."""
    loss, logs = net(batch, step=step, generator=step_generator(cfg.seed, step, rank))
    losses = loss if isinstance(loss, dict) else {next(iter(optimizers)): loss}
    if not all(torch.isfinite(v).all() for v in losses.values()):
        for o in optimizers.values():
            o.zero_grad(set_to_none=True)
        return {}, False
    groups = model.optimizer_groups()
    names = list(losses)
    for i, name in enumerate(names):
        optimizers[name].zero_grad(set_to_none=True)
        # inputs= keeps one group's loss from writing gradients into another group's parameters
        losses[name].backward(inputs=groups[name] if len(names) > 1 else None, retain_graph=i < len(names) - 1)
    for name in names:
        logs[f"grad_norm_{name}"] = float(torch.nn.utils.clip_grad_norm_(groups[name], cfg.grad_clip))
        optimizers[name].step()
    return logs, True

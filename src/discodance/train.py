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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import __version__
from .checkpoint import CHECKPOINT, LOG, MetricsLog, load_checkpoint, save_checkpoint, truncate_log
from .config import TrainConfig, from_dict, to_dict, write_json_atomic
from .data.dataset import load_dataset
from .errors import require
from .folders import LOCK_NAME, FolderLock, Replacement, check_target
from .limits import check_model_size
from .evaluation.likelihood import evaluate_model, load_windows
from .models import REGISTRY, build_model, model_config, saved_model_config
from .optim import clip_and_step, learning_rate, make_optimizers  # noqa: F401  (make_optimizers: part of the public API)
from .progress import progress_bar
from .runs import init_distributed

MAX_BAD_STEPS = 5  # non-finite losses in a row before the run stops
RETIRED_SETTINGS = {"num_workers"}  # in older runs' saved settings; never read, so dropped on --resume


# ----------------------------------------------------------------------------- environment
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


# ----------------------------------------------------------------------------- run folder
def _only_data(out: Path, data: Path) -> bool:
    """The demo trains on a dataset inside its own run folder: the one thing allowed in a new run's folder."""
    inside = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.is_dir() else []
    return bool(inside) and all(p.resolve() == data.resolve() for p in inside)


def _claim_run_dir(out: Path, data: Path, resume: bool, overwrite: bool) -> Replacement | None:
    """Check (and with overwrite, clear) the run folder; the caller holds its lock. Returns the
    Replacement holding the old run aside until the new one is complete, if there was one.
    (A resumed run's checkpoint was checked by _settings.)"""
    if resume:
        return None
    return Replacement(out) if _replaces_a_run(out, data, overwrite) else None


def _replaces_a_run(out: Path, data: Path, overwrite: bool) -> bool:
    """Whether `out` holds an old run to replace; refuses every unsafe target (folders.check_target)."""
    if _only_data(out, data) and not overwrite:
        return False
    return check_target(out, "run", inputs=[data], overwrite=overwrite)


# ----------------------------------------------------------------------------- the loop
@dataclass
class LogState:
    """Running sums behind the next metrics.jsonl line; saved in checkpoints so that a resumed run
    writes exactly the lines the uninterrupted run would have written."""
    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    frames: int = 0
    skipped: int = 0

    def add(self, logs: dict, frames: int) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.frames += frames

    def means(self) -> dict:
        out = {k: v / self.counts[k] for k, v in self.sums.items()}
        if self.skipped:
            out["skipped_steps"] = self.skipped
        return out


@dataclass
class Run:
    """Everything one training process holds; the stages below read and update it."""
    out: Path
    dataset: object
    model: object
    net: object
    optimizers: dict
    cfg: TrainConfig
    run_config: dict
    rank: int
    world: int
    device: torch.device
    log: MetricsLog
    step: int = 0
    elapsed: float = 0.0
    acc: LogState = field(default_factory=LogState)
    bad_in_a_row: int = 0
    cpu: float = 0.0                 # CPU seconds of the training process(es) of this rank, over resumes
    plateau: Plateau = field(default_factory=lambda: Plateau())

    @property
    def patience(self) -> int:
        """TrainConfig.patience, or 0 (no plateau rule) for a model whose validation IoU says nothing
        about when its training is done (DanceModel.plateau_stops)."""
        return self.cfg.patience if self.model.plateau_stops else 0

    def stopping(self) -> bool:
        return (self.step >= self.cfg.steps or bool(self.cfg.minutes and self.elapsed >= self.cfg.minutes * 60)
                or self.plateau.reached(self.patience, self.cfg.min_improvement))


@dataclass
class Plateau:
    """Validation IoUs so far: with TrainConfig.patience = K, a run has converged when the best of
    its last K validations is less than min_improvement (relative) above the best before them."""
    history: list = field(default_factory=list)

    def update(self, quality: float | None) -> None:
        if quality is not None:
            self.history.append(float(quality))

    def reached(self, patience: int, min_improvement: float) -> bool:
        if patience <= 0 or len(self.history) <= patience:
            return False
        before, recent = max(self.history[:-patience]), max(self.history[-patience:])
        return recent < before * (1 + min_improvement) + 1e-12


def train(data: str | Path, out: str | Path, model_name: str | None = None, model_overrides: dict | None = None,
          cfg: TrainConfig | None = None, resume: bool = False, overwrite: bool = False,
          stop_at: int | None = None, progress: bool = True) -> Path:
    """Train `model_name` on dataset `data` into run folder `out`; returns the checkpoint path.

    stop_at ends this process right after that step, as if it were killed there (no extra
    checkpoint): used to test --resume. Everything else about the run comes from `cfg` and the model's config.
    """
    out, data = Path(out), Path(data)
    dataset = load_dataset(data)
    ckpt, model_name, mcfg, cfg = _settings(dataset, out, model_name, model_overrides, cfg, resume)
    rank, world, device = init_distributed(cfg.device)
    if rank == 0 and not resume:  # refuse a bad target before the lock file touches it ...
        _replaces_a_run(out, data, overwrite)
    with FolderLock(out, enabled=rank == 0):  # ... and decide for good once we hold the folder
        replacement = _claim_run_dir(out, data, resume, overwrite) if rank == 0 else None
        created = not resume
        try:
            run = _build(out, dataset, data, model_name, mcfg, cfg, rank, world, device, resume)
            if ckpt is not None:
                _restore(run, ckpt)
            _run_loop(run, stop_at, progress, model_name)
        except BaseException:
            if rank == 0 and created and not (out / CHECKPOINT).is_file():
                _undo(out, replacement)  # nothing worth keeping was written: leave the folder as it was
            raise
        if replacement is not None:
            replacement.commit()
    if world > 1:
        dist.barrier()
    return out / CHECKPOINT


def _settings(dataset, out: Path, model_name, model_overrides, cfg, resume: bool):
    """(checkpoint or None, model name, model config, loop config), all validated before any write."""
    if resume:
        require((out / CHECKPOINT).is_file(), f"cannot resume: {out / CHECKPOINT} does not exist")
        ckpt = load_checkpoint(out)
        saved = ckpt["config"]
        require(not model_overrides, "model settings cannot change on --resume (drop --set, or start a new run)")
        require(model_name in (None, saved["model"]),
                f"{out} was trained with model {saved['model']}, not {model_name}")
        require(saved["model"] in REGISTRY, f"{out} was trained with an unknown model {saved['model']!r}")
        model_name = saved["model"]
        mcfg = saved_model_config(model_name, dataset.frame_size, saved["model_config"], ckpt["model"])
        require(tuple(saved["model_config"]["frame_size"]) == dataset.frame_size,
                f"checkpoint frames are {saved['model_config']['frame_size']} but {dataset.path} has {list(dataset.frame_size)}")
        require(isinstance(saved.get("train"), dict), f"{out / CHECKPOINT} has no training settings")
        saved_train = {k: v for k, v in saved["train"].items() if k not in RETIRED_SETTINGS}
        cfg = from_dict(TrainConfig, {**saved_train, **({"steps": cfg.steps, "minutes": cfg.minutes} if cfg else {})})
    else:
        ckpt, cfg, model_name = None, cfg or TrainConfig(), model_name or "gumbel-vae"
        mcfg = model_config(model_name, dataset.frame_size, model_overrides)
    cfg = dataclasses.replace(cfg, betas=tuple(cfg.betas)).validate()
    check_model_size(model_name, mcfg)
    return ckpt, model_name, mcfg, cfg


def _undo(out: Path, replacement: Replacement | None) -> None:
    if replacement is not None:
        replacement.rollback()
    elif out.is_dir():
        for p in out.iterdir():
            if p.name in ("config.json", LOG) or p.name.startswith(".checkpoint"):
                p.unlink()


def _build(out: Path, dataset, data: Path, model_name: str, mcfg, cfg: TrainConfig, rank: int, world: int,
           device: torch.device, resume: bool) -> Run:
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(model_name, mcfg)
    if not resume:
        model.load_pretrained()
    model = model.to(device)
    run_config = {"model": model_name, "model_config": to_dict(mcfg), "train": to_dict(cfg),
                  "data": str(data.resolve()), "frame_size": list(dataset.frame_size),
                  "fps": dataset.fps, "world_size": world, "device": device.type,
                  "discodance_version": __version__, "torch_version": torch.__version__}
    if rank == 0:
        write_json_atomic(out / "config.json", run_config)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    return Run(out, dataset, model, net, make_optimizers(model, cfg), cfg, run_config, rank, world, device,
               MetricsLog(out / LOG, rank == 0))


def _restore(run: Run, ckpt: dict) -> None:
    """Weights, optimizer moments, step, clock and the half-filled log line of a checkpoint."""
    run.model.load_state_dict(ckpt["model"])
    for k, o in run.optimizers.items():
        o.load_state_dict(ckpt["optimizers"][k])
    run.step, run.elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    state = ckpt.get("log_state") or {}
    run.cpu = float(state.get("cpu_seconds", 0.0))
    run.plateau = Plateau([float(q) for q in state.get("plateau_history", [])])
    run.acc = LogState(dict(state.get("sums", {})), dict(state.get("counts", {})),
                       int(state.get("frames", 0)), int(state.get("skipped", 0)))
    if run.rank == 0:
        truncate_log(run.log.path, run.step)


def _run_loop(run: Run, stop_at: int | None, progress: bool, model_name: str) -> None:
    cfg = run.cfg
    window = run.model.window
    starts = run.dataset.window_starts("train", window)
    require(len(starts) > 0, f"split 'train' of {run.dataset.path} has no run of {window} consecutive frames")
    local = rank_slice(cfg.batch_size, run.rank, run.world)
    bar = progress_bar(total=cfg.steps, initial=run.step, enabled=progress and run.rank == 0,
                       desc=f"train {model_name}", unit="step")
    t_start = time.perf_counter() - run.elapsed
    cpu_start = time.process_time() - run.cpu
    t_log = time.perf_counter()
    while not run.stopping():
        idx = global_batch_indices(run.step, cfg.batch_size, len(starts), cfg.seed)[local]
        batch = load_windows(run.dataset, starts[idx], window, run.device)
        lr = _run_step(run, batch)
        run.elapsed, run.cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
        bar.update(1)
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            t_log = _log(run, lr, t_log, bar)
        if run.rank == 0 and (run.step % cfg.eval_every == 0 or run.stopping()):
            _validate(run)
        if run.world > 1 and run.patience and run.step % cfg.eval_every == 0:
            _share_plateau(run)
        if run.rank == 0 and (run.step % cfg.ckpt_every == 0 or run.stopping()):
            _save(run)
        if run.step == stop_at:
            break
    bar.close()


def _run_step(run: Run, batch: torch.Tensor) -> float:
    """One optimizer step at the scheduled learning rate; a non-finite loss skips the step."""
    cfg = run.cfg
    progress_frac = max(run.step / cfg.steps, run.elapsed / (cfg.minutes * 60) if cfg.minutes else 0.0)
    lr = learning_rate(cfg, run.step, progress_frac)
    for o in run.optimizers.values():
        for g in o.param_groups:
            g["lr"] = lr
    logs, finite = train_step(run.net, run.model, run.optimizers, batch, run.step, cfg, run.rank)
    run.bad_in_a_row = 0 if finite else run.bad_in_a_row + 1
    require(run.bad_in_a_row < MAX_BAD_STEPS,
            f"training diverged: the loss was not finite for {MAX_BAD_STEPS} steps in a row (at step {run.step}); "
            f"the last good checkpoint is kept -- try a lower --lr")
    run.step += 1
    if finite:
        run.acc.add(logs, len(batch) * run.world)
    else:
        run.acc.skipped += 1
    return lr


def _log(run: Run, lr: float, t_log: float, bar) -> float:
    now = time.perf_counter()
    record = {"step": run.step, "time": round(run.elapsed, 3), "cpu_seconds": round(run.cpu, 3), "lr": lr,
              "frames_per_s": run.acc.frames / max(now - t_log, 1e-9), "max_rss_mb": peak_rss_mb()}
    record.update(run.acc.means())
    run.log.write(record)
    if record.get("loss") is not None:
        bar.set_postfix(loss=f"{record['loss']:.4f}")
    run.acc = LogState()
    return now


def _validate(run: Run) -> None:
    val = evaluate_model(run.model, run.dataset, "val", samples=1, batch_size=run.cfg.batch_size, seed=run.cfg.seed,
                         max_windows=run.cfg.eval_batches * run.cfg.batch_size, device=run.device)
    run.plateau.update(val.get("iou"))
    run.log.write({"step": run.step, "time": round(run.elapsed, 3), "cpu_seconds": round(run.cpu, 3),
                   **{f"val_{k}": v for k, v in val.items() if isinstance(v, float)},
                   **({"converged": True} if run.plateau.reached(run.patience, run.cfg.min_improvement) else {})})


def _share_plateau(run: Run) -> None:
    """Rank 0 validates; every rank must stop at the same step when it says the run converged."""
    n = torch.tensor([len(run.plateau.history)], device=run.device)
    dist.broadcast(n, 0)
    history = torch.tensor(run.plateau.history if run.rank == 0 else [0.0] * int(n.item()),
                           dtype=torch.float64, device=run.device)
    dist.broadcast(history, 0)
    run.plateau.history = history.tolist()


def _save(run: Run) -> None:
    state = {"sums": run.acc.sums, "counts": run.acc.counts, "frames": run.acc.frames, "skipped": run.acc.skipped,
             "cpu_seconds": run.cpu, "plateau_history": run.plateau.history}
    save_checkpoint(run.out / CHECKPOINT, run.model, run.optimizers, run.step, run.elapsed, run.run_config, state)


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
        logs[f"grad_norm_{name}"] = float(clip_and_step(optimizers[name], groups[name], cfg.grad_clip))
    return logs, True

"""`discodance evaluate --full`: how good and how costly a trained run is, on held-out data.

One call rolls the model out from held-out seed frames to the longest horizon (256 frames by
default), embeds real and generated frames with the dataset's evaluation network (evalnet.py) and
measures, next to the likelihood bounds of likelihood.evaluate_model:
- frame quality: Fréchet distance between generated and real test frames in the evaluation
  network's features (Heusel et al. 2017, eq. 6), against the train-vs-test real floor;
- motion quality (datasets with poses): the pose probe's joints of each 16-frame segment give
  kinetic and geometric features (motion.py; Li et al. 2021; Siyao et al. 2022), compared with
  real test segments by FID_k / FID_g and spread by Dist_k / Dist_g; freeze rate and jitter;
- shimmer: the share of pixels that flip and flip straight back (stats.flicker), for the
  rollouts and for the real test frames;
- rollout health at each horizon: share of implausible frames (far from every real frame in
  feature space, or the network's confidence outside the real range) and of rollouts collapsed
  to a static pose or a short loop (stats.collapse);
- cost: parameters, training wall time (both stages for code-prior), training and rollout
  frames/s, peak memory.
Every number that can be measured on real data is measured there too ("real"), so a reader sees
what "good" is on this dataset.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_checkpoint, read_log
from ..data.batches import load_windows, seed_starts
from ..data.dataset import Dataset
from ..errors import require
from . import motion as ft
from . import stats as mt
from .evalnet import EvalNetConfig, held_out_indices, load_or_train, nearest_distance
from .likelihood import evaluate_model

HORIZONS = (16, 64, 256)


@dataclass
class FullEvalConfig:
    """Settings of the full evaluation; the report states them."""
    rollouts: int = 32                 # seed frames (sequences) rolled out per model
    horizons: tuple[int, ...] = HORIZONS
    segment: int = 16                  # frames per motion segment and per horizon window
    temperature: float = 1.0
    feedback: str = "binary"
    samples: int = 100                 # importance samples of the likelihood bound
    max_windows: int | None = None     # likelihood on at most this many test windows (None: cover each test frame ~twice)
    batch_size: int = 64
    seed: int = 0
    freeze_speed: float = 0.0025       # a step is frozen when no joint moves > this * frame height
    health_window: int = 32            # frames up to a horizon checked for a static pose or a loop
    evalnet: EvalNetConfig = field(default_factory=EvalNetConfig)

    def validate(self) -> "FullEvalConfig":
        require(self.rollouts >= 2, f"rollouts must be >= 2, got {self.rollouts}")
        require(self.horizons and min(self.horizons) >= 4, f"horizons must be >= 4 frames, got {self.horizons}")
        require(self.segment >= 4, f"segment must be >= 4 frames, got {self.segment}")
        return self


# ----------------------------------------------------------------------------- real reference
def motion_features(poses: np.ndarray, joints, fps: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Kinetic (N, 3J) and geometric (N, G) features of segments (N, L, J, 2)."""
    kin = np.stack([ft.kinetic_features(p, fps) for p in poses])
    geo = None if joints is None else np.stack([ft.geometric_features(p, joints, fps) for p in poses])
    return kin, geo


def probe_skeleton(dataset: Dataset, ref: dict):
    """The skeleton of the joints the evaluation network's pose probe reads (None without poses)."""
    names = (dataset.meta.get("poses") or {}).get("joint_names")
    return ft.resolve_skeleton([names[i] for i in ref["joints"]]) if names and "joints" in ref else None


def real_reference(dataset: Dataset, net, ref: dict, cfg: FullEvalConfig, device) -> dict:
    """Evalnet outputs of real segments of L frames: test (stride L/4, the comparison set) and
    train (stride L/2, at most 400: the standardisation and the floors), plus all test frames."""
    L = cfg.segment
    out = {}
    for split in ("test", "train"):
        starts = dataset.window_starts(split, L, max(1, L // (4 if split == "test" else 2)))
        if split == "train" and len(starts) > 400:
            starts = starts[np.linspace(0, len(starts) - 1, 400).round().astype(int)]
        if len(starts) == 0:
            out[split] = None
            continue
        idx = (starts[:, None] + np.arange(L)[None]).reshape(-1)
        uniq, inv = np.unique(idx, return_inverse=True)
        emb = net.embed(dataset.frames[uniq], device=device)
        seg = {k: v[inv].reshape(len(starts), L, *v.shape[1:]) for k, v in emb.items()}
        seg["frames"] = np.asarray(dataset.frames[idx]).reshape(len(starts), L, *dataset.frame_size)
        out[split] = seg
    held = net.embed(dataset.frames[held_out_indices(dataset)], device=device)     # validation, then test
    n_test = len(dataset.indices("test"))
    out["held_out_frames"] = held
    out["test_frames"] = {k: v[len(v) - n_test:] for k, v in held.items()}
    return out


# ----------------------------------------------------------------------------- rollouts
@torch.no_grad()
def timed_rollouts(model, dataset: Dataset, cfg: FullEvalConfig, device) -> tuple[np.ndarray, dict]:
    """uint8 rollouts (B, 1 + H, h, w) from cfg.rollouts held-out seeds, and their speed."""
    steps = max(cfg.horizons)
    starts = seed_starts(dataset, "test", model.seed_frames, cfg.rollouts)
    gen = torch.Generator().manual_seed(cfg.seed)
    chunks, t0 = [], time.perf_counter()
    for i in range(0, len(starts), 16):  # chunks keep float frames of large sizes out of memory
        seed = load_windows(dataset, starts[i:i + 16], model.seed_frames, device)
        out = model.rollout(seed, steps, gen, temperature=cfg.temperature, feedback=cfg.feedback)
        chunks.append((out.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    batch_seconds = time.perf_counter() - t0
    one = load_windows(dataset, starts[:1], model.seed_frames, device)
    t1 = time.perf_counter()
    model.rollout(one, 32, torch.Generator().manual_seed(cfg.seed), temperature=cfg.temperature,
                  feedback=cfg.feedback)
    single_seconds = time.perf_counter() - t1
    speed = {"rollout_fps_batch": len(starts) * steps / batch_seconds, "rollout_batch": min(16, len(starts)),
             "rollout_fps_single": 32 / single_seconds}
    return np.concatenate(chunks), speed


# ----------------------------------------------------------------------------- metrics
def implausible_flags(emb: dict, ref: dict) -> np.ndarray:
    """A frame is implausible when its nearest real training frame in feature space is farther
    than 99% of held-out real frames' are, or the network is less sure of it (pose uncertainty or
    reconstruction error) than of 99.5% of held-out real frames (evalnet.reference_stats)."""
    far = nearest_distance(emb["features"], ref["reference_features"]) > ref["nn_threshold"]
    return far | (emb["confidence"] > ref["confidence_max"])


def collapse_shares(windows) -> dict:
    """Share of windows (each (T, h, w)) that are static / looping (stats.collapse)."""
    kinds = [mt.collapse(w) for w in windows]
    if not kinds:
        return {}
    return {"static": kinds.count("static") / len(kinds), "loop": kinds.count("loop") / len(kinds)}


def motion_block(poses: np.ndarray, frames: np.ndarray, joints, fps: float, cfg: FullEvalConfig,
                 height: int) -> dict:
    """Freeze rate, jitter and features of segments (N, L, J, 2) with their frames (N, L, h, w)."""
    kin, geo = motion_features(poses, joints, fps)
    return {"kinetic": kin, "geometric": geo,
            "freeze_rate": mt.freeze_rate(poses, cfg.freeze_speed * height),
            "jitter": mt.jitter(poses),
            "pixel_freeze_rate": float((mt.pixel_change(frames) < mt.STATIC_CHANGE).mean())}


def compare_motion(gen: dict, real: dict, train: dict | None, floor: bool = True) -> dict:
    """FID_k, FID_g against real test segments and the spreads Dist_k, Dist_g. Features are
    standardised by real training segments (Bailando standardises by the real set; the training
    split is the larger, more varied one, so a short test block's tiny variances cannot blow a
    dimension up); floor=True adds the train-vs-test FID."""
    out = {}
    for key, short in (("kinetic", "k"), ("geometric", "g")):
        if gen[key] is None or real[key] is None or len(real[key]) < 2:
            continue
        base = train[key] if train is not None and len(train[key]) >= 2 else real[key]
        t, r, g = mt.normalize_like(base, real[key], gen[key])
        out[f"fid_{short}"] = mt.frechet_distance(g, r)
        out[f"dist_{short}"] = mt.mean_pairwise_distance(g)
        if floor:
            out[f"real_dist_{short}"] = mt.mean_pairwise_distance(r)
            if train is not None:
                out[f"fid_{short}_floor"] = mt.frechet_distance(t, r)
                # the training segments' own spread: a prior that ranges over the moves it learnt
                # reaches this, and a short test block can be much less varied (docs/evaluation.md)
                out[f"real_train_dist_{short}"] = mt.mean_pairwise_distance(t)
    return out


def rollout_metrics(frames: np.ndarray, net, ref: dict, real: dict, joints, dataset: Dataset,
                    cfg: FullEvalConfig, device) -> dict:
    """Frame, motion and health metrics of rollouts (B, 1 + H, h, w) uint8 against the real data."""
    B, T = frames.shape[:2]
    L, height = cfg.segment, dataset.frame_size[0]
    emb = net.embed(frames.reshape(B * T, *frames.shape[2:]), device=device)
    emb = {k: v.reshape(B, T, *v.shape[1:]) for k, v in emb.items()}
    bad = implausible_flags({k: v.reshape(B * T, *v.shape[2:]) for k, v in emb.items()}, ref).reshape(B, T)
    real_feats = real["test_frames"]["features"]
    # frames of the real training segments: where a long rollout should stay once it has left the
    # short test block's moves behind (its distance to the test block alone grows as it wanders)
    train_feats = None if real["train"] is None else real["train"]["features"].reshape(-1, real_feats.shape[-1])
    out = {"frame_fid": mt.frechet_distance(emb["features"][:, 1:].reshape(-1, emb["features"].shape[-1]), real_feats),
           "implausible": float(bad[:, 1:].mean()), "flicker": mt.flicker(frames[:, 1:]), "horizons": {}}
    poses = emb.get("poses")
    n_seg = (T - 1) // L
    motion = poses is not None and n_seg > 0 and real["test"] is not None
    if motion:
        seg = lambda a: a[:, 1:1 + n_seg * L].reshape(B * n_seg, L, *a.shape[2:])
        gen_motion = motion_block(seg(poses), seg(frames), joints, dataset.fps, cfg, height)
        real_m = motion_block(real["test"]["poses"], real["test"]["frames"], joints, dataset.fps, cfg, height)
        train_m = None if real["train"] is None else motion_block(real["train"]["poses"], real["train"]["frames"],
                                                                   joints, dataset.fps, cfg, height)
        out.update(compare_motion(gen_motion, real_m, train_m))
        out.update({k: gen_motion[k] for k in ("freeze_rate", "jitter", "pixel_freeze_rate")})
        out.update({f"real_{k}": real_m[k] for k in ("freeze_rate", "jitter", "pixel_freeze_rate")})
    else:
        out["pixel_freeze_rate"] = float((mt.pixel_change(frames[:, 1:]) < mt.STATIC_CHANGE).mean())
    for h in cfg.horizons:
        h = min(h, T - 1)
        w = slice(max(1, h - L + 1), h + 1)
        feats = emb["features"][:, w].reshape(-1, emb["features"].shape[-1])
        row = {"frame_fid": mt.frechet_distance(feats, real_feats),
               "implausible": float(bad[:, w].mean()), "flicker": mt.flicker(frames[:, w]),
               **collapse_shares(frames[:, max(1, h - cfg.health_window + 1):h + 1])}
        if train_feats is not None:
            row["frame_fid_train"] = mt.frechet_distance(feats, train_feats)
        if motion and h >= L:
            g = motion_block(poses[:, h - L + 1:h + 1], frames[:, h - L + 1:h + 1], joints, dataset.fps, cfg, height)
            row.update({k: v for k, v in compare_motion(g, real_m, train_m, floor=False).items() if k.startswith("fid")})
            row["freeze_rate"] = g["freeze_rate"]
        out["horizons"][str(h)] = row
    return out


def real_health(dataset: Dataset, real: dict, ref: dict, cfg: FullEvalConfig) -> dict:
    """The health numbers of real held-out data: what a perfect model would score (implausible: over
    validation and test frames, which set its thresholds; the rest: test). Collapse is checked
    on windows of cfg.health_window frames, or the longest a test block holds."""
    out = {"implausible": float(implausible_flags(real["held_out_frames"], ref).mean()), "flicker": real_flicker(dataset)}
    longest = max(e - b for b, e in dataset.blocks("test"))
    n = min(cfg.health_window, longest)
    starts = dataset.window_starts("test", n, max(1, n // 2))
    if len(starts):
        out.update(collapse_shares(np.asarray(dataset.frames[s:s + n]) for s in starts))
    return out


def real_flicker(dataset: Dataset) -> float:
    """stats.flicker over the real test blocks (each block on its own, weighted by its length)."""
    values = [(mt.flicker(np.asarray(dataset.frames[b:e])), e - b - 2) for b, e in dataset.blocks("test") if e - b >= 3]
    total = sum(n for _, n in values)
    return sum(v * n for v, n in values) / total if total else float("nan")


# ----------------------------------------------------------------------------- cost
def training_cost(model, ckpt: dict, run_dir: Path | None) -> dict:
    """Parameters and training cost read from the checkpoint and the run's metrics.jsonl; for a
    code-prior run the base gumbel-vae's wall time is added (both stages)."""
    out = {"parameters": sum(p.numel() for p in model.parameters()),
           "trainable_parameters": sum(p.numel() for group in model.optimizer_groups().values() for p in group),
           "train_steps": int(ckpt["step"]), "train_seconds": float(ckpt["elapsed"])}
    total = float(ckpt["elapsed"])
    base = _first_stage_run((ckpt["config"].get("model_config") or {}).get("base_run"), run_dir)
    if base is not None:
        out["base_train_seconds"] = float(load_checkpoint(base)["elapsed"])
        total += out["base_train_seconds"]
    out["train_seconds_total"] = total
    rows = read_log(run_dir) if run_dir else []
    fps = [r["frames_per_s"] for r in rows if r.get("frames_per_s") is not None]
    rss = [r["max_rss_mb"] for r in rows if r.get("max_rss_mb") is not None]
    if fps:
        out["train_frames_per_s"] = float(np.median(fps))
    if rss:
        out["train_peak_rss_mb"] = float(max(rss))
    return out


def _first_stage_run(base: str | None, run_dir: Path | None) -> Path | None:
    """The first stage's run folder: where the run recorded it, or, when that folder has moved (a
    compare builds in <out>.partial and renames it), the folder of the same name beside the run."""
    if not base:
        return None
    candidates = [Path(base)] + ([Path(run_dir).parent / Path(base).name] if run_dir is not None else [])
    return next((c for c in candidates if c.exists()), None)


def likelihood_windows(dataset: Dataset, window: int) -> int:
    """Enough evenly spread test windows to cover every test frame about twice. Windows overlap by
    all but one frame, so evaluating all of them costs `window` times more for sequence models
    (an 8-frame window: 8 decodes per test frame per importance sample) and adds little."""
    test_frames = sum(e - b for b, e in dataset.blocks("test"))
    return max(1, -(-2 * test_frames // max(1, window)))


# ----------------------------------------------------------------------------- entry point
def evaluate_full(model, ckpt: dict, dataset: Dataset, cfg: FullEvalConfig | None = None, device="cpu",
                  run_dir=None, log=None) -> dict:
    """Every metric of the module docstring for one trained model, as a JSON-able dict."""
    cfg = (cfg or FullEvalConfig()).validate()
    model.eval()
    windows = cfg.max_windows or likelihood_windows(dataset, model.window)
    result = {"likelihood": evaluate_model(model, dataset, "test", cfg.samples, cfg.batch_size, cfg.seed,
                                              windows, device)}
    net, ref = load_or_train(dataset, cfg.evalnet, device=device, log=log)
    joints = probe_skeleton(dataset, ref)
    real = real_reference(dataset, net, ref, cfg, device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    frames, speed = timed_rollouts(model, dataset, cfg, device)
    cost = {**training_cost(model, ckpt, run_dir), **speed}
    if cuda:
        cost["rollout_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    result["quality"] = rollout_metrics(frames, net, ref, real, joints, dataset, cfg, device)
    result["real"] = real_health(dataset, real, ref, cfg)
    result["evalnet"] = {k: v for k, v in ref.items() if k not in ("reference_features", "joints")}
    result["cost"] = cost
    result["settings"] = {"rollouts": cfg.rollouts, "horizons": list(cfg.horizons), "segment": cfg.segment,
                          "temperature": cfg.temperature, "feedback": cfg.feedback, "samples": cfg.samples}
    return result

"""The evaluation network of a dataset: a pose probe (CNN frame -> joints) when the dataset has
poses, otherwise a small autoencoder. Trained once on the training split and cached per dataset.

Why: an ImageNet Inception network (FID's usual feature space, Heusel et al. 2017) knows nothing
about binary silhouettes, and this project downloads no weights. A network trained on the
dataset's own training frames gives a feature space where distances mean something for this
dancer. Its penultimate layer (`features`) is the space of the frame Fréchet distance; the pose
probe's joints feed the kinetic/geometric motion features (motion.py); its predicted
uncertainty (pose probe) or reconstruction error (autoencoder) is the "confidence" whose real
range flags implausible generated frames.

Cache: <cache>/evalnet/v<VERSION>-<fingerprint>.pt (weights and reference statistics, loadable
with weights_only=True) plus a .json summary, where <cache> is $DISCODANCE_CACHE, else
$XDG_CACHE_HOME/discodance, else ~/.cache/discodance -- never inside the user's dataset folder,
which may be read-only or shared. The fingerprint of the dataset (meta.json, the size of frames.npy
and poses.npy and a sample of their bytes) and of the config names the file; a change of either,
or of VERSION, trains a new network. Files are written under a temporary name
and renamed, so a killed run never leaves a half-written cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import to_dict
from ..data.batches import to_float
from ..data.dataset import Dataset
from ..errors import require
from ..models.blocks import ConvDecoder, ConvEncoder
from .stats import frechet_distance

VERSION = 2   # 2: implausible = far from training frames or too uncertain, thresholds from all held-out frames
_HIDDEN_JOINTS = r"thumb|index|mid\d|middle|ring|pinky|finger|eye|_end"  # not drawn in silhouettes


@dataclass
class EvalNetConfig:
    """Settings of the evaluation network; part of the cache fingerprint."""
    channels: tuple[int, ...] = (16, 32, 64, 64)
    hidden: int = 256
    features: int = 64            # penultimate width: the frame Fréchet distance's space
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    reference_frames: int = 2000  # real training frames kept for nearest-neighbour plausibility


# ----------------------------------------------------------------------------- pose targets
def probe_targets(dataset: Dataset) -> tuple[np.ndarray, list[int]] | None:
    """Joint positions in image pixels (T, J', 2) that a frame shows, and the kept joint indices;
    None when the dataset has no poses.

    2-D image poses (the built-in dancer, 2-D keypoints) are used as they are. 3-D motion capture is
    projected with the dataset's view and framed like data/render.py does (one scale per clip,
    floor row fixed, camera following the smoothed body centre), re-estimated from the joints:
    render uses capsule points, so targets can sit a pixel or two off the drawn body. Fingers and
    eyes, which silhouettes do not show, are dropped.
    """
    import re
    if dataset.poses is None:
        return None
    meta = dataset.meta.get("poses") or {}
    names = meta.get("joint_names") or [str(i) for i in range(dataset.poses.shape[1])]
    keep = [i for i, n in enumerate(names) if not re.search(_HIDDEN_JOINTS, str(n).lower())]
    poses = np.asarray(dataset.poses[:, keep], np.float64)
    image = "px" in str(meta.get("units", "")) or "image" in str(meta.get("axes", ""))
    if poses.shape[-1] == 2 and image:
        return poses[..., :2].astype(np.float32), keep
    return _frame_mocap(dataset, poses), keep


def _frame_mocap(dataset: Dataset, poses: np.ndarray) -> np.ndarray:
    """3-D joints -> the pixels where the renderer drew them, clip by clip (render.clip_framing)."""
    from ..data.render import clip_framing, project
    extra = dataset.meta.get("extra") or {}
    h, w = dataset.frame_size
    xy = project(poses, float(extra.get("yaw_degrees", 0.0)), y_down=poses.shape[-1] == 2)
    out = np.empty(xy.shape, np.float32)
    clip_info = extra.get("clips") or []
    for k, clip in enumerate(dataset.meta["clips"]):
        s, n = clip["start"], clip["length"]
        info = clip_info[k] if k < len(clip_info) else {}
        recorded = info.get("framing") or ({"scale": info["pixels_per_unit"]} if "pixels_per_unit" in info else None)
        out[s:s + n] = clip_framing(recorded, xy[s:s + n], h, w, dataset.fps).apply(xy[s:s + n])
    return out


# ----------------------------------------------------------------------------- the network
class EvalNet(nn.Module):
    """Frames (B, H, W) in [0, 1] -> features (B, F); a pose head (mean and log-variance of every
    joint coordinate, normalised by the frame height) or a decoder (autoencoder)."""

    def __init__(self, frame_size, config: EvalNetConfig, joints: int = 0):
        super().__init__()
        self.frame_size, self.config, self.joints = tuple(frame_size), config, joints
        self.encoder = ConvEncoder(1, frame_size, config.features, config.channels, config.hidden)
        if joints:
            self.head = nn.Sequential(nn.SiLU(), nn.Linear(config.features, 4 * joints))
        else:
            self.head = ConvDecoder(config.features, frame_size, 1, config.channels, config.hidden)

    @property
    def mode(self) -> str:
        return "pose" if self.joints else "encoder"

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames[:, None].float())

    def pose_out(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised joint means (B, J, 2) and log-variances (B, J, 2)."""
        out = self.head(feats).view(len(feats), self.joints, 2, 2)
        return out[..., 0], out[..., 1].clamp(-12, 6)

    def to_pixels(self, normed: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_size
        return normed * h + torch.tensor([w / 2, h / 2], device=normed.device)

    def to_normed(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = self.frame_size
        return (pixels - torch.tensor([w / 2, h / 2], device=pixels.device)) / h

    def loss(self, frames: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Pose: MSE of the means + Gaussian NLL of the variances around the detached means (so the
        uncertainty head never slows the regression). Autoencoder: per-pixel BCE."""
        feats = self.features(frames)
        if not self.joints:
            return F.binary_cross_entropy_with_logits(self.head(feats)[:, 0], frames.float())
        mean, logvar = self.pose_out(feats)
        t = self.to_normed(targets)
        nll = 0.5 * (logvar + (t - mean.detach()) ** 2 * torch.exp(-logvar))
        return F.mse_loss(mean, t) + 1e-3 * nll.mean()

    @torch.no_grad()
    def embed(self, frames, batch: int = 256, device="cpu") -> dict[str, np.ndarray]:
        """features (N, F), confidence (N,) (higher = less sure) and, for a probe, poses (N, J, 2) px."""
        self.eval()
        out: dict[str, list] = {"features": [], "confidence": [], "poses": []}
        for i in range(0, len(frames), batch):
            x = torch.as_tensor(np.array(frames[i:i + batch]), device=device).float()
            if x.max() > 1.5:
                x = x / 255.0
            f = self.features(x)
            out["features"].append(f.cpu().numpy())
            if self.joints:
                mean, logvar = self.pose_out(f)
                out["poses"].append(self.to_pixels(mean).cpu().numpy())
                out["confidence"].append((0.5 * logvar).exp().mean((1, 2)).mul(self.frame_size[0]).cpu().numpy())
            else:
                bce = F.binary_cross_entropy_with_logits(self.head(f)[:, 0], x, reduction="none")
                out["confidence"].append(bce.mean((1, 2)).cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items() if v}


# ----------------------------------------------------------------------------- training
def train_evalnet(dataset: Dataset, config: EvalNetConfig | None = None, device="cpu",
                  log=None) -> tuple[EvalNet, dict]:
    """Train on the training split; return the network and its reference statistics."""
    cfg = config or EvalNetConfig()
    targets = probe_targets(dataset)
    train_idx = dataset.indices("train")
    require(len(train_idx) >= 2, f"{dataset.path} has too few training frames for the evaluation network")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = EvalNet(dataset.frame_size, cfg, 0 if targets is None else targets[0].shape[1]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    net.train()
    for step in range(cfg.steps):
        idx = train_idx[torch.randint(len(train_idx), (cfg.batch_size,), generator=gen).numpy()]
        idx.sort()
        x = to_float(np.asarray(dataset.frames[idx]), device)
        y = None if targets is None else torch.from_numpy(targets[0][idx]).to(device)
        for g in opt.param_groups:  # cosine decay: a cheap network, trained once, should converge
            g["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        loss = net.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log and (step + 1) % 250 == 0:
            log(f"evaluation network: step {step + 1}/{cfg.steps}, loss {loss.item():.5f}")
    net.eval()
    stats = reference_stats(net, dataset, targets, cfg, device)
    stats["train_seconds"] = round(time.perf_counter() - t0, 1)
    return net, stats


def held_out_indices(dataset: Dataset) -> np.ndarray:
    """Every real frame no network was trained on: the validation and test splits."""
    return np.concatenate([dataset.indices("val"), dataset.indices("test")])


def reference_stats(net: EvalNet, dataset: Dataset, targets, cfg: EvalNetConfig, device) -> dict:
    """What generated frames are compared with: real training features (a sample) for the
    nearest-neighbour distance; the 99th percentile of that distance and the 99.5th of the
    uncertainty ("confidence") over all held-out real frames (validation and test), which flag
    implausible frames; the probe's own test error; the train-vs-test frame Fréchet floor.

    Why all held-out frames and only an upper uncertainty limit: with the range of the test block
    alone (version 1, which also flagged frames the probe was unusually *sure* of), a quarter of the
    built-in dancer's real training and validation frames counted as implausible (20.5 % and 23.6 %,
    against 2.2 % of its test frames): every move the short test block lacks was flagged. Now the
    real frames of every split score 0.3-2.6 % on the built-in dancer and CMU salsa."""
    train_idx, test_idx, held_idx = dataset.indices("train"), dataset.indices("test"), held_out_indices(dataset)
    require(len(test_idx) >= 2, f"{dataset.path} has too few test frames to evaluate on")
    rng = np.random.default_rng(cfg.seed)
    ref_idx = np.sort(rng.choice(train_idx, min(cfg.reference_frames, len(train_idx)), replace=False))
    ref = net.embed(dataset.frames[ref_idx], device=device)
    held = net.embed(dataset.frames[held_idx], device=device)                    # validation, then test
    test = {k: v[len(v) - len(test_idx):] for k, v in held.items()}
    floor_idx = np.sort(rng.choice(train_idx, min(len(test_idx), len(train_idx)), replace=False))
    floor = net.embed(dataset.frames[floor_idx], device=device)
    nn_held = nearest_distance(held["features"], ref["features"])
    stats = {"mode": net.mode, "train_frames": int(len(train_idx)), "test_frames": int(len(test_idx)),
             "held_out_frames": int(len(held_idx)),
             "nn_threshold": float(np.quantile(nn_held, 0.99)),
             "confidence_max": float(np.quantile(held["confidence"], 0.995)),
             "fid_floor": frechet_distance(floor["features"], test["features"]),
             "reference_features": ref["features"].astype(np.float32)}
    if targets is not None:
        err = np.linalg.norm(test["poses"] - targets[0][test_idx], axis=-1)       # (N, J) px
        stats.update({"probe_error_px": float(err.mean()), "probe_error_px_median": float(np.median(err)),
                      "probe_error_px_p95": float(np.quantile(err, 0.95)), "joints": list(targets[1])})
    return stats


def nearest_distance(queries: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from every query (N, F) to its nearest reference vector (M, F)."""
    ref = torch.from_numpy(np.asarray(reference, np.float32))
    out = []
    for i in range(0, len(queries), chunk):
        q = torch.from_numpy(np.asarray(queries[i:i + chunk], np.float32))
        out.append(torch.cdist(q, ref).min(1).values.numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# ----------------------------------------------------------------------------- cache
def fingerprint(dataset: Dataset, cfg: EvalNetConfig) -> str:
    """Hash of what the cached network depends on: the dataset's description and a sample of its
    arrays' bytes, the config and VERSION. Cheap (no full read of a large frames.npy)."""
    h = hashlib.sha256(json.dumps({"version": VERSION, "config": to_dict(cfg)}, sort_keys=True).encode())
    h.update((Path(dataset.path) / "meta.json").read_bytes())
    for arr in (dataset.frames, dataset.poses):
        if arr is not None:
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr[:: max(1, len(arr) // 64)]).tobytes())
    return h.hexdigest()[:20]


def cache_dir() -> Path:
    """The user's cache folder for discodance (see the module docstring)."""
    if os.environ.get("DISCODANCE_CACHE"):
        return Path(os.environ["DISCODANCE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "discodance"


def cache_paths(dataset: Dataset, config: EvalNetConfig | None = None) -> tuple[Path, Path]:
    stem = f"v{VERSION}-{fingerprint(dataset, config or EvalNetConfig())}"
    d = cache_dir() / "evalnet"
    return d / f"{stem}.pt", d / f"{stem}.json"


def load_or_train(dataset: Dataset, config: EvalNetConfig | None = None, device="cpu", log=None) -> tuple[EvalNet, dict]:
    """The dataset's evaluation network: from the cache when one with its fingerprint exists, else
    trained now and cached (when the cache folder is writable; otherwise kept in memory only)."""
    cfg = config or EvalNetConfig()
    pt, js = cache_paths(dataset, cfg)
    fp = fingerprint(dataset, cfg)
    if pt.is_file() and js.is_file():
        try:
            blob = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception:  # a foreign or damaged cache file is retrained, not trusted
            blob = None
        if isinstance(blob, dict) and blob.get("fingerprint") == fp:
            return _from_blob(blob, dataset, cfg, device)
    if log:
        log(f"training the evaluation network of {dataset.path} (once; cached in {pt.parent})")
    net, stats = train_evalnet(dataset, cfg, device, log)
    stats["fingerprint"] = fp
    _save(pt, js, net, stats, cfg, log)
    return net, stats


def _from_blob(blob: dict, dataset: Dataset, cfg: EvalNetConfig, device) -> tuple[EvalNet, dict]:
    stats = dict(blob["stats"])
    stats["reference_features"] = blob["reference_features"].numpy()
    net = EvalNet(dataset.frame_size, cfg, int(blob["joints"]))
    net.load_state_dict(blob["model"])
    return net.to(device).eval(), stats


def _save(pt: Path, js: Path, net: EvalNet, stats: dict, cfg: EvalNetConfig, log) -> None:
    public = {k: v for k, v in stats.items() if k != "reference_features"}
    blob = {"format": "discodance-evalnet", "version": VERSION, "fingerprint": stats["fingerprint"],
            "joints": net.joints, "model": {k: v.cpu() for k, v in net.state_dict().items()},
            "reference_features": torch.from_numpy(stats["reference_features"]),
            "stats": json.loads(json.dumps(public)), "config": json.loads(json.dumps(to_dict(cfg)))}
    try:
        pt.parent.mkdir(parents=True, exist_ok=True)
        tmp = pt.with_name(f".{pt.name}.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, pt)
        tmp = js.with_name(f".{js.name}.tmp")
        tmp.write_text(json.dumps({"version": VERSION, "config": dataclasses.asdict(cfg), **public}, indent=2))
        os.replace(tmp, js)
    except OSError as e:  # a read-only cache folder: evaluate anyway, just without the cache
        if log:
            log(f"could not cache the evaluation network in {pt.parent} ({e.strerror}); kept in memory")

"""The on-disk dataset: a folder with frames.npy, optional poses.npy and meta.json.

    frames.npy  (T, H, W) uint8, 255 = dancer, 0 = background (memory-mapped on read)
    poses.npy   (T, J, 2|3) float32, optional
    meta.json   fps, source, frame size, clips [{name, start, length}], split boundaries,
                joint names/parents/units/axes when poses exist

Splits are contiguous time blocks inside every clip (train first, then val, then test), never
random frames, so held-out frames are never interleaved with training frames. Windows of
consecutive frames never cross a clip or split boundary. See docs/dataset-format.md.

Writing (streaming, atomic, gated) lives in writer.py; this module is the format and reading.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DiscodanceError, require

FORMAT_NAME = "discodance-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


# ----------------------------------------------------------------------------- splits
def split_clip(start: int, length: int, fractions=DEFAULT_FRACTIONS) -> dict[str, list[int]]:
    """Contiguous [begin, end) blocks of one clip: train first, then val, then test."""
    n_train = int(round(length * fractions[0]))
    n_val = int(round(length * fractions[1]))
    n_train = min(n_train, length)
    n_val = min(n_val, length - n_train)
    b1, b2 = start + n_train, start + n_train + n_val
    return {"train": [start, b1], "val": [b1, b2], "test": [b2, start + length]}


def check_fractions(fractions) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    require(len(fr) == 3 and all(f >= 0 for f in fr) and abs(sum(fr) - 1) < 1e-6,
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    return fr


# ----------------------------------------------------------------------------- reading
@dataclass
class Dataset:
    """A dataset folder opened for reading; frames and poses are memory-mapped."""
    path: Path
    meta: dict
    frames: np.ndarray          # (T, H, W) uint8, memory-mapped
    poses: np.ndarray | None    # (T, J, D) float32, memory-mapped

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    def blocks(self, split: str) -> list[tuple[int, int]]:
        require(split in SPLITS, f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        return [tuple(b) for b in self.meta["splits"][split]]

    def indices(self, split: str) -> np.ndarray:
        """Every frame index of `split`, in order (its blocks concatenated)."""
        blocks = [np.arange(b, e) for b, e in self.blocks(split)]
        return np.concatenate(blocks).astype(int) if blocks else np.zeros(0, dtype=int)

    def window_starts(self, split: str, length: int, stride: int = 1) -> np.ndarray:
        """First-frame indices of every window of `length` frames inside one block of `split`."""
        starts = [np.arange(b, e - length + 1, stride) for b, e in self.blocks(split) if e - b >= length]
        return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)

    def windows(self, starts, length: int) -> np.ndarray:
        """(B, length, H, W) uint8: the windows of `length` frames beginning at `starts`."""
        return np.stack([np.asarray(self.frames[int(s):int(s) + length]) for s in starts])

    def describe(self) -> dict:
        m = self.meta
        info = {"kind": "dataset", "path": str(self.path), "frames": int(m["num_frames"]),
                "frame_size": list(self.frame_size), "fps": m["fps"], "source": m["source"],
                "clips": len(m["clips"]),
                "split_frames": {s: int(sum(e - b for b, e in self.blocks(s))) for s in SPLITS},
                "dancer_fraction": float(np.mean(self.frames[:: max(1, len(self.frames) // 200)] > 127)),
                "poses": None if self.poses is None else list(self.poses.shape)}
        if m.get("poses"):
            info["pose_units"] = m["poses"].get("units")
        return info


def load_dataset(path: str | Path) -> Dataset:
    """Open and validate a dataset folder; any problem is a one-line DiscodanceError."""
    path = Path(path)
    require(path.exists(), f"dataset {path} does not exist")
    require(path.is_dir(), f"dataset {path} is not a folder (expected frames.npy and meta.json inside)")
    meta_path, frames_path = path / "meta.json", path / "frames.npy"
    require(meta_path.is_file(), f"dataset {path} has no meta.json")
    require(frames_path.is_file(), f"dataset {path} has no frames.npy")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DiscodanceError(f"{meta_path} is not valid JSON ({e})") from None
    require(isinstance(meta, dict) and meta.get("format") == FORMAT_NAME,
            f"{meta_path} is not a discodance dataset description")
    frames = _open_npy(frames_path)
    require(frames.dtype == np.uint8 and frames.ndim == 3,
            f"{frames_path} must be (T, H, W) uint8, got {frames.dtype} {frames.shape}")
    require(len(frames) > 0, f"{frames_path} holds no frames")
    require(len(frames) == meta.get("num_frames"),
            f"{frames_path} has {len(frames)} frames but meta.json says {meta.get('num_frames')}")
    _check_fps(meta, meta_path)
    _check_clips(meta, len(frames), meta_path)
    poses = None
    if (path / "poses.npy").is_file():
        poses = _open_npy(path / "poses.npy")
        require(poses.ndim == 3 and len(poses) == len(frames) and poses.shape[2] in (2, 3),
                f"{path / 'poses.npy'} must be (T={len(frames)}, J, 2|3), got {poses.shape}")
    return Dataset(path, meta, frames, poses)


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset from a .npy header, without touching the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return tuple(int(n) for n in shape), dtype, f.tell()


def _open_npy(path: Path) -> np.ndarray:
    """Memory-map a .npy file after checking that its header's shape fits the file's bytes.

    A header like shape (2**62, 64, 64) would otherwise overflow inside numpy's memmap (a
    warning and a traceback) or claim more frames than the file holds.
    """
    try:
        shape, dtype, offset = _npy_layout(path)
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
        have = path.stat().st_size - offset
        require(need <= have, f"{path} is not a readable .npy array: its header says shape {shape} "
                              f"({need:,} bytes) but the file holds {have:,} bytes")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, OverflowError, TypeError) as e:
        raise DiscodanceError(f"{path} is not a readable .npy array ({e})") from None


def _check_fps(meta: dict, meta_path: Path) -> None:
    fps = meta.get("fps")
    ok = isinstance(fps, (int, float)) and not isinstance(fps, bool) and np.isfinite(fps) and fps > 0
    require(ok, f"{meta_path}: fps must be a positive number, got {fps!r}")


def _check_clips(meta: dict, n: int, meta_path: Path) -> None:
    try:
        clips, splits = meta["clips"], meta["splits"]
        pos = 0
        for c in clips:
            require(c["start"] == pos and c["length"] > 0, f"{meta_path}: clips must tile the frames in order")
            pos += c["length"]
        require(pos == n, f"{meta_path}: clips cover {pos} frames but frames.npy has {n}")
        blocks = []
        for s in SPLITS:
            for b, e in splits[s]:
                require(isinstance(b, int) and isinstance(e, int) and 0 <= b <= e <= n,
                        f"{meta_path}: split {s} block [{b}, {e}) is out of range")
                blocks.append((b, e, s))
        _check_disjoint(blocks, meta_path)
    except (KeyError, TypeError, ValueError) as e:
        raise DiscodanceError(f"{meta_path} is malformed (clips/splits: {e})") from None


def _check_disjoint(blocks: list[tuple[int, int, str]], meta_path: Path) -> None:
    """Split blocks may not share a frame: a test frame seen in training is no test."""
    blocks = sorted(b for b in blocks if b[1] > b[0])
    for (b0, e0, s0), (b1, e1, s1) in zip(blocks, blocks[1:]):
        require(b1 >= e0, f"{meta_path}: split blocks overlap: {s0} [{b0}, {e0}) and {s1} [{b1}, {e1})")

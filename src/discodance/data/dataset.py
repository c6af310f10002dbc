"""The on-disk dataset: a folder with frames.npy, optional poses.npy and meta.json.

    frames.npy  (T, H, W) uint8, 255 = dancer, 0 = background (memory-mapped on read)
    poses.npy   (T, J, 2|3) float32, optional
    meta.json   fps, source, frame size, clips [{name, start, length}], split boundaries,
                joint names/parents/units/axes when poses exist

Splits are contiguous time blocks inside every clip (train first, then val, then test), never
random frames, so held-out frames are never interleaved with training frames. Windows of
consecutive frames never cross a clip or split boundary. See docs/dataset-format.md.

Writing is streaming and atomic: DatasetWriter appends frames chunk by chunk into a hidden
temporary folder (constant memory in the video length) and renames it into place only when
everything is written, so a crash never leaves a half-written dataset that looks complete.
The temporary folder holds the writer's PID; a later writer for the same target removes
temporary folders whose writer is dead (a run killed with SIGKILL cannot clean up after itself).
The finished folder gets the permissions of a normal mkdir (0777 minus the umask).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DiscodanceError, require
from ..folders import check_target, swap_in

FORMAT_NAME = "discodance-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
_HEADER_BYTES = 256  # fixed .npy header size, large enough for any shape, so it can be rewritten
MAX_SIDE = 4096      # largest frame side: the models work at 64x64; 20000x20000 is a typo


# ----------------------------------------------------------------------------- size budget
def _free_disk(folder: Path) -> int | None:
    """Free bytes on the file system that will hold `folder` (its nearest existing ancestor)."""
    folder = folder.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_frame_size(height: int, width: int, what: str = "--size") -> None:
    """Refuse a frame side beyond MAX_SIDE before anything is allocated."""
    require(1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE,
            f"{what} {height}x{width} is too large: frames may be at most {MAX_SIDE} pixels a side "
            "(the models work at 64x64)")


def _human(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def check_budget(out: str | Path, frames: int, height: int, width: int, working_bytes: int = 0,
                 what: str = "--size") -> None:
    """Refuse, before anything is written, a dataset whose frames (T x H x W bytes) do not fit on
    the disk that will hold `out`, or whose working memory does not fit in available RAM."""
    check_frame_size(height, width, what)
    need = int(frames) * int(height) * int(width)
    free = _free_disk(Path(out).parent)
    if free is not None and need > free:
        raise DiscodanceError(f"{frames} frames of {height}x{width} need {_human(need)} but only "
                              f"{_human(free)} are free where {out} would go; choose a smaller {what}")
    avail = _available_memory()
    if avail is not None and working_bytes > avail:
        raise DiscodanceError(f"{what} {height}x{width} needs about {_human(working_bytes)} of memory "
                              f"to draw, but only {_human(avail)} is available")


# ----------------------------------------------------------------------------- npy streaming
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header padded to exactly _HEADER_BYTES (a multiple of 64)."""
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (descr, tuple(shape))
    body_len = _HEADER_BYTES - 10  # magic (6) + version (2) + length field (2)
    text = text.ljust(body_len - 1) + "\n"
    assert len(text) == body_len, "shape too large for the reserved header"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


class _NpyAppender:
    """Appends rows of a fixed trailing shape to a .npy file; the header is fixed on close."""

    def __init__(self, path: Path, descr: str, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path, self.descr, self.dtype, self.row_shape = path, descr, np.dtype(dtype), row_shape
        self.rows = 0
        self.file = open(path, "wb")
        self.file.write(_npy_header(descr, (0, *row_shape)))

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        require(rows.shape[1:] == self.row_shape,
                f"{self.path.stem}: got rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self.file.write(rows.tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(_npy_header(self.descr, (self.rows, *self.row_shape)))
        self.file.close()


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


# ----------------------------------------------------------------------------- writing
_PID_FILE = ".writer-pid"  # "<pid> <host>" of the process writing a partial folder
_MKDTEMP_SUFFIX = re.compile(r"[a-z0-9_]{8}")  # tempfile.mkdtemp's random part


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _umask() -> int:
    """The process umask: from /proc (Linux, no side effect), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _writer_alive(folder: Path) -> bool:
    """Is the process that wrote `folder`'s PID file still running (or unknowable)?"""
    try:
        pid, host = (folder / _PID_FILE).read_text().split()
        pid = int(pid)
    except FileNotFoundError:
        # no PID file: a writer that has not written it yet, or an older discodance; only a
        # folder untouched for an hour is taken to be abandoned
        try:
            return folder.stat().st_mtime > time.time() - 3600
        except OSError:
            return False
    except (OSError, ValueError):
        return True  # unreadable: leave it alone
    if host != socket.gethostname():
        return True  # another machine on a shared disk: we cannot tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete `.<out-name>.partial-XXXXXXXX` siblings of `out` left by a killed earlier run.

    Only folders with exactly that prefix and mkdtemp's 8-character suffix (so another target's
    `.a.partial-b.partial-...` is not ours), and only when their writer is no longer running.
    """
    prefix, removed = _partial_prefix(out), []
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return removed
    for folder in siblings:
        name = folder.name
        if (name.startswith(prefix) and _MKDTEMP_SUFFIX.fullmatch(name[len(prefix):])
                and folder.is_dir() and not folder.is_symlink() and not _writer_alive(folder)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class DatasetWriter:
    """Streams clips into a new dataset folder; the folder appears only when finish() succeeds.

    with DatasetWriter(out, height, width) as writer:
        writer.add_clip("take1", frame_chunks, pose_chunks)   # chunks: (t, H, W) uint8 arrays
        writer.finish(fps=24, source="...")
    """

    def __init__(self, out: str | Path, height: int, width: int, *, overwrite: bool = False,
                 fractions=DEFAULT_FRACTIONS, check: bool = False, force: bool = False):
        self.out, self.check, self.force = Path(out), check, force  # check: the gate (gate.py) before finishing
        require(height >= 1 and width >= 1, f"frame size must be positive, got {height}x{width}")
        check_target(self.out, "dataset", overwrite=overwrite)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.out)
        self.tmp = Path(tempfile.mkdtemp(prefix=_partial_prefix(self.out), dir=self.out.parent))
        (self.tmp / _PID_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
        self.size = (int(height), int(width))
        self.fractions = check_fractions(fractions)
        self.frames = _NpyAppender(self.tmp / "frames.npy", "|u1", np.uint8, self.size)
        self.poses: _NpyAppender | None = None
        self.clips: list[dict] = []
        self.done = False

    def add_clip(self, name: str, frames: Iterable[np.ndarray],
                 poses: Iterable[np.ndarray] | None = None) -> int:
        """Append one clip from chunks of frames (t, H, W) and optional poses (t, J, D)."""
        start = self.frames.rows
        for chunk in frames:
            chunk = np.asarray(chunk)
            if chunk.ndim == 2:
                chunk = chunk[None]
            require(chunk.dtype == np.uint8, f"clip {name!r}: frames must be uint8, got {chunk.dtype}")
            self.frames.append(chunk)
        length = self.frames.rows - start
        require(length > 0, f"clip {name!r} has no frames")
        if poses is not None:
            n_before = self.poses.rows if self.poses else 0
            for chunk in poses:
                chunk = np.asarray(chunk, dtype=np.float32)
                if self.poses is None:
                    require(start == 0, "either every clip has poses or none does")
                    require(chunk.ndim == 3 and chunk.shape[2] in (2, 3),
                            f"clip {name!r}: poses must be (T, J, 2|3), got {chunk.shape}")
                    self.poses = _NpyAppender(self.tmp / "poses.npy", "<f4", np.float32, chunk.shape[1:])
                self.poses.append(chunk)
            require(self.poses is not None and self.poses.rows - n_before == length,
                    f"clip {name!r}: {length} frames but {(self.poses.rows if self.poses else 0) - n_before} poses")
        else:
            require(self.poses is None, "either every clip has poses or none does")
        self.clips.append({"name": str(name), "start": start, "length": length})
        return length

    def finish(self, *, fps: float, source: str, joint_names=None, joint_parents=None,
               pose_units: str | None = None, pose_axes: str | None = None,
               extra: dict | None = None) -> Path:
        require(self.clips, "no clips were added to the dataset")
        self.frames.close()
        if self.poses is not None:
            self.poses.close()
        splits = {s: [] for s in SPLITS}
        for clip in self.clips:
            for name, block in split_clip(clip["start"], clip["length"], self.fractions).items():
                splits[name].append(block)
        meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "fps": float(fps), "source": str(source),
            "frame_size": list(self.size), "num_frames": self.frames.rows, "clips": self.clips,
            "splits": {"fractions": list(self.fractions), **splits},
            "poses": None if self.poses is None else {
                "shape": [self.poses.rows, *self.poses.row_shape],
                "joint_names": list(joint_names) if joint_names is not None else None,
                "joint_parents": [int(p) for p in joint_parents] if joint_parents is not None else None,
                "units": pose_units, "axes": pose_axes},
            "extra": extra or {},
        }
        if self.check:
            meta["extra"]["check"] = self._gate()
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        (self.tmp / _PID_FILE).unlink(missing_ok=True)
        os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp made it 0700; a dataset is a normal folder
        swap_in(self.tmp, self.out)  # an old dataset (checked in __init__) goes only now
        self.done = True
        return self.out

    def _gate(self) -> dict:
        """Measure the written frames; refuse (nothing is put in place) when they look broken."""
        from ..progress import say
        from .gate import inspect, problems, summary
        stats = inspect(np.load(self.tmp / "frames.npy", mmap_mode="r"), self.clips)
        found = problems(stats)
        if found and not self.force:  # one line: what is wrong, and that nothing was written
            raise DiscodanceError(f"the prepared silhouettes look broken ({'; '.join(found)}): nothing was written; "
                                  "check the input and its settings, or pass --force to keep them")
        say(summary(stats))
        return stats

    def abort(self) -> None:
        for appender in (self.frames, self.poses):
            if appender is not None and not appender.file.closed:
                appender.file.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self.abort()
        return False


def write_dataset(out, frames: np.ndarray, *, fps: float, source: str, poses=None,
                  clips: list[dict] | None = None, overwrite: bool = False,
                  fractions=DEFAULT_FRACTIONS, **meta) -> Path:
    """Write in-memory arrays as a dataset; clips default to one clip spanning all frames."""
    frames = np.asarray(frames)
    require(frames.ndim == 3, f"frames must be (T, H, W), got shape {frames.shape}")
    clips = clips or [{"name": "clip0", "start": 0, "length": len(frames)}]
    with DatasetWriter(out, *frames.shape[1:], overwrite=overwrite, fractions=fractions) as w:
        for c in clips:
            s, n = c["start"], c["length"]
            w.add_clip(c["name"], [frames[s:s + n]], None if poses is None else [poses[s:s + n]])
        return w.finish(fps=fps, source=source, **meta)


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

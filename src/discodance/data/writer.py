"""Writing datasets: the streaming, atomic DatasetWriter and write_dataset (dataset.py reads them).

DatasetWriter appends frames chunk by chunk into a hidden temporary folder (constant memory in the
video length) and renames it into place only when everything is written, so a crash never leaves
a half-written dataset that looks complete. The partial folder records its writer's PID; a later
writer of the same target removes partial folders whose writer is gone. With check=True the
sanity gate (gate.py) measures the frames first and refuses broken ones. The finished folder gets
the permissions of a normal mkdir (0777 minus the umask).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DiscodanceError, require
from ..folders import check_target, swap_in
from .dataset import DEFAULT_FRACTIONS, FORMAT_NAME, FORMAT_VERSION, SPLITS, check_fractions, split_clip

_HEADER_BYTES = 256  # fixed .npy header size, large enough for any shape, so it can be rewritten


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

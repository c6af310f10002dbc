"""Output folders: what `--overwrite` may replace, and one lock per folder being written.

`--overwrite` never deletes anything discodance did not create. A folder may be replaced only when
  - it is not the current folder, an ancestor of it, the home folder or a filesystem root;
  - it neither is, holds, nor sits inside any input of the command (the dataset trained on, the
    videos or images being prepared, the run being generated from);
  - everything in it is something discodance writes into that kind of folder (a run, a dataset, a
    report, a samples folder), recognised by name; one unknown file and the command refuses,
    naming it.
The old contents are moved aside first and deleted only when the new output is complete
(`Replacement`), so a failed or interrupted command leaves the old output, not nothing.

A lock (`.lock` inside the folder while a command writes it, held with an OS file lock, so a killed
process never leaves a stale one) keeps two processes from writing one folder at once: the second is
refused at once, naming the lock.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import DiscodanceError, require

LOCK_NAME = ".lock"
ASIDE_PREFIX = ".replaced-"

# What each kind of folder may hold, by name (hidden temporaries start with "." and are ours too
# when they match these names' temporaries: ".<name>.tmp", ".<name>.tmp<suffix>").
KNOWN_ENTRIES = {
    "run": {"config.json", "metrics.jsonl", "checkpoint.pt", "metrics.json", "samples.gif", "samples.mp4",
            "strip.png", "real.gif", "frames.npy", "data", "train.json", "evaluation.json", "codes",
            "prior", "chain.gif", "chain.mp4", "chain_strip.png"},  # the demo's prior run and chain dances
    "dataset": {"frames.npy", "poses.npy", "meta.json"},
    "report": {"index.html", "results.json", "results.csv", "summary.csv", "training.png", "horizons.png",
               "gifs", "strips", "runs", "logs", "compare.json"},
}
# generate replaces only its own files, so it may write into a run folder too (never a dataset's)
KNOWN_ENTRIES["samples"] = KNOWN_ENTRIES["run"] - {"data"}


def _is_ours(name: str, kind: str) -> bool:
    if name in KNOWN_ENTRIES[kind] or name in (LOCK_NAME, ".eval") or name.startswith(ASIDE_PREFIX):
        return True
    if name.startswith("."):  # our temporaries: ".checkpoint.pt.tmp", ".samples.tmp.gif", ...
        stem = name[1:].split(".tmp")[0]
        return any(stem in (k, Path(k).stem) for k in KNOWN_ENTRIES[kind])
    return False


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_target(out: str | Path, kind: str, inputs=(), overwrite: bool = False) -> bool:
    """Whether `out` holds something to replace; refuses (DiscodanceError) every unsafe case.

    Without overwrite a non-empty `out` is refused; an empty or missing one is fine. `inputs` are
    the command's input paths: `out` may not be, hold, or sit inside any of them."""
    target = Path(out).resolve()
    for item in inputs:
        src = Path(item).resolve()
        require(not _contains(target, src), f"{out} holds the input {item}: write the output elsewhere (--out)")
        require(not _contains(src, target), f"{out} is inside the input {item}: write the output elsewhere (--out)")
    if not target.exists():
        return False
    require(target.is_dir(), f"{out} exists and is not a folder")
    _refuse_if_locked(target)
    entries = [p for p in target.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return False
    require(overwrite, f"{out} already exists (pass --overwrite to replace it, or choose another --out)")
    cwd = Path.cwd().resolve()
    require(not _contains(target, cwd), f"refusing to overwrite {out}: it is (or holds) the current folder")
    require(target != Path.home().resolve() and target.parent != target,
            f"refusing to overwrite {out}: it is the home folder or a filesystem root")
    foreign = sorted(p.name for p in entries if not _is_ours(p.name, kind))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise DiscodanceError(f"refusing to overwrite {out}: it is not a discodance {kind} folder "
                              f"(it holds {foreign[0]!r}{more})")
    return True


class Replacement:
    """Move a folder's old contents aside now; delete them on commit(), put them back on rollback().

        r = Replacement(out)        # out/* -> out/.replaced-<pid>/ (the lock file stays)
        ... write the new output into out ...
        r.commit()                  # the new output is complete: the old one goes
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.aside = self.out / f"{ASIDE_PREFIX}{os.getpid()}"
        self.aside.mkdir()
        for p in list(self.out.iterdir()):
            if p.name != LOCK_NAME and p != self.aside:
                os.replace(p, self.aside / p.name)

    def commit(self) -> None:
        shutil.rmtree(self.aside, ignore_errors=True)

    def rollback(self) -> None:
        """Drop what the failed command wrote and restore the old contents."""
        for p in list(self.out.iterdir()):
            if p.name != LOCK_NAME and p != self.aside:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for p in list(self.aside.iterdir()):
            os.replace(p, self.out / p.name)
        self.aside.rmdir()


def swap_in(new: Path, out: Path) -> None:
    """Rename the finished folder `new` to `out`, replacing a checked old `out` only now. The lock
    this process holds on `new` stays valid; its file does not travel into the output."""
    (new / LOCK_NAME).unlink(missing_ok=True)
    if not out.exists():
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}{ASIDE_PREFIX}{os.getpid()}")
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- the lock
_HELD: dict[Path, tuple[int, int]] = {}  # folder -> (fd, depth): re-entrant within one process


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: lock the first byte instead
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _lock_error(folder: Path, fd: int) -> DiscodanceError:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
    return DiscodanceError(f"{folder} is being written by another discodance process "
                           f"(pid {holder}; lock {folder / LOCK_NAME}): wait for it, or use another --out")


def _refuse_if_locked(folder: Path) -> None:
    """Another process holds `folder`'s lock: say so (not "already exists", which would mislead)."""
    path = folder / LOCK_NAME
    if folder.resolve() in _HELD or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        if not _try_lock(fd):
            raise _lock_error(folder, fd)
    finally:
        os.close(fd)  # closing also drops the probe's own lock, if it got one


class FolderLock:
    """`with FolderLock(out):` -- this process alone writes `out`; another one is refused at once."""

    def __init__(self, folder: str | Path, enabled: bool = True):
        self.folder, self.enabled = Path(folder), enabled

    def __enter__(self):
        if not self.enabled:
            return self
        key = self.folder.resolve()
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            return self
        self.made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            error = _lock_error(self.folder, fd)
            os.close(fd)
            raise error
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = (fd, 1)
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        key = self.folder.resolve()
        fd, depth = _HELD[key]
        if depth > 1:
            _HELD[key] = (fd, depth - 1)
            return False
        del _HELD[key]
        # The lock file goes with the lock (a stale one a killed process left too): a folder never keeps
        # a trace of it, and one we created for nothing (a refused or failed command) goes too. (A process that opened the file just before
        # the unlink can lock the orphan, but it then re-checks the folder and finds this run's output.)
        if self.folder.is_dir():  # (a finished folder may have been renamed away)
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
            if self.made_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
        os.close(fd)
        return False

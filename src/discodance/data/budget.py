"""Size budgets, checked before anything is allocated or written: the largest frame side, the disk
a dataset will fill, the memory a step will need. Torch-free, so that every layer can use it
(limits.py adds the checks that need a model)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import DiscodanceError, require

MAX_SIDE = 4096      # largest frame side: the models work at 64x64; 20000x20000 is a typo


def free_disk(folder: Path) -> int | None:
    """Free bytes on the file system that will hold `folder` (its nearest existing ancestor)."""
    folder = Path(folder).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable on Linux, else the free physical pages;
    None when the system does not say."""
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


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def check_frame_size(height: int, width: int, what: str = "--size") -> None:
    """Refuse a frame side beyond MAX_SIDE before anything is allocated."""
    require(1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE,
            f"{what} {height}x{width} is too large: frames may be at most {MAX_SIDE} pixels a side "
            "(the models work at 64x64)")


def check_budget(out: str | Path, frames: int, height: int, width: int, working_bytes: int = 0,
                 what: str = "--size") -> None:
    """Refuse, before anything is written, a dataset whose frames (T x H x W bytes) do not fit on
    the disk that will hold `out`, or whose working memory does not fit in available RAM."""
    check_frame_size(height, width, what)
    need = int(frames) * int(height) * int(width)
    free = free_disk(Path(out).parent)
    if free is not None and need > free:
        raise DiscodanceError(f"{frames} frames of {height}x{width} need {human_bytes(need)} but only "
                              f"{human_bytes(free)} are free where {out} would go; choose a smaller {what}")
    avail = available_memory()
    if avail is not None and working_bytes > avail:
        raise DiscodanceError(f"{what} {height}x{width} needs about {human_bytes(working_bytes)} of memory "
                              f"to draw, but only {human_bytes(avail)} is available")

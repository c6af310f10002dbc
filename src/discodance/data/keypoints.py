"""Motion clips as joint positions: the Motion container, keypoint files, gap filling, resampling.

Keypoint files (.npy / .npz / .json) hold (T, J, 2|3) positions; short gaps (NaN or null) are
interpolated linearly, long ones refused. 2-D keypoints are image coordinates (x right, y down);
3-D keypoints are y up unless prepare detects or is told another up axis (skeleton.py). BVH
files are read by mocap.py into the same Motion container.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DiscodanceError, require

KEYPOINT_EXTENSIONS = (".npy", ".npz", ".json")
BVH_EXTENSIONS = (".bvh",)   # motion capture read by mocap.py (here so that skeleton.py need not import mocap)


@dataclass
class Motion:
    """Joint positions of one clip plus the skeleton needed to draw them."""
    positions: np.ndarray            # (T, J, D) float32, D = 3 (y up) or 2 (image x, y down)
    names: list[str]
    parents: np.ndarray              # (J,) int, -1 for a root
    fps: float | None                # None: unknown (keypoint file without a rate)
    source: str
    end_site: np.ndarray = field(default=None)  # (J,) bool: BVH End Sites, kept for drawing only
    named: bool = True               # False when names/parents are our default guess
    has_parents: bool = True         # False when the parents are a guessed chain 0-1-2-...
    repaired: int = 0                # outlier joint positions replaced by interpolation

    def __post_init__(self):
        if self.end_site is None:
            self.end_site = np.zeros(len(self.names), dtype=bool)

    @property
    def joints(self) -> np.ndarray:
        """Positions without End Sites: the poses stored in a dataset."""
        return self.positions[:, ~self.end_site]  # (T, J', D)

    def joint_parents(self) -> np.ndarray:
        """Parents re-indexed after dropping End Sites (End Sites are always leaves)."""
        keep = np.flatnonzero(~self.end_site)
        new_index = -np.ones(len(self.names), dtype=int)
        new_index[keep] = np.arange(len(keep))
        return np.array([new_index[p] if p >= 0 else -1 for p in self.parents[keep]])


# ----------------------------------------------------------------------------- keypoints
def fill_gaps(points: np.ndarray, max_gap: int, where: str, what: str = "missing") -> np.ndarray:
    """Linearly interpolate missing joints (any non-finite coordinate) over gaps <= max_gap frames.

    Gaps touching the start or end hold the nearest valid value. Longer gaps are refused: a
    silhouette drawn from invented limbs would teach the model motion that never happened.
    """
    points = np.array(points, dtype=np.float64)  # (T, J, D)
    missing = ~np.isfinite(points).all(axis=-1)   # (T, J)
    t = np.arange(len(points))
    for j in np.flatnonzero(missing.any(axis=0)):
        m = missing[:, j]
        require(not m.all(), f"{where}: joint {j} is {what} in every frame")
        edges = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = int(np.argmax(ends - starts))
        require(ends[longest] - starts[longest] <= max_gap,
                f"{where}: joint {j} is {what} for {ends[longest] - starts[longest]} consecutive frames "
                f"({starts[longest]}-{ends[longest] - 1}); at most max_gap={max_gap} can be interpolated")
        for d in range(points.shape[2]):
            points[m, j, d] = np.interp(t[m], t[~m], points[~m, j, d])
    return points.astype(np.float32)


MAX_OUTLIER_FRAMES = 0.05  # more outlier frames than this: the file is broken, not glitchy


def repair_outliers(points: np.ndarray, max_gap: int, where: str, *, image_coords: bool = False,
                    count_nonfinite: bool = False) -> tuple[np.ndarray, int]:
    """Mark missing markers and outliers (outliers.py) as missing, then fill_gaps; one warning.

    Returns (filled float32 positions, number of repaired joint positions). NaN/null joints a
    keypoint file declares missing are filled but not counted; with count_nonfinite they count
    too (BVH, where a non-finite position is an overflow of absurd motion values). Refused, with
    one line, when more than MAX_OUTLIER_FRAMES of the frames hold an outlier or a gap is longer
    than max_gap: interpolating across that much would invent the motion.
    """
    from .outliers import find_outliers, missing_markers

    points = np.array(points, dtype=np.float64)              # (T, J, D)
    finite = np.isfinite(points).all(axis=-1)                # (T, J)
    markers = missing_markers(points, image_coords) & finite  # e.g. a detector's (0, 0)
    points[~finite | markers] = np.nan
    outliers = find_outliers(points)
    n_out = int(outliers.any(axis=1).sum())
    require(n_out <= max(2, MAX_OUTLIER_FRAMES * len(points)),
            f"{where}: {n_out} of {len(points)} frames hold outlier joint "
            f"positions (far from the body or jumping away for a frame); more than "
            f"{MAX_OUTLIER_FRAMES:.0%} is a broken file (wrong units? mislabelled joints?), not a glitch")
    points[outliers] = np.nan
    counted = outliers | markers | (~finite if count_nonfinite else False)  # (T, J)
    filled = fill_gaps(points, max_gap, where, "missing or an outlier")
    repaired = int(counted.sum())
    if repaired:
        print(f"warning: {where}: repaired {repaired} joint positions (outliers, non-finite values or "
              f"detector (0, 0) misses) in {int(counted.any(axis=1).sum())} frame(s) by interpolating "
              "from neighbouring frames", file=sys.stderr)
    return filled, repaired


def _keypoints_from_json(path: Path) -> tuple[object, dict]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DiscodanceError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        key = next((k for k in ("keypoints", "poses") if k in data), None)
        require(key is not None, f"{path}: JSON object needs a 'keypoints' or 'poses' list")
        return data[key], data
    return data, {}


def _as_array(frames, path: Path) -> np.ndarray:
    """List of frames of [[x, y(, z)] | null, ...] -> (T, J, D) with NaN for null joints."""
    try:
        width = max(len(j) for f in frames for j in f if j is not None)
        rows = [[[np.nan] * width if j is None else [np.nan if v is None else v for v in j]
                 for j in f] for f in frames]
        return np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise DiscodanceError(f"{path}: keypoints must be a list of frames, each a list of "
                              "[x, y] or [x, y, z] joints of equal length") from None


def _read_keypoint_file(path: Path) -> tuple[np.ndarray, dict]:
    ext = path.suffix.lower()
    if ext == ".json":
        frames, meta = _keypoints_from_json(path)
        return _as_array(frames, path), meta
    try:
        loaded = np.load(path, allow_pickle=False)
        if ext == ".npy":
            return loaded, {}
        with loaded:
            meta = {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, EOFError) as e:
        raise DiscodanceError(f"{path}: not a readable numpy file ({e})") from None
    key = next((k for k in ("keypoints", "poses", "positions") if k in meta), None)
    if key is None:
        arrays = [k for k, v in meta.items() if v.ndim == 3]
        require(len(arrays) == 1, f"{path}: .npz needs a 'keypoints' or 'poses' array")
        key = arrays[0]
    return meta[key], meta


def load_keypoints(path: str | Path, *, fps: float | None = None, max_gap: int = 5,
                   joint_names=None, joint_parents=None) -> Motion:
    """Keypoint file -> Motion. fps, joint_names and parents come from the arguments, else from
    the file (keys 'fps', 'joint_names', 'parents'), else fps is None and the skeleton is the
    renderer's default (COCO-17 names and parents for 17 joints, otherwise a chain 0-1-2-...,
    marked has_parents=False so that prepare infers one instead: skeleton.py)."""
    path = Path(path)
    require(path.is_file(), f"{path}: file not found")
    points, meta = _read_keypoint_file(path)
    require(points.ndim == 3 and points.shape[2] in (2, 3) and points.dtype.kind in "fiu",
            f"{path}: keypoints must be numbers of shape (T, J, 2|3), got {points.dtype} {points.shape}")
    require(points.shape[0] > 0 and points.shape[1] > 0, f"{path}: keypoint file has zero frames or joints")
    points, repaired = repair_outliers(points, max_gap, str(path), image_coords=points.shape[2] == 2)
    J = points.shape[1]
    names = joint_names if joint_names is not None else meta.get("joint_names")
    parents = joint_parents if joint_parents is not None else meta.get("parents", meta.get("joint_parents"))
    fps = fps if fps is not None else meta.get("fps")
    named, has_parents = names is not None, parents is not None or (names is None and J == 17)
    if not named and J == 17:  # drawn as COCO-17 (see render.py), so record it as such
        from .render import COCO17, COCO17_PARENTS
        names, parents = COCO17, COCO17_PARENTS if parents is None else parents
    try:
        names = [str(n) for n in names] if names is not None else [f"joint{j}" for j in range(J)]
        parents = np.asarray(parents, dtype=int) if parents is not None else np.arange(J) - 1
        fps = None if fps is None else float(fps)
    except (TypeError, ValueError):
        raise DiscodanceError(f"{path}: joint names must be a list, parents integers, fps a number") from None
    require(len(names) == J and parents.shape == (J,) and np.all((parents >= -1) & (parents < J)),
            f"{path}: {J} joints but {len(names)} names and {parents.size} parents (each in -1..{J - 1})")
    require(fps is None or (np.isfinite(fps) and fps > 0), f"{path}: fps must be positive, got {fps}")
    return Motion(points, names, parents, fps, str(path), named=named, has_parents=has_parents, repaired=repaired)


# ----------------------------------------------------------------------------- time
def resample(positions: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Linear interpolation of positions (T, ...) to dst_fps; output frame k is at time k/dst_fps.

    When dst_fps divides src_fps the source frames 0, r, 2r, ... come back exactly (120 -> 30).
    """
    require(src_fps > 0 and dst_fps > 0, f"frame rates must be positive, got {src_fps} -> {dst_fps}")
    ratio = float(src_fps) / float(dst_fps)
    n = int(np.floor((len(positions) - 1) / ratio + 1e-9)) + 1
    f = np.arange(n) * ratio                                    # (T',) source frame index
    i0 = np.minimum(np.floor(f + 1e-9).astype(int), len(positions) - 1)
    frac = np.clip(f - i0, 0.0, None).reshape(-1, *([1] * (positions.ndim - 1)))
    i1 = np.minimum(i0 + 1, len(positions) - 1)
    p0 = positions[i0].astype(np.float64)
    out = p0 + frac * (positions[i1] - p0)
    return out.astype(positions.dtype)

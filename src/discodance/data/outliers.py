"""Outlier joint positions: found with robust statistics per joint over time, scale-free.

One wild keypoint ruins a whole clip, because the renderer frames the clip from the extent of
all its poses: a coordinate of 30 in a metre-scale file zooms the dancer out of existence. So
before drawing, every joint position is tested against the rest of the clip:

* missing: a non-finite coordinate (BVH values so large that forward kinematics overflows),
  or, for 2-D image coordinates, exactly (0, 0) -- the "not found" value pose detectors write
  (unless that joint sits at (0, 0) in most frames, i.e. the file is centred on it);
* far: further from the frame's body centre (the per-frame median of the joints) than
  FAR x the body's reach R (the median over frames of the largest joint-to-centre distance).
  No pose puts a hand or foot further than about one R from the centre, so this never fires
  on a real body, and it is what protects the framing;
* spike: further from its own temporal median (over SPIKE_WINDOW frames) than SPIKE x R and
  than SPIKE_MADS robust standard deviations (1.4826 x median absolute deviation) of that
  joint's own residuals. A joint that jumps away for a frame or two and comes back.

Everything is relative to the clip itself (R, per-joint MAD), so the thresholds hold for any
unit (metres, centimetres, pixels) and any frame size. On the 18 CMU salsa files (docs/mocap.md)
the largest distance from the centre is 1.58 R and the largest spike 0.55 R (a real capture
glitch: a foot End Site flips 0.5 m for two frames, which we leave alone), so neither threshold
fires on clean data; an outlier that would move the framing is several R away.
"""
from __future__ import annotations

import warnings

import numpy as np

FAR = 3.0           # x reach R: the body never reaches that far from its own centre
SPIKE = 1.0         # x reach R: a temporal spike must be at least this large ...
SPIKE_MADS = 10.0   # ... and this many robust standard deviations of the joint's residuals
SPIKE_WINDOW = 5    # frames of the temporal median (a spike of <= 2 frames stands out)


def missing_markers(points: np.ndarray, image_coords: bool) -> np.ndarray:
    """(T, J) True where a joint is missing: a non-finite coordinate, or a detector's (0, 0)."""
    missing = ~np.isfinite(points).all(axis=-1)
    if image_coords and points.shape[-1] == 2:
        zero = (points == 0).all(axis=-1)
        missing |= zero & (zero.mean(axis=0) < 0.5)  # a joint at (0, 0) in most frames is real
    return missing


def _nanmedian(x: np.ndarray, axis) -> np.ndarray:
    if not np.isnan(x).any():  # np.median is several times faster than np.nanmedian
        return np.median(x, axis=axis)
    with warnings.catch_warnings():  # all-NaN slices (a joint missing in a window) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def body_reach(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-frame centre (T, D), joint-to-centre distances (T, J) and the clip's reach R."""
    centre = _nanmedian(points, axis=1)                              # (T, D)
    dist = np.linalg.norm(points - centre[:, None], axis=-1)         # (T, J)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reach = float(np.nanmedian(np.nanmax(dist, axis=1)))
    return centre, dist, reach


def spike_residuals(points: np.ndarray) -> np.ndarray:
    """(T, J) distance of each joint from its median over SPIKE_WINDOW frames around it."""
    half = SPIKE_WINDOW // 2
    padded = np.pad(points, ((half, half), (0, 0), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, SPIKE_WINDOW, axis=0)  # (T, J, D, W)
    return np.linalg.norm(points - _nanmedian(windows, axis=-1), axis=-1)


def find_outliers(points: np.ndarray) -> np.ndarray:
    """(T, J) True where a finite joint position is far from the body or a temporal spike."""
    points = np.asarray(points, dtype=np.float64)
    T, J = points.shape[:2]
    flagged = np.zeros((T, J), dtype=bool)
    if J < 3:  # no body to measure against
        return flagged
    _, dist, reach = body_reach(points)
    if not (np.isfinite(reach) and reach > 0):
        return flagged
    flagged |= dist > FAR * reach
    if T >= 3 * SPIKE_WINDOW:  # a joint's MAD over fewer frames says little
        res = spike_residuals(points)                                  # (T, J)
        mad = 1.4826 * _nanmedian(np.abs(res - _nanmedian(res, axis=0)), axis=0)  # (J,)
        flagged |= (res > SPIKE * reach) & (res > SPIKE_MADS * np.nan_to_num(mad))
    return flagged & np.isfinite(points).all(axis=-1)

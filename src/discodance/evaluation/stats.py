"""The metric primitives of the full evaluation (full.py, docs/evaluation.md): the Fréchet
distance between Gaussians fitted to feature sets, diversity, freeze rate, jitter, pixel change,
flicker and rollout collapse (static pose or loop). Plain numpy on arrays: no models, no data sets.
"""
from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- distribution distances
def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features (N, D), float64: the Gaussian a Fréchet distance compares."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 feature vectors of shape (N, D), got {x.shape}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein) distance squared between N(mu1, sigma1) and N(mu2, sigma2):

        d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    (Dowson & Landau 1982; used as FID in Heusel et al. 2017, "GANs trained by a two time-scale
    update rule ...", eq. 6). Tr((s1 s2)^(1/2)) is computed as the sum of the square roots of the
    eigenvalues of the symmetric PSD matrix s1^(1/2) s2 s1^(1/2), which has the same eigenvalues as
    s1 s2: no complex matrix square root, no imaginary parts to discard.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    w1, v1 = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
    middle = root1 @ s2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    d2 = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)
    return max(d2, 0.0)  # rounding can give -1e-12 for identical sets


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance squared between Gaussians fitted to feature sets a (N, D) and b (M, D).

    It is biased upwards for small N (Heusel et al. 2017 Sec. 4 use N = 50,000): only compare
    numbers computed from the same sample sizes, and read them against the real-vs-real floor.
    """
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def normalize_like(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise features by the reference set's per-dimension mean and std, as Bailando
    (Siyao et al. 2022, Sec. 5.1) does before FID_k/FID_g, so every dimension weighs alike."""
    ref = np.asarray(reference, np.float64)
    mu, sd = ref.mean(0), ref.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return [(np.asarray(x, np.float64) - mu) / sd for x in (ref, *others)]


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Diversity Dist: mean Euclidean distance over all pairs of feature vectors (N, D)
    (Li et al. 2021 "AI Choreographer", Sec. 5.2.1: Dist_k / Dist_g on normalised features)."""
    x = np.asarray(features, np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    sq = (x * x).sum(1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0, None)
    return float(np.sqrt(d2)[np.triu_indices(n, 1)].mean())


# ----------------------------------------------------------------------------- motion statistics
def joint_speed(poses: np.ndarray) -> np.ndarray:
    """Largest joint displacement per step (..., T-1) of poses (..., T, J, D), in pose units per frame."""
    p = np.asarray(poses, np.float64)
    return np.linalg.norm(np.diff(p, axis=-3), axis=-1).max(-1)


def freeze_rate(poses: np.ndarray, threshold: float) -> float:
    """Share of steps in which no joint moves more than `threshold` (pose units per frame):
    1 for a dancer standing still, 0 for one always moving (DanceNet's "convulsions and loops"
    failure shows as freezes). Poses (..., T, J, D) with T >= 2."""
    return float((joint_speed(poses) < threshold).mean())


def jitter(poses: np.ndarray) -> float:
    """Mean magnitude of the third finite difference (jerk, pose units per frame^3) of joint
    positions (..., T, J, D), T >= 4. Smooth motion (constant velocity or acceleration) gives 0;
    a joint that flips between +a and -a every frame gives 8a, the tremor of a flickering rollout."""
    p = np.asarray(poses, np.float64)
    return float(np.linalg.norm(np.diff(p, n=3, axis=-3), axis=-1).mean())


def _mask(frames) -> np.ndarray:
    """Boolean dancer masks from uint8 (> 127), float [0, 1] (> 0.5) or boolean frames."""
    x = np.asarray(frames)
    if x.dtype == bool:
        return x
    return x > (127 if x.dtype == np.uint8 else 0.5)


def pixel_change(frames: np.ndarray) -> np.ndarray:
    """Per step: share of pixels that flip, relative to the dancer's area (..., T-1), frames
    (..., T, H, W) in [0, 1] or uint8 -- motion measured without poses."""
    x = _mask(frames)
    flips = (x[..., 1:, :, :] != x[..., :-1, :, :]).mean((-2, -1))
    area = np.maximum(x[..., 1:, :, :].mean((-2, -1)), 1e-3)
    return flips / area


def flicker(frames: np.ndarray) -> float:
    """Share of pixels that flip and flip straight back: x_t != x_t+1 and x_t+2 == x_t, over every
    pixel and every t of frames (..., T, H, W), T >= 3 (uint8, float or boolean masks). Motion moves
    an edge one way and keeps it there; shimmer (a fine detail redrawn differently every frame)
    flips pixels back and forth. 0 for static frames and for a steady edge sweep."""
    x = _mask(frames)
    if x.shape[-3] < 3:
        return float("nan")
    a, b, c = x[..., :-2, :, :], x[..., 1:-1, :, :], x[..., 2:, :, :]
    return float(((a != b) & (c == a)).mean())


STATIC_CHANGE = 0.02   # a step changing < 2% of the dancer's area counts as frozen (as the demo's motion summary)
STATIC_SHARE = 0.9     # a window is a static collapse when >= 90% of its steps are frozen
LOOP_IOU = 0.9         # a window is a loop when it matches itself shifted by some period at this IoU ...
LOOP_DIP = 0.75        # ... after passing through frames unlike the start (so slow motion is not a loop)


def frame_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU over the last two axes of boolean masks; two empty masks give 1."""
    inter, union = (a & b).sum((-2, -1)), (a | b).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def collapse(window: np.ndarray) -> str:
    """'static', 'loop' or 'ok' for one window of frames (T, H, W).

    static: >= STATIC_SHARE of its steps change less than STATIC_CHANGE of the dancer's area.
    loop: not static, and some period p in [2, T // 2] makes every frame match the one p steps
    earlier with mean IoU >= LOOP_IOU, while some shorter lag matches below LOOP_DIP (the pose
    leaves and comes back) -- the rollout has fallen into a short repeated cycle.
    """
    x = _mask(window)
    if (pixel_change(x) < STATIC_CHANGE).mean() >= STATIC_SHARE:
        return "static"
    lag_iou = [1.0] + [float(frame_iou_np(x[p:], x[:-p]).mean()) for p in range(1, len(x) // 2 + 1)]
    for p in range(2, len(lag_iou)):
        if lag_iou[p] >= LOOP_IOU and min(lag_iou[1:p]) < LOOP_DIP:
            return "loop"
    return "ok"

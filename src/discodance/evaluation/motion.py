"""Motion features of pose sequences in the style of AIST++ and Bailando: kinetic and geometric.

Kinetic features (Li et al. 2021, "AI Choreographer", Sec. 5.2.1, after Onuma et al. 2008,
"FMDistance"): per joint, the average kinetic energy of its horizontal and of its vertical motion
and its average energy expenditure (acceleration magnitude), over a sequence. Unit mass and the
factor 1/2 are left out as in AIST++, so a joint moving at constant horizontal speed v has
horizontal energy v^2, vertical energy 0 and expenditure 0. Velocities and accelerations are finite
differences averaged over a sliding window of +-`window` steps (AIST++ uses 2). We compute the
acceleration as (v_t+1 - v_t) / dt of the positions; the reference implementation divides only
one of the two positions by the frame time in that line, which we do not reproduce.

Geometric features (Li et al. 2021 Sec. 5.2.1, after Müller et al. 2005, "Efficient content-based
retrieval of motion capture data", Sec. 3: boolean relational features of a pose), reworked for
the 2-D image-plane poses a silhouette shows: a set of booleans per frame (a hand above the head,
a bent knee, a foot lifted, a fast wrist, ...), averaged over the sequence into the share of frames
each holds. Distances are measured in torso lengths, so the features do not depend on the frame
size. Bailando (Siyao et al. 2022, Sec. 5.1) computes FID_k / FID_g between these features of real
and generated sequences; stats.frechet_distance does that after stats.normalize_like.

Poses are (T, J, 2) image coordinates: x right, y down (what the pose probe predicts).
"""
from __future__ import annotations

import re

import numpy as np

# The joints the geometric features read, found in any skeleton by name: patterns in order of
# preference (the first pattern that matches any joint wins, then the first such joint).
_CENTRE = {"head": (r"^head$", r"head", r"^nose$"), "neck": (r"neck", r"^chest$", r"upperchest"),
           "pelvis": (r"pelvis", r"^hips?$", r"^root$")}
_SIDED = {"shoulder": r"shldr|shoulder|upperarm|^arm$", "elbow": r"elbow|forearm|lowerarm",
          "wrist": r"wrist|hand", "hip": r"hip|thigh|upleg|upperleg", "knee": r"knee|shin|^leg$|lowerleg|calf",
          "ankle": r"ankle|foot"}
_SIDE_PREFIX = {"l": r"^(l_|l\.|left_?|l(?=[A-Z]))", "r": r"^(r_|r\.|right_?|r(?=[A-Z]))"}
_SMALL = r"thumb|index|mid\d|middle|ring|pinky|finger|toe|_end|eye|^ear"


def _strip_side(name: str, side: str) -> str | None:
    """'l_wrist' -> 'wrist' for side 'l' (also 'left_wrist', 'lHand', 'LeftHand'); None otherwise."""
    m = re.match(_SIDE_PREFIX[side], name, flags=0) or re.match(_SIDE_PREFIX[side], name[:1].lower() + name[1:])
    return name[m.end():].lower() if m else None


def resolve_skeleton(names) -> dict[str, int | tuple[int, ...]] | None:
    """Indices of head, neck, pelvis and the left/right shoulder, elbow, wrist, hip, knee, ankle in
    a named skeleton (built-in dancer, CMU BVH, COCO-17, ...); a missing neck or pelvis is the mean
    of the shoulders or hips (a tuple of indices). None when a limb joint or the head is missing."""
    names = [str(n) for n in (names or [])]
    found: dict[str, int | tuple[int, ...]] = {}
    for side in ("l", "r"):
        rest = [(i, _strip_side(n, side)) for i, n in enumerate(names)]
        for part, pattern in _SIDED.items():
            hits = [i for i, r in rest if r is not None and re.search(pattern, r) and not re.search(_SMALL, r)]
            if hits:
                found[f"{side}_{part}"] = hits[0]
    for key, patterns in _CENTRE.items():
        for pattern in patterns:
            hits = [i for i, n in enumerate(names) if re.search(pattern, n.lower())]
            if hits:
                found[key] = hits[0]
                break
    if "neck" not in found and {"l_shoulder", "r_shoulder"} <= found.keys():
        found["neck"] = (found["l_shoulder"], found["r_shoulder"])
    if "pelvis" not in found and {"l_hip", "r_hip"} <= found.keys():
        found["pelvis"] = (found["l_hip"], found["r_hip"])
    needed = list(_CENTRE) + [f"{s}_{p}" for s in "lr" for p in _SIDED]
    return found if all(k in found for k in needed) else None


def _joint(poses: np.ndarray, index) -> np.ndarray:
    """(T, D) positions of one joint, or the mean of several (a tuple of indices)."""
    return poses[:, list(index)].mean(1) if isinstance(index, (tuple, list)) else poses[:, index]


# ----------------------------------------------------------------------------- kinetic
def window_velocity(poses: np.ndarray, dt: float, window: int = 2) -> np.ndarray:
    """Velocities (T-1, J, D) at steps 1..T-1: the mean of the finite differences
    (x_i - x_i-1) / dt for i within +-window of the step, clipped to the sequence."""
    p = np.asarray(poses, np.float64)
    diffs = np.diff(p, axis=0) / dt                     # (T-1, J, D): step i = x_i+1 - x_i
    return _window_mean(diffs, window)


def window_acceleration(poses: np.ndarray, dt: float, window: int = 2) -> np.ndarray:
    """Accelerations (T-2, J, D): second differences (x_i+1 - 2 x_i + x_i-1) / dt^2, window-averaged."""
    p = np.asarray(poses, np.float64)
    return _window_mean(np.diff(p, n=2, axis=0) / dt ** 2, window)


def _window_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of x[i - window .. i + window] (clipped at the ends) along axis 0."""
    c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
    idx = np.arange(len(x))
    lo, hi = np.clip(idx - window, 0, len(x)), np.clip(idx + window + 1, 0, len(x))
    return (c[hi] - c[lo]) / (hi - lo).reshape((-1,) + (1,) * (x.ndim - 1))


def kinetic_features(poses: np.ndarray, fps: float, window: int = 2, vertical_axis: int = 1) -> np.ndarray:
    """(3 * J,) per joint: mean squared horizontal speed, mean squared vertical speed, mean
    acceleration magnitude, of poses (T, J, D) with T >= 3, in pose units per second (squared)."""
    dt = 1.0 / fps
    v = window_velocity(poses, dt, window)
    a = window_acceleration(poses, dt, window)
    vert = v[..., vertical_axis] ** 2
    horiz = (v ** 2).sum(-1) - vert
    energy = np.linalg.norm(a, axis=-1)
    return np.stack([horiz.mean(0), vert.mean(0), energy.mean(0)], -1).reshape(-1).astype(np.float64)


# ----------------------------------------------------------------------------- geometric
GEOMETRIC_NAMES = (
    "l_hand_above_head", "r_hand_above_head", "l_hand_above_shoulder", "r_hand_above_shoulder",
    "l_elbow_bent", "r_elbow_bent", "l_knee_bent", "r_knee_bent", "l_hand_far", "r_hand_far",
    "l_foot_lifted", "r_foot_lifted", "feet_apart", "hands_apart", "leaning", "crouching",
    "hands_crossed", "l_hand_fast", "r_hand_fast", "l_foot_fast", "r_foot_fast", "body_moving")


def _angle(a, b, c) -> np.ndarray:
    """Angle at b (radians) of the triangle a-b-c, per frame."""
    u, w = a - b, c - b
    cos = (u * w).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(w, axis=-1), 1e-9)
    return np.arccos(np.clip(cos, -1, 1))


def geometric_frames(poses: np.ndarray, joints: dict[str, int], fps: float) -> np.ndarray:
    """(T, len(GEOMETRIC_NAMES)) booleans per frame of poses (T, J, 2), image axes (y down).

    Thresholds are in torso lengths (neck to pelvis, the sequence's median) and seconds.
    """
    p = np.asarray(poses, np.float64)
    j = {k: _joint(p, i) for k, i in joints.items()}
    torso = max(float(np.median(np.linalg.norm(j["neck"] - j["pelvis"], axis=-1))), 1e-6)
    up = lambda a, b, m=0.0: (b[:, 1] - a[:, 1]) > m * torso           # a above b by m torsos
    dist = lambda a, b: np.linalg.norm(a - b, axis=-1) / torso
    speed = np.zeros((len(p), p.shape[1]))
    if len(p) > 1:
        v = np.linalg.norm(window_velocity(p, 1.0 / fps, 2), axis=-1) / torso  # (T-1, J) torsos/s
        speed = np.concatenate([v[:1], v])
    sp = lambda name: speed[:, list(np.atleast_1d(joints[name]))].mean(1)
    lean = np.abs(np.arctan2(j["neck"][:, 0] - j["pelvis"][:, 0], j["pelvis"][:, 1] - j["neck"][:, 1]))
    feet_low = np.maximum(j["l_ankle"][:, 1], j["r_ankle"][:, 1])
    sh_order = np.sign(j["l_shoulder"][:, 0] - j["r_shoulder"][:, 0])
    cols = [up(j[f"{s}_wrist"], j["head"]) for s in "lr"]
    cols += [up(j[f"{s}_wrist"], j[f"{s}_shoulder"]) for s in "lr"]
    cols += [_angle(j[f"{s}_shoulder"], j[f"{s}_elbow"], j[f"{s}_wrist"]) < np.deg2rad(120) for s in "lr"]
    cols += [_angle(j[f"{s}_hip"], j[f"{s}_knee"], j[f"{s}_ankle"]) < np.deg2rad(140) for s in "lr"]
    cols += [dist(j[f"{s}_wrist"], j["neck"]) > 1.2 for s in "lr"]
    cols += [up(j["l_ankle"], j["r_ankle"], 0.2), up(j["r_ankle"], j["l_ankle"], 0.2)]
    cols += [np.abs(j["l_ankle"][:, 0] - j["r_ankle"][:, 0]) / torso > 0.8,
             dist(j["l_wrist"], j["r_wrist"]) > 2.0, lean > np.deg2rad(15),
             (feet_low - j["pelvis"][:, 1]) / torso < 1.2,
             np.sign(j["l_wrist"][:, 0] - j["r_wrist"][:, 0]) * sh_order < 0]
    cols += [sp("l_wrist") > 2.5, sp("r_wrist") > 2.5, sp("l_ankle") > 1.5, sp("r_ankle") > 1.5,
             sp("pelvis") > 0.8]
    return np.stack(cols, -1).astype(np.float64)


def geometric_features(poses: np.ndarray, joints: dict[str, int], fps: float) -> np.ndarray:
    """(len(GEOMETRIC_NAMES),) share of frames in which each relational feature holds."""
    return geometric_frames(poses, joints, fps).mean(0)

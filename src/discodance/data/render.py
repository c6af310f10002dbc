"""Poses -> binary silhouettes: capsule limbs, thick torso, round head, one framing per clip.

A body is a set of capsules (segments with a radius) between points, where a point is a fixed
weighted mean of joints (so a head centre or mid-hip can sit between joints). Radii are fractions
of the dancer's height, so the silhouette has human proportions at any resolution and in any
unit. The framing (scale, vertical placement, horizontal centre) is chosen once from the whole
clip, so the dancer never zooms from frame to frame and the floor stays on one image row.

Default skeletons when a keypoint file names no joints: COCO-17 when it has 17 joints
(nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles, in COCO order), otherwise a
chain 0-1-2-... drawn with limb-thick capsules. prepare draws the chain only when asked
(--skeleton none): skeleton.py infers a body for other unnamed keypoints.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import require

# capsule radius per body part, as a fraction of the dancer's height
RADIUS = {"torso": 0.085, "neck": 0.04, "head": 0.075, "collar": 0.045, "upper_arm": 0.032,
          "forearm": 0.027, "hand": 0.025, "thigh": 0.05, "shin": 0.038, "foot": 0.028,
          "limb": 0.032}
# body part of a bone, from the name of the joint it starts at (first match wins)
_PARTS = [("skip", r"thumb|index|middle|mid\d|ring|pinky|finger|eye|nose|jaw|tongue|(^|[^a-z])ear"),
          ("head", r"head"), ("neck", r"neck"), ("forearm", r"forearm|lowerarm|elbow"),
          ("collar", r"collar|clavicle|shoulder"), ("upper_arm", r"arm|shldr|humerus"),
          ("hand", r"hand|wrist"), ("foot", r"foot|ankle|toe|heel"),
          ("thigh", r"thigh|upleg|upperleg|femur|hip"), ("shin", r"shin|knee|calf|leg"),
          ("torso", r"spine|chest|abdomen|torso|pelvis|buttock|back|waist")]
_GROUPED = ("head", "hand", "foot")  # several children (eyes, fingers) -> one capsule to their mean
VIEWS = {"front": 0.0, "side": 90.0, "back": 180.0}
COCO17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
          "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
          "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
COCO17_PARENTS = [-1, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14]


@dataclass
class Body:
    """What to draw: points = weights @ joints, capsules between points, radii / height."""
    weights: np.ndarray   # (P, J)
    segments: np.ndarray  # (S, 2) int, indices into points
    radii: np.ndarray     # (S,) fraction of the dancer's height

    def points(self, joints: np.ndarray) -> np.ndarray:
        return np.einsum("pj,tjd->tpd", self.weights, joints)  # (T, P, D)


def body_part(name: str, is_root: bool = False) -> str:
    """The body part a bone starting at joint `name` belongs to (RADIUS key, or "skip")."""
    if is_root:
        return "torso"
    low = name.lower()
    return next((part for part, pattern in _PARTS if re.search(pattern, low)), "limb")


def body_from_skeleton(names: list[str], parents) -> Body:
    """Capsules for a named skeleton (BVH or named keypoints): each bone gets the radius of the
    body part of its start joint; fingers, eyes and similar small bones are left out."""
    parents = np.asarray(parents)
    J = len(names)
    if list(names) == COCO17:
        return coco17_body()
    rows, segs, radii = [np.eye(J)[j] for j in range(J)], [], []
    for p in range(J):
        children = [j for j in np.flatnonzero(parents == p)]
        part = body_part(names[p], parents[p] < 0)
        if part == "skip" or not children:
            continue
        if part in _GROUPED and len(children) > 1:
            rows.append(np.mean([np.eye(J)[c] for c in children], axis=0))
            children = [len(rows) - 1]
        segs += [(p, c) for c in children]
        radii += [RADIUS[part]] * len(children)
    require(segs, f"skeleton {names[:5]}... has no drawable bones")
    return Body(np.array(rows), np.array(segs), np.array(radii, dtype=np.float64))


def chain_body(num_joints: int) -> Body:
    """Unnamed keypoints: a chain 0-1-2-... of limb capsules (a single joint is one dot)."""
    segs = [(j, j + 1) for j in range(num_joints - 1)] or [(0, 0)]
    return Body(np.eye(num_joints), np.array(segs), np.full(len(segs), RADIUS["limb"]))


def coco17_body() -> Body:
    """COCO-17: limbs between joints plus virtual mid-shoulder, mid-hip and head-centre points."""
    eye = np.eye(17)
    i = {n: k for k, n in enumerate(COCO17)}
    mid_sh = (eye[i["left_shoulder"]] + eye[i["right_shoulder"]]) / 2
    mid_hip = (eye[i["left_hip"]] + eye[i["right_hip"]]) / 2
    head = eye[:5].mean(axis=0)
    weights = np.vstack([eye, mid_sh, mid_hip, head])  # points 17, 18, 19
    bones = [(17, 18, "torso"), (5, 6, "collar"), (11, 12, "thigh"), (5, 11, "collar"),
             (6, 12, "collar"), (17, 19, "neck"), (19, 19, "head"),
             (5, 7, "upper_arm"), (6, 8, "upper_arm"), (7, 9, "forearm"), (8, 10, "forearm"),
             (11, 13, "thigh"), (12, 14, "thigh"), (13, 15, "shin"), (14, 16, "shin")]
    return Body(weights, np.array([b[:2] for b in bones]),
                np.array([RADIUS[b[2]] for b in bones]))


def default_body(names: list[str] | None, parents, num_joints: int) -> Body:
    if names is None:
        return coco17_body() if num_joints == 17 else chain_body(num_joints)
    return body_from_skeleton(names, parents)


# ----------------------------------------------------------------------------- view
def parse_view(view) -> float:
    """'front' (0), 'side' (90), 'back' (180) or a yaw angle in degrees -> yaw in degrees."""
    if isinstance(view, str) and view.strip().lower() in VIEWS:
        return VIEWS[view.strip().lower()]
    try:
        yaw = float(view)
    except (TypeError, ValueError):
        yaw = float("nan")
    require(np.isfinite(yaw), f"bad view {view!r}: use front, side, back or a yaw angle in degrees")
    return yaw


def project(positions: np.ndarray, yaw_deg: float = 0.0, *, y_down: bool = False) -> np.ndarray:
    """Orthographic projection to (T, J, 2) with y up.

    The camera sits on the +Z side looking along -Z (yaw 0, 'front': image right = +X); a yaw
    moves it counter-clockwise seen from above, so yaw 90 ('side') looks along -X with image
    right = -Z. 2-D input is already a projection: only yaw 0 is allowed, y_down flips it.
    """
    if positions.shape[-1] == 2:
        require(yaw_deg % 360 == 0, f"2-D keypoints have a single view; got view {yaw_deg} degrees")
        return positions * np.array([1.0, -1.0 if y_down else 1.0], dtype=np.float32)
    a = np.deg2rad(yaw_deg)
    u = positions[..., 0] * np.cos(a) - positions[..., 2] * np.sin(a)  # (T, J)
    return np.stack([u, positions[..., 1]], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- rasterising
def render_capsules(segments_xy: np.ndarray, radii: np.ndarray, height: int, width: int,
                    *, max_elements: int = 1 << 24) -> np.ndarray:
    """Fill capsules into (T, H, W) uint8 frames (255 inside, 0 outside).

    segments_xy (T, S, 2, 2): endpoints in pixel units, x right, y down, pixel (i, j) centred at
    (j + 0.5, i + 0.5). radii (S,) in pixels. A pixel is inside when its centre lies within the
    radius of the segment. Non-finite segments are not drawn. Each capsule is evaluated only in a
    window around it (one window size per capsule over the clip), frames in bounded chunks.
    """
    seg = np.asarray(segments_xy, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    require(seg.ndim == 4 and seg.shape[2:] == (2, 2) and radii.shape == (seg.shape[1],),
            f"segments must be (T, S, 2, 2) with radii (S,), got {seg.shape} and {radii.shape}")
    out = np.zeros((len(seg), height, width), dtype=bool)  # (T, H, W)
    for s in range(seg.shape[1]):
        _draw_capsule(out, seg[:, s], radii[s], max_elements)
    return out.astype(np.uint8) * 255


def _window(lo: np.ndarray, hi: np.ndarray, r: float, size: int) -> tuple[np.ndarray, int]:
    """Per-frame window origin (T,) and one window length covering [lo - r, hi + r] in-image."""
    n = int(min(size, np.ceil(np.max(hi - lo) + 2 * r) + 2))
    origin = np.clip(np.floor(lo - r), 0, size - n).astype(np.int64)
    return origin, n


def _draw_capsule(out: np.ndarray, seg: np.ndarray, r: float, max_elements: int) -> None:
    """OR one capsule (seg: (T, 2, 2)) into out (T, H, W) bool."""
    ok = np.isfinite(seg).all(axis=(1, 2))
    lo, hi = seg.min(axis=1), seg.max(axis=1)  # (T, 2)
    ok &= (hi[:, 0] + r >= 0) & (lo[:, 0] - r <= out.shape[2])
    ok &= (hi[:, 1] + r >= 0) & (lo[:, 1] - r <= out.shape[1])
    frames = np.flatnonzero(ok)
    if len(frames) == 0 or r <= 0:
        return
    ox, nx = _window(lo[frames, 0], hi[frames, 0], r, out.shape[2])
    oy, ny = _window(lo[frames, 1], hi[frames, 1], r, out.shape[1])
    step = max(1, max_elements // (nx * ny))
    for k in range(0, len(frames), step):
        sl = slice(k, k + step)
        t = frames[sl]
        xs = ox[sl, None] + np.arange(nx) + 0.5                # (t, nx) pixel centres
        ys = oy[sl, None] + np.arange(ny) + 0.5                # (t, ny)
        a, d = seg[t, 0], seg[t, 1] - seg[t, 0]                # (t, 2)
        dd = np.maximum((d ** 2).sum(axis=1), 1e-12)[:, None, None]
        px = xs[:, None, :] - a[:, 0, None, None]              # (t, 1, nx)
        py = ys[:, :, None] - a[:, 1, None, None]              # (t, ny, 1)
        u = np.clip((px * d[:, 0, None, None] + py * d[:, 1, None, None]) / dd, 0.0, 1.0)
        dist2 = (px - u * d[:, 0, None, None]) ** 2 + (py - u * d[:, 1, None, None]) ** 2
        inside = dist2 <= r * r                                # (t, ny, nx)
        rows = (oy[sl, None] + np.arange(ny))[:, :, None]
        cols = (ox[sl, None] + np.arange(nx))[:, None, :]
        out[t[:, None, None], rows, cols] |= inside


# ----------------------------------------------------------------------------- framing
FILL = 0.85  # the share of the frame height a clip's full vertical extent fills


@dataclass
class Framing:
    """World (y up) -> pixels (y down): x = width/2 + (u - centre[t]) * scale,
    y = floor_row - (v - floor) * scale. One scale and floor for the clip."""
    scale: float          # pixels per world unit
    centre: np.ndarray    # (T,) world u at the image's vertical midline
    floor: float          # lowest world v of the silhouette over the clip
    floor_row: float      # image row of that floor
    width: int

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """(T, ..., 2) world -> pixels."""
        shape = (-1,) + (1,) * (xy.ndim - 2)
        x = self.width / 2 + (xy[..., 0] - self.centre.reshape(shape)) * self.scale
        y = self.floor_row - (xy[..., 1] - self.floor) * self.scale
        return np.stack([x, y], axis=-1)

    def to_meta(self) -> dict:
        """JSON for meta.json, so that whoever reads the dataset (the pose probe) uses this framing."""
        return {"scale": self.scale, "floor": self.floor, "floor_row": self.floor_row, "width": self.width,
                "centre": [round(float(c), 6) for c in self.centre]}

    @classmethod
    def from_meta(cls, d: dict) -> "Framing":
        return cls(float(d["scale"]), np.asarray(d["centre"], np.float64), float(d["floor"]),
                   float(d["floor_row"]), int(d["width"]))


def _smooth(x: np.ndarray, frames: int) -> np.ndarray:
    """Moving average with edge padding: a camera pan without the jitter of swinging arms."""
    if frames <= 1 or len(x) < 2:
        return x
    k = np.ones(frames) / frames
    padded = np.pad(x, (frames // 2, frames - 1 - frames // 2), mode="edge")
    return np.convolve(padded, k, mode="valid")


def frame_clip(seg_xy: np.ndarray, radii: np.ndarray, height: int, width: int, *,
               fill: float = FILL, center: str = "follow", smooth: int = 15) -> Framing:
    """One framing for a whole clip from the capsules' extent over all frames.

    The silhouette's full vertical extent over the clip fills `fill` of the height (less if it
    would not fit the width), its lowest point (the floor) sits on one row. center="clip": one
    horizontal centre, the middle of the clip's extent (the dancer travels across the frame).
    center="follow": the camera pans with the smoothed mean of the body points, so a dancer who
    travels stays large and centred; the scale is still one for the clip.
    """
    require(center in ("clip", "follow"), f"bad center {center!r}: use 'clip' or 'follow'")
    u, v = seg_xy[..., 0], seg_xy[..., 1]                     # (T, S, 2)
    r = radii[None, :, None]
    floor, top = np.nanmin(v - r), np.nanmax(v + r)
    if center == "clip":
        lo, hi = np.nanmin(u - r), np.nanmax(u + r)
        centre = np.full(len(seg_xy), (lo + hi) / 2)
        half = (hi - lo) / 2
    else:
        centre = _smooth(np.nanmean(u, axis=(1, 2)), smooth)
        half = np.nanmax(np.abs(u - centre[:, None, None]) + r)
    scale = fill * min(height / max(top - floor, 1e-9), width / max(2 * half, 1e-9))
    return Framing(float(scale), centre, float(floor), height * (1 + fill) / 2, width)


def clip_framing(recorded: dict | None, joints_xy: np.ndarray, height: int, width: int, fps: float) -> Framing:
    """The framing the renderer drew a clip with: the one `prepare` recorded in meta.json (exact),
    or, for datasets written before it was recorded, one estimated from the projected joints
    (T, J, 2): the same fill, floor row and smoothed follow-camera, but from joints rather than
    capsules, so it can sit a pixel or two off the drawn body."""
    if recorded and "centre" in recorded and len(recorded["centre"]) == len(joints_xy):
        return Framing.from_meta(recorded)
    u, v = joints_xy[..., 0], joints_xy[..., 1]
    scale = float(recorded["scale"]) if recorded and "scale" in recorded else FILL * height / max(float(v.max() - v.min()), 1e-9)
    centre = _smooth(u.mean(1), max(1, round(fps / 2)))
    return Framing(scale, centre, float(v.min()), height * (1 + FILL) / 2, width)


def body_height(points_xy: np.ndarray) -> float:
    """The dancer's height: median over frames of the vertical extent of the body points."""
    extent = np.nanmax(points_xy[..., 1], axis=1) - np.nanmin(points_xy[..., 1], axis=1)
    h = float(np.nanmedian(extent))
    require(np.isfinite(h) and h > 0, "cannot size the silhouette: the pose has no vertical extent")
    return h


def plan_silhouettes(joints_xy: np.ndarray, body: Body, height: int, width: int, **framing):
    """Pixel-space capsules (T, S, 2, 2) and radii (S,) for a clip, plus its Framing."""
    pts = body.points(joints_xy)                               # (T, P, 2) world, y up
    seg = pts[:, body.segments]                                # (T, S, 2, 2)
    radii = body.radii * body_height(pts)                      # (S,) world units
    fr = frame_clip(seg, radii, height, width, **framing)
    return fr.apply(seg), radii * fr.scale, fr


def render_silhouettes(joints_xy: np.ndarray, body: Body, height: int, width: int, *,
                       chunk: int = 1024, **framing):
    """Yield (t, H, W) uint8 chunks of silhouettes for projected joints (T, J, 2), y up."""
    seg_px, radii_px, _ = plan_silhouettes(joints_xy, body, height, width, **framing)
    for start in range(0, len(seg_px), chunk):
        yield render_capsules(seg_px[start:start + chunk], radii_px, height, width)

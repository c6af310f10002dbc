"""The built-in dancer: a procedural, seeded 2D articulated figure performing a choreography.

The figure (head, neck, torso, upper/lower arms and legs, feet) is posed by a handful of joint
angles. A choreography is a random sequence of distinct moves (arm waves, side steps, kicks, sways
with turns, squats, jumps, disco points, jumping jacks), each repeated for a few cycles at the
tempo, with per-repetition variation (amplitude, mirroring, small timing jitter) and smoothstep
cross-fades between moves, so motion is structured but never one repeated loop. The lowest foot
is kept on the floor (except in jumps), so squats lower the body the way a real body does.

Everything is a pure function of the seed: same seed, same frames, byte for byte.
Rendered silhouettes are uint8 (255 = dancer); poses are the 2D joints in image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .render import render_capsules

JOINTS = ("pelvis", "chest", "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder",
          "r_elbow", "r_wrist", "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle",
          "l_toe", "r_toe")
PARENTS = (-1, 0, 1, 2, 1, 4, 5, 1, 7, 8, 0, 10, 11, 0, 13, 14, 12, 15)
J = {name: i for i, name in enumerate(JOINTS)}

# Bone lengths in body units (standing height, sole to head top, is about 1.0).
L = dict(torso=0.30, neck=0.05, head=0.07, shoulder=0.11, upper_arm=0.17, forearm=0.16,
         hip=0.06, thigh=0.23, shin=0.23, foot=0.07)
# Capsules (joint a, joint b, radius in body units); the head is a zero-length capsule.
CAPSULES = (("pelvis", "chest", 0.085), ("chest", "neck", 0.035), ("head", "head", 0.075),
            ("l_shoulder", "r_shoulder", 0.05), ("l_hip", "r_hip", 0.07),
            ("l_shoulder", "l_elbow", 0.042), ("l_elbow", "l_wrist", 0.036),
            ("r_shoulder", "r_elbow", 0.042), ("r_elbow", "r_wrist", 0.036),
            ("l_hip", "l_knee", 0.055), ("l_knee", "l_ankle", 0.046), ("l_ankle", "l_toe", 0.03),
            ("r_hip", "r_knee", 0.055), ("r_knee", "r_ankle", 0.046), ("r_ankle", "r_toe", 0.03))

# Pose parameters. Limb angles are radians from "hanging straight down", positive towards the
# figure's own left side (image right); elbow/knee values are bends relative to the parent bone.
PARAMS = ("x", "lift", "lean", "turn", "l_arm", "l_elbow", "r_arm", "r_elbow",
          "l_leg", "l_knee", "r_leg", "r_knee")
REST = dict(x=0.0, lift=0.0, lean=0.0, turn=0.0, l_arm=0.18, l_elbow=0.1, r_arm=-0.18,
            r_elbow=-0.1, l_leg=0.04, l_knee=0.0, r_leg=-0.04, r_knee=0.0)


def _wave(p, shift=0.0):
    """0 -> 1 -> 0 over one cycle, smooth (raised cosine)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * (p + shift))


# Each move maps the phase p in [0, 1) of one cycle to offsets from REST (arrays like p).
def arm_wave(p):
    up_l, up_r = _wave(p), _wave(p, 0.5)
    return dict(l_arm=2.5 * up_l, l_elbow=0.9 * np.sin(2 * np.pi * p), r_arm=-2.5 * up_r,
                r_elbow=-0.9 * np.sin(2 * np.pi * p + np.pi), lean=0.08 * np.sin(2 * np.pi * p))


def side_step(p):
    s = np.sin(2 * np.pi * p)
    open_ = np.abs(s)
    return dict(x=0.16 * s, l_leg=0.35 * open_, r_leg=-0.35 * open_, l_knee=-0.25 * open_,
                r_knee=0.25 * open_, l_arm=0.5 + 0.6 * open_, r_arm=-0.5 - 0.6 * open_,
                l_elbow=0.8, r_elbow=-0.8, lean=-0.1 * s)


def kick(p):
    kick_l = np.clip(np.sin(2 * np.pi * p), 0, None) ** 2
    kick_r = np.clip(-np.sin(2 * np.pi * p), 0, None) ** 2
    return dict(l_leg=1.3 * kick_l, l_knee=-0.6 * kick_l * (1 - kick_l), r_leg=-1.3 * kick_r,
                r_knee=0.6 * kick_r * (1 - kick_r), l_arm=0.9 + 0.6 * kick_r, r_arm=-0.9 - 0.6 * kick_l,
                lean=0.25 * (kick_r - kick_l))


def sway_turn(p):
    s = np.sin(2 * np.pi * p)
    return dict(lean=0.3 * s, turn=np.cos(np.pi * p) ** 2, x=0.06 * s, l_arm=1.4 + 0.5 * s,
                r_arm=-1.4 + 0.5 * s, l_elbow=0.3, r_elbow=-0.3, l_leg=0.15 + 0.1 * s,
                r_leg=-0.15 + 0.1 * s)


def squat(p):
    d = _wave(p)
    return dict(l_leg=0.75 * d, l_knee=-1.5 * d, r_leg=-0.75 * d, r_knee=1.5 * d,
                l_arm=0.3 + 1.3 * d, r_arm=-0.3 - 1.3 * d, lean=0.0 * d)


def jump(p):
    air = np.clip(np.sin(2 * np.pi * p), 0, None)
    crouch = np.clip(-np.sin(2 * np.pi * p), 0, None)
    tuck = air ** 3
    return dict(lift=0.22 * air, l_leg=0.3 * crouch + 0.7 * tuck, l_knee=-0.9 * crouch - 1.2 * tuck,
                r_leg=-0.3 * crouch - 0.7 * tuck, r_knee=0.9 * crouch + 1.2 * tuck,
                l_arm=0.2 + 2.6 * air, r_arm=-0.2 - 2.6 * air)


def disco_point(p):
    up = _wave(p)
    s = np.sin(2 * np.pi * p)
    return dict(r_arm=-0.3 - 2.3 * up, r_elbow=-0.05, l_arm=0.3 + 0.2 * up, l_elbow=1.6,
                lean=0.15 * s, x=0.05 * s, l_leg=0.25 * up, l_knee=-0.4 * up, r_leg=-0.1)


def jumping_jack(p):
    o = _wave(p)
    return dict(l_arm=2.7 * o, r_arm=-2.7 * o, l_leg=0.45 * o, r_leg=-0.45 * o,
                lift=0.05 * np.abs(np.sin(2 * np.pi * p)))


MOVES = {f.__name__: f for f in (arm_wave, side_step, kick, sway_turn, squat, jump, disco_point,
                                 jumping_jack)}
_MIRROR = {"l_arm": "r_arm", "r_arm": "l_arm", "l_elbow": "r_elbow", "r_elbow": "l_elbow",
           "l_leg": "r_leg", "r_leg": "l_leg", "l_knee": "r_knee", "r_knee": "l_knee"}
_ODD = {"x", "lean", *_MIRROR}  # parameters whose sign flips in a mirror image


@dataclass
class Choreography:
    """A seeded plan: which move when, at what tempo and with what variation."""
    fps: float = 24.0
    bpm: float = 120.0
    seed: int = 0

    def params(self, num_frames: int) -> dict[str, np.ndarray]:
        """Pose parameters for every frame, (T,) per parameter."""
        rng = np.random.default_rng(self.seed)
        frames_per_beat = self.fps * 60.0 / self.bpm
        out = {k: np.full(num_frames, v, dtype=np.float64) for k, v in REST.items()}
        prev, t, last = None, 0, None
        while t < num_frames:
            name = rng.choice([m for m in MOVES if m != last])
            cycle = frames_per_beat * rng.choice([2, 4]) * rng.uniform(0.92, 1.08)
            length = int(round(cycle * rng.integers(2, 4)))
            cur = self._segment(MOVES[name], length, cycle, rng.uniform(0.75, 1.15), rng.random() < 0.5)
            fade = min(int(frames_per_beat), length)
            if prev is not None:  # smoothstep cross-fade from the previous move's last pose
                w = np.linspace(0, 1, fade + 2)[1:-1]
                w = w * w * (3 - 2 * w)
                for k in cur:
                    cur[k][:fade] = (1 - w) * prev[k] + w * cur[k][:fade]
            n = min(length, num_frames - t)
            for k in out:
                out[k][t:t + n] = cur[k][:n]
            prev = {k: v[-1] for k, v in cur.items()}
            t, last = t + length, name
        return out

    @staticmethod
    def _segment(move, length, cycle, amp, mirror):
        p = np.arange(length) / cycle % 1.0
        offsets = move(p)
        seg = {}
        for k, rest in REST.items():
            src = _MIRROR.get(k, k) if mirror else k
            off = amp * np.broadcast_to(np.asarray(offsets.get(src, 0.0), float), p.shape)
            seg[k] = rest + (-off if mirror and k in _ODD else off)
        return seg


def _dir(angle):
    """Unit vector of a limb at `angle` from straight down, (T, 2) in body coords (y up)."""
    return np.stack([np.sin(angle), -np.cos(angle)], -1)


def forward_kinematics(par: dict[str, np.ndarray]) -> np.ndarray:
    """Joint positions (T, J, 2) in body units, x right, y up, lowest foot on the floor y = 0."""
    T = len(par["x"])
    pos = np.zeros((T, len(JOINTS), 2))
    width = 0.35 + 0.65 * np.abs(np.cos(np.pi * par["turn"]))[:, None]  # turning narrows the body
    up = _dir(np.pi + par["lean"])
    side = np.stack([np.cos(par["lean"]), np.sin(par["lean"])], -1) * width
    pos[:, J["chest"]] = pos[:, J["pelvis"]] + L["torso"] * up
    pos[:, J["neck"]] = pos[:, J["chest"]] + L["neck"] * up
    pos[:, J["head"]] = pos[:, J["neck"]] + L["head"] * _dir(np.pi + 0.5 * par["lean"])
    for s, sign in (("l", 1), ("r", -1)):
        sh, hip = J[f"{s}_shoulder"], J[f"{s}_hip"]
        pos[:, sh] = pos[:, J["chest"]] - 0.02 * up + sign * L["shoulder"] * side
        pos[:, J[f"{s}_elbow"]] = pos[:, sh] + L["upper_arm"] * _dir(par[f"{s}_arm"] + par["lean"])
        pos[:, J[f"{s}_wrist"]] = pos[:, J[f"{s}_elbow"]] + L["forearm"] * _dir(
            par[f"{s}_arm"] + par[f"{s}_elbow"] + par["lean"])
        pos[:, hip] = pos[:, J["pelvis"]] + sign * L["hip"] * side
        pos[:, J[f"{s}_knee"]] = pos[:, hip] + L["thigh"] * _dir(par[f"{s}_leg"])
        shin = par[f"{s}_leg"] + par[f"{s}_knee"]
        pos[:, J[f"{s}_ankle"]] = pos[:, J[f"{s}_knee"]] + L["shin"] * _dir(shin)
        pos[:, J[f"{s}_toe"]] = pos[:, J[f"{s}_ankle"]] + L["foot"] * _dir(shin + sign * np.pi / 2 * 0.9)
    feet = pos[:, [J["l_ankle"], J["r_ankle"], J["l_toe"], J["r_toe"]], 1].min(1)
    pos[..., 1] += (-feet + par["lift"])[:, None]  # ground contact, plus the jump height
    pos[..., 0] += par["x"][:, None]
    return pos


def render_silhouettes(joints: np.ndarray, height: int, width: int):
    """Joints (T, J, 2) in body units -> frames (T, H, W) uint8 and joints in pixels (T, J, 2)."""
    scale = 0.60 * height                       # pixels per body unit: standing figure ~ 60% of H
    px = np.empty(joints.shape, dtype=np.float32)
    px[..., 0] = width / 2 + joints[..., 0] * scale
    px[..., 1] = 0.92 * height - joints[..., 1] * scale  # floor near the bottom; image y points down
    ends = [[J[c[0]], J[c[1]]] for c in CAPSULES]
    segments = px[:, ends]                                            # (T, S, 2, 2)
    radius = np.array([c[2] for c in CAPSULES], np.float32) * scale   # (S,)
    return render_capsules(segments, radius, height, width), px


def make_dancer(num_frames: int = 5000, height: int = 64, width: int = 64, seed: int = 0,
                fps: float = 24.0, bpm: float | None = None):
    """Frames (T, H, W) uint8 and 2D poses (T, J, 2) float32 in pixels of the built-in dancer."""
    rng = np.random.default_rng(seed)
    bpm = float(bpm if bpm is not None else rng.uniform(104, 128))
    par = Choreography(fps=fps, bpm=bpm, seed=seed).params(num_frames)
    frames, poses = render_silhouettes(forward_kinematics(par), height, width)
    return frames, poses.astype(np.float32), {"bpm": bpm, "seed": seed}


def write_synthetic(out, num_frames=5000, height=64, width=64, seed=0, fps=24.0, overwrite=False):
    """Write the built-in dancer as a dataset folder (one clip)."""
    from ..errors import require
    from .writer import write_dataset
    require(num_frames >= 10, f"--frames must be at least 10, got {num_frames}")
    require(8 <= height <= 1024 and 8 <= width <= 1024, f"--size must be within 8..1024, got {height}x{width}")
    frames, poses, info = make_dancer(num_frames, height, width, seed, fps)
    return write_dataset(out, frames, fps=fps, source=f"discodance built-in dancer (seed {seed})",
                         poses=poses, clips=[{"name": f"dancer-seed{seed}", "start": 0, "length": num_frames}],
                         overwrite=overwrite, joint_names=JOINTS, joint_parents=PARENTS,
                         pose_units="px", pose_axes="x right, y down (image pixels)",
                         extra={"synthetic": info})

"""Motion capture -> poses -> silhouette datasets: BVH, keypoint arrays, resampling.

BVH (Biovision Hierarchy), as described in M. Meredith & S. Maddock, "Motion Capture File Formats
Explained" (Dept. of Computer Science, University of Sheffield, 2001) and J. Thingvold's
"Biovision BVH" notes (research.cs.wisc.edu/graphics/Courses/cs-838-1999/Jeff/BVH): a HIERARCHY
of ROOT/JOINT blocks, each with an OFFSET from its parent and a CHANNELS list, leaves marked
`End Site` (OFFSET only), then MOTION with `Frames:`, `Frame Time:` and one row of channel values
per frame in hierarchy order. A joint's local transform is its translation (OFFSET plus any
position channels) then its rotation channels composed in the order listed: `Zrotation Xrotation
Yrotation` means R = Rz @ Rx @ Ry (degrees), so p_child = p_parent + R_parent @ offset_child.
Checked against an independent implementation on the CMU salsa files (docs/mocap.md).

We parse BVH ourselves: the PyPI candidates pull in plotting libraries or per-joint Python
objects, and the one that computed correct positions silently accepted NaN motion values and
unbalanced braces, where we want a one-line error naming the file and line.

Keypoint files (.npy / .npz / .json) are read by keypoints.py into the same Motion container
(with gap filling and resampling). BVH positions are y up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DiscodanceError, require
from .keypoints import BVH_EXTENSIONS, KEYPOINT_EXTENSIONS, Motion, load_keypoints, repair_outliers, resample
from .skeleton import turn_up

_CHANNEL_RE = re.compile(r"^([XYZ])(position|rotation)$", re.IGNORECASE)
MAX_DEGREES = 1e6  # |rotation| beyond this (2,778 turns) is garbage, not an unwrapped angle


# ----------------------------------------------------------------------------- BVH hierarchy
@dataclass
class Skeleton:
    names: list[str] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    offsets: list[list[float]] = field(default_factory=list)
    channels: list[tuple[str, ...]] = field(default_factory=list)  # e.g. ('Xposition', 'Zrotation')
    end_site: list[bool] = field(default_factory=list)


class _Tokens:
    """Whitespace tokens of the HIERARCHY section, each with its line number for errors."""

    def __init__(self, text: str, path: Path):
        self.items = [(tok, n) for n, line in enumerate(text.splitlines(), 1) for tok in line.split()]
        self.i, self.path = 0, path

    def error(self, what: str) -> DiscodanceError:
        line = self.items[min(self.i, len(self.items) - 1)][1] if self.items else 1
        return DiscodanceError(f"{self.path}: malformed BVH hierarchy at line {line}: {what}")

    def peek(self) -> str | None:
        return self.items[self.i][0] if self.i < len(self.items) else None

    def next(self, what: str) -> str:
        if self.i >= len(self.items):
            raise DiscodanceError(f"{self.path}: malformed BVH hierarchy: file ends while reading "
                                  f"{what} (unbalanced braces?)")
        self.i += 1
        return self.items[self.i - 1][0]

    def expect(self, word: str) -> None:
        tok = self.next(repr(word))
        if tok.upper() != word.upper():
            self.i -= 1
            raise self.error(f"expected {word!r}, found {tok!r}")

    def numbers(self, n: int, what: str) -> list[float]:
        vals = [self.next(what) for _ in range(n)]
        try:
            out = [float(v) for v in vals]
        except ValueError:
            raise self.error(f"{what} must be {n} numbers, got {' '.join(vals)!r}") from None
        if not np.all(np.isfinite(out)):
            raise self.error(f"{what} is not finite: {' '.join(vals)!r}")
        return out


def _parse_joint(tok: _Tokens, sk: Skeleton, name: str, parent: int, end: bool) -> None:
    """ROOT/JOINT/End Site block, recursively; the opening keyword and name are already read."""
    index = len(sk.names)
    tok.expect("{")
    tok.expect("OFFSET")
    sk.names.append(name)
    sk.parents.append(parent)
    sk.offsets.append(tok.numbers(3, f"OFFSET of {name!r}"))
    sk.end_site.append(end)
    channels: tuple[str, ...] = ()
    if not end:
        tok.expect("CHANNELS")
        count = tok.next("channel count")
        if not count.isdigit():
            raise tok.error(f"channel count of {name!r} must be an integer, got {count!r}")
        channels = tuple(tok.next(f"channels of {name!r}") for _ in range(int(count)))
        bad = [c for c in channels if not _CHANNEL_RE.match(c)]
        if bad or len({c.lower() for c in channels}) != len(channels):
            raise tok.error(f"bad CHANNELS for {name!r}: {' '.join(channels)} "
                            "(expected distinct X/Y/Z position/rotation names)")
    sk.channels.append(channels)
    while True:
        word = tok.next(f"the body of {name!r}")
        if word == "}":
            return
        if word.upper() == "JOINT" and not end:
            _parse_joint(tok, sk, tok.next("a joint name"), index, False)
        elif word.upper() == "END" and not end:
            tok.expect("Site")
            _parse_joint(tok, sk, f"{name}_end", index, True)
        else:
            tok.i -= 1
            raise tok.error(f"unexpected {word!r} inside {name!r}")


def _parse_hierarchy(text: str, path: Path) -> Skeleton:
    tok, sk = _Tokens(text, path), Skeleton()
    tok.expect("HIERARCHY")
    while tok.peek() is not None and tok.peek().upper() == "ROOT":
        tok.next("ROOT")
        _parse_joint(tok, sk, tok.next("the root name"), -1, False)
    if not sk.names:
        raise tok.error("no ROOT joint")
    if tok.peek() is not None:
        raise tok.error(f"unexpected {tok.peek()!r} after the last joint (unbalanced braces?)")
    return sk


# ----------------------------------------------------------------------------- BVH motion
def _parse_motion(lines: list[str], first_line: int, n_channels: int, path: Path):
    """(T, C) float64 channel values and the frame time, with every row checked."""
    header = {}
    for key in ("Frames", "Frame Time"):
        m = re.match(rf"\s*{key}\s*:\s*(\S+)\s*$", lines[0] if lines else "", re.IGNORECASE)
        require(m is not None, f"{path}: line {first_line}: expected '{key}: <number>' in MOTION")
        header[key], lines, first_line = m.group(1), lines[1:], first_line + 1
    try:
        n_frames, dt = int(header["Frames"]), float(header["Frame Time"])
    except ValueError:
        raise DiscodanceError(f"{path}: bad MOTION header (Frames: {header['Frames']}, "
                              f"Frame Time: {header['Frame Time']})") from None
    require(np.isfinite(dt) and dt > 0, f"{path}: Frame Time must be positive, got {dt}")
    rows = [(n, line) for n, line in enumerate(lines, first_line) if line.strip()]
    require(n_frames > 0 and rows, f"{path}: BVH file has zero frames")
    require(len(rows) == n_frames,
            f"{path}: header says {n_frames} frames but there are {len(rows)} motion rows")
    for n, line in rows:
        count = len(line.split())
        require(count == n_channels, f"{path}: line {n}: motion row has {count} values but the "
                                     f"hierarchy declares {n_channels} channels")
    try:
        values = np.array(" ".join(line for _, line in rows).split(), dtype=np.float64)
    except ValueError:
        n, bad = _first_bad_row(rows)
        raise DiscodanceError(f"{path}: line {n}: non-numeric motion value {bad!r}") from None
    values = values.reshape(len(rows), n_channels)  # (T, C)
    finite = np.isfinite(values)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise DiscodanceError(f"{path}: line {rows[r][0]}: motion value {values[r, c]} (channel {c}) "
                              "is not a finite number")
    return values, dt


def _first_bad_row(rows):
    for n, line in rows:
        for v in line.split():
            try:
                float(v)
            except ValueError:
                return n, v
    return rows[0][0], "?"


def read_bvh(path: str | Path) -> tuple[Skeleton, np.ndarray, float]:
    """Parse a BVH file: skeleton, channel values (T, C) in file order, frame time in seconds."""
    path = Path(path)
    require(path.is_file(), f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise DiscodanceError(f"{path}: not a text BVH file (undecodable bytes)") from None
    lines = text.splitlines()
    motion_at = next((i for i, line in enumerate(lines) if line.strip().upper() == "MOTION"), None)
    require(motion_at is not None, f"{path}: malformed BVH: no MOTION section")
    skeleton = _parse_hierarchy("\n".join(lines[:motion_at]), path)
    values, dt = _parse_motion(lines[motion_at + 1:], motion_at + 2, sum(map(len, skeleton.channels)), path)
    return skeleton, values, dt


# ----------------------------------------------------------------------------- kinematics
def _axis_rotations(axis: str, degrees: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotation matrices about one axis (right-handed, counter-clockwise positive)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros((len(a), 3, 3))
    i, j = {"X": (1, 2), "Y": (2, 0), "Z": (0, 1)}[axis]
    k = 3 - i - j
    R[:, k, k] = 1.0
    R[:, i, i], R[:, i, j], R[:, j, i], R[:, j, j] = c, -s, s, c
    return R


def forward_kinematics(skeleton: Skeleton, values: np.ndarray) -> np.ndarray:
    """World positions (T, J, 3) of every joint and End Site, vectorised over frames.

    Joints are visited in file order, so a parent is always done before its children.
    """
    T, J = len(values), len(skeleton.names)
    pos = np.zeros((T, J, 3))                 # (T, J, 3)
    rot = np.zeros((J, T, 3, 3))              # world rotation per joint
    col = 0
    for j in range(J):
        chans = skeleton.channels[j]
        trans = np.broadcast_to(np.asarray(skeleton.offsets[j], float), (T, 3)).copy()  # (T, 3)
        local = np.broadcast_to(np.eye(3), (T, 3, 3))
        for k, name in enumerate(chans):
            axis, kind = name[0].upper(), name[1:].lower()
            if kind == "position":
                trans[:, "XYZ".index(axis)] += values[:, col + k]
            else:
                local = local @ _axis_rotations(axis, values[:, col + k])  # listed order
        col += len(chans)
        p = skeleton.parents[j]
        if p < 0:
            pos[:, j], rot[j] = trans, local
        else:
            pos[:, j] = pos[:, p] + np.einsum("tab,tb->ta", rot[p], trans)
            rot[j] = rot[p] @ local
    return pos.astype(np.float32)


def _snap_fps(dt: float) -> float:
    """1 / Frame Time, snapped to an integer rate when the file only rounded it (0.008333 s)."""
    fps = 1.0 / dt
    return float(round(fps)) if abs(fps - round(fps)) < 1e-4 * fps else fps


def _absurd_rotations_to_nan(skeleton: Skeleton, values: np.ndarray) -> np.ndarray:
    """Rotation values beyond MAX_DEGREES -> NaN, so the joints they turn count as missing.

    cos(1e308 degrees) is a finite but meaningless number: left alone it would draw a limb
    pointing anywhere; as NaN, repair_outliers interpolates it like any other glitch.
    """
    kinds = [c[1:].lower() for chans in skeleton.channels for c in chans]
    rotation = np.array([k == "rotation" for k in kinds], dtype=bool)          # (C,)
    return np.where(rotation & (np.abs(values) > MAX_DEGREES), np.nan, values)


def load_bvh(path: str | Path, *, scale: float = 1.0, max_gap: int = 5) -> Motion:
    """BVH file -> Motion with every joint and End Site (End Sites flagged), positions * scale.

    Positions that come out of forward kinematics non-finite (values like 1e308 overflow) or
    as outliers (outliers.py) are interpolated over gaps of <= max_gap frames, with a warning.
    """
    skeleton, values, dt = read_bvh(path)
    with np.errstate(all="ignore"):  # overflow to inf/NaN is expected here and handled below
        positions = forward_kinematics(skeleton, _absurd_rotations_to_nan(skeleton, values))
        positions = positions * np.float32(scale)  # (T, J, 3)
    positions, repaired = repair_outliers(positions, max_gap, str(path), count_nonfinite=True)
    return Motion(positions, list(skeleton.names), np.array(skeleton.parents), _snap_fps(dt),
                  str(path), np.array(skeleton.end_site, dtype=bool), repaired=repaired)


def load_motion(path: str | Path, *, scale: float = 1.0, **keypoint_options) -> Motion:
    """Dispatch on the extension: .bvh (positions * scale), or .npy/.npz/.json keypoints."""
    path = Path(path)
    ext = path.suffix.lower()
    require(path.is_file(), f"{path}: file not found")
    if ext in BVH_EXTENSIONS:
        return load_bvh(path, scale=scale, max_gap=keypoint_options.get("max_gap", 5))
    require(ext in KEYPOINT_EXTENSIONS, f"{path}: unknown extension {ext!r} "
            f"(expected one of {', '.join(BVH_EXTENSIONS + KEYPOINT_EXTENSIONS)})")
    return load_keypoints(path, **keypoint_options)


# ----------------------------------------------------------------------------- datasets
BVH_AXES = "BVH file axes: y up; view 'front' looks along -z with +x to the image right"


def _pose_description(motion: Motion, up: str) -> tuple[str, str]:
    """(units, axes) of the stored poses."""
    if motion.positions.shape[-1] == 2:
        return "file units (image pixels)", "image axes: x right, y down"
    units, axes = ("m", BVH_AXES) if motion.source.lower().endswith(BVH_EXTENSIONS) else ("file units", "keypoint file axes: y up")
    return units, axes if up == "+y" else f"{axes.split(':')[0]} turned so that y is up (the file's {up} was up)"


def _check_inputs(paths, size, fps) -> list[Path]:
    """Fail before any dataset folder exists: every file must exist and have a known type."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    require(paths, "no motion files given")
    known = BVH_EXTENSIONS + KEYPOINT_EXTENSIONS
    for p in paths:
        require(p.is_file(), f"{p}: file not found")
        require(p.suffix.lower() in known,
                f"{p}: unknown extension {p.suffix!r} (expected one of {', '.join(known)})")
    require(len(size) == 2 and all(int(s) == s and s >= 8 for s in size),
            f"frame size must be two integers >= 8, got {size}")
    from .budget import check_frame_size
    check_frame_size(int(size[0]), int(size[1]))
    require(np.isfinite(fps) and fps > 0, f"fps must be positive, got {fps}")
    return paths


CHUNK_BYTES = 32 << 20  # frames drawn at a time: at most 512 or 32 MB of them


def _chunk_frames(size: tuple[int, int]) -> int:
    return int(max(1, min(512, CHUNK_BYTES // (size[0] * size[1]))))


def _drawing_bytes(size: tuple[int, int]) -> int:
    """Peak memory of render_capsules on one chunk: the chunk as bool and as uint8, plus about
    eight float64 temporaries of max(one frame, 2**24) elements (its max_elements)."""
    pixels = size[0] * size[1]
    chunk = _chunk_frames(size) * pixels
    return 2 * chunk + 64 * min(chunk, max(pixels, 1 << 24))


def _clip(motion: Motion, fps: float, yaw: float, size: tuple[int, int], center: str, drawing):
    """One motion -> (layout key, poses (T, J, D), silhouette chunk generator, its Framing).
    `drawing` (skeleton.Drawing): the up axis (turned to +y, poses too) and the body."""
    from .render import default_body, plan_silhouettes, project, render_capsules

    positions = resample(motion.positions, motion.fps or fps, fps)            # (T, J, D)
    positions = turn_up(positions, drawing.up) if positions.shape[-1] == 3 else positions  # '+y': as is
    xy = project(positions, yaw, y_down=positions.shape[-1] == 2)             # (T, J, 2)
    body = drawing.body or default_body(motion.names if motion.named else None, motion.parents, xy.shape[1])
    seg, radii, framing = plan_silhouettes(xy, body, *size, center=center, smooth=max(1, round(fps / 2)))
    step = _chunk_frames(size)
    chunks = (render_capsules(seg[s:s + step], radii, *size) for s in range(0, len(seg), step))
    kept = tuple(drawing.names or [n for n, e in zip(motion.names, motion.end_site) if not e])
    parents = motion.joint_parents() if drawing.parents is None else drawing.parents
    layout = (kept, tuple(int(p) for p in parents), positions.shape[-1], *_pose_description(motion, drawing.up))
    return layout, positions[:, ~motion.end_site], chunks, framing


def prepare_mocap(paths, out, *, size=(64, 64), fps: float = 30.0, view="front",
                  overwrite: bool = False, center: str = "follow", scale: float = 1.0,
                  max_gap: int = 5, keypoint_fps: float | None = None,
                  joint_names=None, joint_parents=None, force: bool = False, up: str | None = None,
                  skeleton=None) -> Path:
    """Motion files (.bvh, .npy, .npz, .json) -> one silhouette dataset, one clip per file.

    Each file is resampled to `fps`, projected from `view` ('front', 'side', 'back' or a yaw in
    degrees) and drawn as silhouettes of `size` (H, W) with one scale and floor per clip; with
    center='follow' the camera pans with the dancer (smoothed over 0.5 s), with 'clip' it stays
    put. Poses (joints without End Sites, resampled, file axes, BVH positions * `scale` taken as
    metres) are stored too. A keypoint file without a frame rate is taken to be at `keypoint_fps`,
    or at `fps` when that is None too. All files must share one skeleton, inferred with the up
    axis for keypoints that name none; `up` ('z', '-y', ...) and `skeleton` ('none' or a JSON
    file) override it (skeleton.plan_drawing, docs/mocap.md).
    """
    from ..progress import say
    from .budget import check_budget
    from .render import parse_view
    from .skeleton import parse_up, plan_drawing
    from .writer import DatasetWriter

    paths = _check_inputs(paths, size, fps)
    yaw, size = parse_view(view), (int(size[0]), int(size[1]))
    options = dict(scale=scale, fps=keypoint_fps, max_gap=max_gap, joint_names=joint_names,
                   joint_parents=joint_parents)
    motions = [load_motion(path, **options) for path in paths]  # every file checked before writing
    drawing = plan_drawing(motions, fps, None if up is None else parse_up(up), skeleton)
    total = sum(len(resample(m.positions[:, :1], m.fps or fps, fps)) for m in motions)
    check_budget(out, total, *size, working_bytes=_drawing_bytes(size))
    first, clips, used = None, [], set()
    with DatasetWriter(out, *size, overwrite=overwrite, check=True, force=force) as writer:  # gate.py
        for path, motion in zip(paths, motions):
            layout, poses, chunks, framing = _clip(motion, fps, yaw, size, center, drawing)
            require(first is None or layout == first, f"{path}: its skeleton ({len(layout[0])} joints, "
                    f"{layout[2]}-D) differs from {paths[0].name}'s; one dataset needs one skeleton")
            first, name = layout, _unique(path.stem, used)
            n = writer.add_clip(name, chunks, [poses])
            clips.append({"name": name, "file": path.name, "source_fps": motion.fps or fps,
                          "frames": n, "pixels_per_unit": round(framing.scale, 4), "repaired": motion.repaired,
                          "framing": framing.to_meta()})
        names, parents, _, units, axes = first
        extra = {"kind": "mocap", "view": str(view), "yaw_degrees": yaw, "center": center, "clips": clips,
                 "skeleton": drawing.meta()}
        done = writer.finish(fps=fps, source="mocap: " + ", ".join(p.name for p in paths),
                             joint_names=list(names), joint_parents=list(parents), pose_units=units,
                             pose_axes=axes, extra=extra)
    if drawing.found:  # after the gate: a refused dataset gets its one error line only
        say(drawing.line(len(names)))
    return done


def _unique(name: str, used: set) -> str:
    out, k = name, 2
    while out in used:
        out, k = f"{name}_{k}", k + 1
    used.add(out)
    return out

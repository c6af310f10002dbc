"""A body for keypoints that name no skeleton: the up axis, bones from rigid co-motion, body parts.

Optical marker arrays and other keypoint files often come without joint names or parents, with z
(or any axis) up and in arbitrary units. Drawn as a chain 0-1-2-... they are a tangle. Here:

- **Up axis** (`detect_up`): the body is tallest along it (median extent over frames), and along
  +up the lowest marker is a planted foot: it stays still and on one floor level, where the
  lowest marker along -up (a head or raised hand) moves with the dancer.
- **Bones** (`bone_tree`): markers on one bone keep their distance, so a minimum spanning tree over
  mean distance + RIGID x its standard deviation over time follows the skeleton. Bones a user
  lists (`--skeleton FILE`) come first; the data only joins what they leave unconnected.
- **Parts** (`body_parts`): the up to five longest branches of the tree are the limbs, the tree
  that joins their branch points is the trunk, the two limbs ending lowest are legs, the highest
  remaining one the head, the rest arms. A compact cluster at a limb's end (fingers, a face) is
  drawn as one hand/head/foot capsule, as render.body_from_skeleton does with named skeletons.
Radii are render.RADIUS fractions of the dancer's height, so units do not matter. The facing is
not inferred: after turning the up axis to y, the first other axis of the file (x, or y when x
is up) is the image's right in the front view (docs/mocap.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree, shortest_path

from ..errors import DiscodanceError, require
from .render import RADIUS, Body, body_height, body_part

UP_AXES = ("+x", "-x", "+y", "-y", "+z", "-z")
RIGID = 4.0        # weight of a distance's std over time against its mean: rigid pairs first
MIN_LIMB = 0.12    # a branch shorter than this share of the height is fingers or a face, not a limb
TORSO_LINK = 0.15  # limb bones ending this close to the trunk (share of the height) are torso
# a limb's end cluster reaches at most this share of the height from its first marker: a hand is
# 0.11 long, a foot 0.15, a face within 0.1 of the skull's base (Drillis & Contini's proportions)
CLUSTER = {"arm": 0.12, "leg": 0.16, "head": 0.1, "limb": 0.1}
STILL_LAG = 0.2    # seconds over which a planted foot is seen to stay put
SAMPLE = 1000      # frames used to measure distances and heights, spread evenly
# body part of a limb's bones by the position of their middle along the limb (share of its length)
PROFILE = {"arm": [(0.35, "collar"), (0.65, "upper_arm"), (1.0, "forearm")],
           "leg": [(0.5, "thigh"), (0.88, "shin"), (1.0, "foot")], "head": [(1.0, "neck")], "limb": [(1.0, "limb")]}
END_PART = {"arm": "hand", "leg": "foot", "head": "head", "limb": "limb"}
# limb bones ending within TORSO_LINK of the trunk: the pelvis is torso-wide, a collar bone is not
NEAR_PART = {"arm": "collar", "leg": "torso", "head": "torso", "limb": "torso"}


# ----------------------------------------------------------------------------- up axis
def parse_up(text) -> str:
    """'z', '+Z', '-y' ... -> '+z', '-y' (one of UP_AXES)."""
    t = str(text).strip().lower()
    t = t if t[:1] in "+-" else "+" + t
    require(t in UP_AXES, f"bad up axis {text!r}: use x, y, z, -x, -y or -z")
    return t


def turn_up(positions: np.ndarray, up: str) -> np.ndarray:
    """(T, J, 3) positions with `up` pointing up -> the same turned so that +y is up.

    A proper rotation: the first other axis (x, or y when x is up) keeps its direction as the
    new x (the image's right in the front view) and the new z is x cross up, so z-up data
    (x, y, z) becomes (x, z, -y), the usual z-up -> y-up turn, and '+y' changes nothing.
    """
    axis, sign = "xyz".index(up[1]), (1.0 if up[0] == "+" else -1.0)
    up_vec = np.eye(3)[axis] * sign
    right = np.eye(3)[0 if axis else 1]
    rotation = np.stack([right, up_vec, np.cross(right, up_vec)])            # (3, 3) rows: new axes
    return np.einsum("ab,tjb->tja", rotation, positions).astype(positions.dtype)


def _sample(positions: np.ndarray, count: int = SAMPLE) -> np.ndarray:
    idx = np.unique(np.linspace(0, len(positions) - 1, min(count, len(positions))).round().astype(int))
    return np.asarray(positions[idx], np.float64)


def up_evidence(positions: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(median extent per axis (3,), floor cost per signed axis (6,), in UP_AXES order).

    The floor cost of a direction is how far its lowest marker moves in STILL_LAG seconds
    (median over frames) plus how much the lowest level wanders (10-90% range), both over the
    height: small for +up (a planted foot), large for -up and for horizontal directions.
    """
    p = np.asarray(positions, np.float64)                                      # (T, J, 3)
    extent = np.median(p.max(1) - p.min(1), axis=0)                            # (3,)
    height = max(float(extent.max()), 1e-12)
    lag = int(min(max(1, round(STILL_LAG * fps)), max(1, len(p) - 1)))
    t = np.arange(max(0, len(p) - lag))
    cost = []
    for up in UP_AXES:
        h = p[..., "xyz".index(up[1])] * (1.0 if up[0] == "+" else -1.0)      # (T, J)
        low = h.argmin(axis=1)                                                 # (T,)
        moved = np.linalg.norm(p[t + lag, low[t]] - p[t, low[t]], axis=-1) if len(t) else np.zeros(1)
        floor = h.min(axis=1)
        cost.append((np.median(moved) + np.percentile(floor, 90) - np.percentile(floor, 10)) / height)
    return extent, np.array(cost)


def detect_up(clips: list[tuple[np.ndarray, float]]) -> str:
    """The up axis of (positions (T, J, 3), fps) clips of one capture: the axis along which the body
    is tallest (mean over clips), signed by the lower floor cost (summed over clips)."""
    evidence = [up_evidence(p, fps) for p, fps in clips]
    axis = int(np.argmax(np.mean([e for e, _ in evidence], axis=0)))
    cost = np.sum([c for _, c in evidence], axis=0)                            # (6,)
    return UP_AXES[2 * axis] if cost[2 * axis] <= cost[2 * axis + 1] else UP_AXES[2 * axis + 1]


# ----------------------------------------------------------------------------- bones
def _distance_stats(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over frames (J, J) of every marker-to-marker distance; points (T, J, D)."""
    J = points.shape[1]
    total, squares = np.zeros((J, J)), np.zeros((J, J))
    step = max(1, (1 << 22) // (J * J))                       # frames at a time: bounded memory
    for s in range(0, len(points), step):
        d = np.linalg.norm(points[s:s + step, :, None] - points[s:s + step, None], axis=-1)  # (t, J, J)
        total += d.sum(0)
        squares += (d ** 2).sum(0)
    mean = total / len(points)
    return mean, np.sqrt(np.maximum(squares / len(points) - mean ** 2, 0.0))


def bone_tree(mean: np.ndarray, std: np.ndarray, bones=None) -> np.ndarray:
    """Bones (J - 1, 2) of a spanning tree over the markers: rigidly co-moving close pairs first.

    mean, std (J, J): distances over time (_distance_stats). `bones` (pairs of indices) a user
    listed are taken first (a cycle among them is broken at its least rigid bone); the data
    joins what they leave apart.
    """
    weight = mean + RIGID * std
    weight = weight / max(float(weight.max()), 1e-12) + 1.0                   # all in [1, 2]: never 0
    if bones is not None and len(bones):
        a, b = np.asarray(bones, dtype=int).T
        weight[a, b] = weight[b, a] = 1e-6 * weight[a, b]                     # listed bones before any other
    np.fill_diagonal(weight, 0.0)
    tree = minimum_spanning_tree(csr_matrix(np.triu(weight))).tocoo()
    return np.stack([tree.row, tree.col], axis=1)


def _tree(bones: np.ndarray, lengths: np.ndarray, J: int):
    """Sparse symmetric tree graph with bone lengths (tiny for zero-length bones)."""
    a, b = bones[:, 0], bones[:, 1]
    w = np.maximum(lengths[a, b], 1e-9)
    return csr_matrix((np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(J, J))


def _root_at(graph, root: int) -> np.ndarray:
    """Parents (J,) of the tree rooted at `root` (-1 for the root)."""
    _, pred = breadth_first_order(graph, root, directed=False, return_predecessors=True)
    return np.where(pred < 0, -1, pred)


# ----------------------------------------------------------------------------- body parts
@dataclass
class Tree:
    """A spanning tree of the markers with what body_parts needs to know about it."""
    parents: np.ndarray   # (J,) -1 for the root (a trunk marker)
    dist: np.ndarray      # (J, J) path length along the bones (mean marker distances)
    hops: np.ndarray      # (J, J) number of bones on the path
    height: float         # the dancer's height, in the file's units

    def chain(self, node: int, stop) -> list[int]:
        """Markers from `node` up to, not including, the first one in `stop`, nearest to it first."""
        out = []
        while node >= 0 and node not in stop:
            out.append(node)
            node = int(self.parents[node])
        return out[::-1]

    def below(self, node: int) -> list[int]:
        """`node` and every marker under it."""
        out, todo = [], [node]
        while todo:
            v = todo.pop()
            out.append(v)
            todo += [int(c) for c in np.flatnonzero(self.parents == v)]
        return out

    def on_path(self, a: int, b: int) -> np.ndarray:
        return np.flatnonzero(self.hops[a] + self.hops[b] == self.hops[a, b])


def _limb_ends(tree: Tree, centre: int) -> list[int]:
    """Up to five markers ending the longest branches seen from `centre`, each adding at least
    MIN_LIMB of the height to the tree already covered (so a finger is not a limb)."""
    parents = tree.parents
    leaves = set(range(len(parents))) - set(parents[parents >= 0].tolist()) - {centre}
    covered, ends = {centre}, []
    while len(ends) < 5 and leaves - covered:
        gain = {leaf: tree.dist[leaf, tree.parents[tree.chain(leaf, covered)[0]]]
                for leaf in sorted(leaves - covered)}                      # length of its new branch
        best = max(gain, key=gain.get)
        if gain[best] < MIN_LIMB * tree.height:
            break
        ends.append(best)
        covered |= set(tree.chain(best, covered))
    return ends


def _trunk(tree: Tree, graph, ends: list[int], centre: int) -> set[int]:
    """The markers between the limbs' branch points: the smallest subtree holding every marker
    where three or more of the paths between limb ends meet ({centre} when none do)."""
    if len(ends) < 3:
        return {centre}
    span = set().union(*(tree.on_path(a, b).tolist() for a in ends for b in ends if a < b))
    adjacency = graph.tolil().rows
    branch = [v for v in span if sum(n in span for n in adjacency[v]) >= 3]
    if not branch:
        return {centre}
    return set(branch).union(*(tree.on_path(a, b).tolist() for a in branch for b in branch))


def _labels(points: np.ndarray, ends: list[int]) -> dict[int, str]:
    """Limb kind per end: the two ending lowest (median over frames, above that frame's lowest
    marker) are legs, the highest of three or more others the head, the rest arms."""
    height = np.median(points[:, ends, 1] - points[..., 1].min(1, keepdims=True), axis=0)  # (E,)
    order = [ends[i] for i in np.argsort(height, kind="stable")]
    if len(ends) < 3:
        return {e: "limb" for e in ends}
    labels = {e: ("leg" if k < 2 else "arm") for k, e in enumerate(order)}
    if len(ends) >= 5:
        labels[order[-1]] = "head"
    return labels


def _cluster(tree: Tree, chain: list[int], kind: str, points: np.ndarray) -> int | None:
    """Where a limb's compact end cluster starts: its first marker with two or more markers
    under it, all within CLUSTER[kind] of the height (fingers, a face), or None."""
    for v in chain:
        under = tree.below(v)
        reach = np.linalg.norm(points[:, under] - points[:, v:v + 1], axis=-1).mean(0).max()  # (T, U) -> scalar
        if len(under) >= 3 and reach <= CLUSTER[kind] * tree.height:
            return v
    return None


def _limb(tree: Tree, chain: list[int], kind: str, points: np.ndarray, rows: list, extra: list) -> dict[int, str | None]:
    """Body part of each limb bone (keyed by the marker it ends at): NEAR_PART for bones ending
    within TORSO_LINK of the height from the trunk (pelvis, collar bone), then PROFILE by where
    the bone's middle sits along the limb; the head's bones are torso up to the neck (its last
    bone). An end cluster becomes one capsule from its first marker to the mean of the others
    (appended to rows / extra); its own bones are None (not drawn)."""
    attach = int(tree.parents[chain[0]])
    start = _cluster(tree, chain, kind, points)
    bones = chain[:chain.index(start) + 1] if start is not None else chain
    length = max(float(tree.dist[attach, bones[-1]]), 1e-12)
    part: dict[int, str | None] = {}
    for v in bones:
        middle = (tree.dist[attach, tree.parents[v]] + tree.dist[attach, v]) / 2 / length
        near = tree.dist[attach, v] <= TORSO_LINK * tree.height
        part[v] = NEAR_PART[kind] if near or kind == "head" else next(n for edge, n in PROFILE[kind] if middle <= edge + 1e-9)
    if kind == "head":                         # the neck into the face cluster, else the head itself
        part[bones[-1]] = "neck" if start is not None else "head"
    if start is not None:
        inside = [u for u in tree.below(start) if u != start]
        part.update({u: None for u in inside})
        rows.append(np.mean([np.eye(len(tree.parents))[u] for u in inside], axis=0))
        extra.append((start, len(rows) - 1, END_PART[kind]))
    return part


def body_parts(points: np.ndarray, mean: np.ndarray, bones: np.ndarray) -> tuple[Body, np.ndarray, dict]:
    """Capsules for markers (T, J, D), y up, joined by `bones` (J - 1, 2) with mean lengths from
    `mean` (J, J): the Body, the tree's parents (J,) rooted in the trunk, and what was found."""
    J = points.shape[1]
    graph = _tree(bones, mean, J)
    dist = shortest_path(graph, directed=False)
    centre = int(np.argmin(dist.max(1)))                                      # the tree's middle
    tree = Tree(_root_at(graph, centre), dist, shortest_path(graph, directed=False, unweighted=True),
                body_height(points))
    ends = _limb_ends(tree, centre)
    trunk = _trunk(tree, graph, ends, centre)
    tree.parents = _root_at(graph, min(trunk, key=lambda v: dist[centre, v]))
    rows, extra, labels = list(np.eye(J)), [], _labels(points, ends)
    part: dict[int, str | None] = {v: "torso" for v in trunk}
    for end, kind in labels.items():
        part.update(_limb(tree, tree.chain(end, trunk), kind, points, rows, extra))
    order, _ = breadth_first_order(graph, int(np.flatnonzero(tree.parents < 0)[0]), directed=False)
    for v in order:                            # side branches take the part they hang from
        part.setdefault(int(v), part.get(int(tree.parents[v])))
    segments = [(int(tree.parents[v]), v, part[v]) for v in range(J) if tree.parents[v] >= 0 and part[v]]
    segments += extra
    found = {"limbs": sorted(labels.values()), "trunk_markers": len(trunk), "capsules": len(segments)}
    return (Body(np.array(rows), np.array([s[:2] for s in segments]), np.array([RADIUS[s[2]] for s in segments])),
            tree.parents, found)


def infer_body(points: np.ndarray, bones=None) -> tuple[Body, np.ndarray, dict]:
    """A Body for markers (T, J, D), y up, without a named skeleton (see the module's notes):
    (body, the bone tree's parents (J,), what was found). `bones`: pairs a user listed."""
    sample = _sample(points)
    mean, std = _distance_stats(sample)
    return body_parts(sample, mean, bone_tree(mean, std, bones))


# ----------------------------------------------------------------------------- what prepare draws
def generic_names(names) -> bool:
    """True when no joint name says a body part (marker01, joint7, 0, ...)."""
    return all(body_part(str(n)) == "limb" for n in names)


def read_skeleton_file(path, num_joints: int) -> dict:
    """--skeleton FILE: JSON {"joint_names": [...]?, "parents": [...]} or {"bones": [[a, b], ...]}
    (or just the list of bones) -> {"names": list | None, "parents": (J,) | None, "bones": (B, 2) | None}."""
    path = Path(path)
    require(path.is_file(), f"skeleton file {path} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DiscodanceError(f"skeleton file {path}: not valid JSON ({e})") from None
    data = {"bones": data} if isinstance(data, list) else data
    require(isinstance(data, dict) and ("parents" in data) != ("bones" in data),
            f"skeleton file {path}: expected an object with 'parents' (and optional 'joint_names') "
            "or with 'bones' (pairs of joint indices), or a list of bones")
    names = data.get("joint_names")
    try:
        parents = None if "parents" not in data else np.asarray(data["parents"], dtype=int)
        bones = None if "bones" not in data else np.asarray(data["bones"], dtype=int).reshape(-1, 2)
        names = None if names is None else [str(n) for n in names]
    except (TypeError, ValueError):
        raise DiscodanceError(f"skeleton file {path}: parents must be integers, bones pairs of integers, "
                              "joint_names a list") from None
    J = num_joints
    require(names is None or len(names) == J, f"skeleton file {path}: {len(names or [])} joint names for {J} joints")
    require(parents is None or (parents.shape == (J,) and np.all((parents >= -1) & (parents < J))),
            f"skeleton file {path}: parents must be {J} indices in -1..{J - 1}, one per joint")
    require(bones is None or (len(bones) > 0 and np.all((bones >= 0) & (bones < J)) and np.all(bones[:, 0] != bones[:, 1])),
            f"skeleton file {path}: bones must be pairs of two different joint indices in 0..{J - 1}")
    return {"names": names, "parents": parents, "bones": bones}


@dataclass
class Drawing:
    """How prepare draws one set of motion files: their up axis and the body."""
    up: str = "+y"                    # the files' up axis, turned to +y before projecting
    kind: str = "own"                 # 'own' (each file's skeleton, or COCO-17 / a chain), 'inferred', 'file'
    body: Body | None = None          # None: each file's own (render.default_body)
    parents: np.ndarray | None = None  # (J,) the bone tree drawn, recorded in meta.json
    names: list[str] | None = None
    detected: bool = False            # up found by detect_up
    found: dict | None = None         # inferred: limbs, trunk markers, capsules

    def meta(self) -> dict:
        return {"kind": self.kind, "up": self.up, "up_detected": self.detected} | (self.found or {})

    def line(self, num_joints: int) -> str:
        """One line for the log; only for an inferred body (found is set)."""
        return (f"skeleton: inferred for {num_joints} joints without a named skeleton: up {self.up}"
                f"{' (detected)' if self.detected else ''}, limbs {', '.join(self.found['limbs'])}, "
                f"{self.found['trunk_markers']} trunk markers, {self.found['capsules']} capsules")


def _upright(positions: np.ndarray, up: str) -> np.ndarray:
    """Positions with +y up: 3-D turned (turn_up), 2-D image coordinates (y down) flipped."""
    if positions.shape[-1] == 2:
        return positions * np.array([1.0, -1.0], dtype=positions.dtype)
    return turn_up(positions, up)


def plan_drawing(motions, fps: float, up: str | None = None, skeleton=None) -> Drawing:
    """How to draw motions (keypoints.Motion, one capture): up None (detected when the skeleton is
    inferred, else +y) or one of UP_AXES; skeleton None (inferred when the files name none),
    'none' (as before this module: each file's own skeleton, COCO-17 or a chain 0-1-2-...) or
    a JSON skeleton file (read_skeleton_file)."""
    from .keypoints import BVH_EXTENSIONS
    from .render import COCO17, body_from_skeleton

    first = motions[0]
    J, D = first.positions.shape[1:]
    bvh = any(m.source.lower().endswith(BVH_EXTENSIONS) for m in motions)
    require(up is None or D == 3, "--up is for 3-D motion; 2-D keypoints are image coordinates (y down)")
    require(skeleton is None or not bvh, "--skeleton is for keypoint files; a BVH file names its own skeleton")
    known = bvh or J < 3 or list(first.names) == COCO17 or (
        first.named and first.has_parents and not generic_names(first.names))
    if skeleton == "none" or (skeleton is None and known):
        return Drawing(up=up or "+y")
    for m in motions:
        require(m.positions.shape[1:] == (J, D), f"{m.source}: {m.positions.shape[1]} {m.positions.shape[2]}-D "
                f"joints, but {first.source} has {J} {D}-D joints; one dataset needs one skeleton")
    given = read_skeleton_file(skeleton, J) if skeleton is not None else {}
    detected = up is None and D == 3
    up = detect_up([(m.positions, m.fps or fps) for m in motions]) if detected else (up or "+y")
    names, parents = given.get("names"), given.get("parents")
    if parents is not None and names and not generic_names(names):
        return Drawing(up, "file", body_from_skeleton(names, parents), parents, names, detected)
    bones = given.get("bones") if parents is None else [(p, j) for j, p in enumerate(parents) if p >= 0]
    points = np.concatenate([_sample(_upright(m.positions, up), SAMPLE // len(motions) + 1) for m in motions])
    body, tree, found = infer_body(points, bones)
    return Drawing(up, "file" if given else "inferred", body, tree, names, detected, found)

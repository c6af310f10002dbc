"""Which person is the dancer: follow everyone through the clip, then choose one by a rule.

On street footage the largest person is often a spectator standing near the camera. What sets a
dancer apart is that they move, so the default rule, `moving`, chooses the person inside whose mask
the picture changes most over the clip, once the camera's pan is taken out (motion.py); a person
present in few frames scores little, since the sum is divided by the clip's length. `largest`
chooses the largest mean area (absent frames count as zero), `point X,Y` the person under a point
of the first frame, `box X,Y,W,H` the person most inside a box of the first frame (coordinates in
source pixels).

Identity is kept by overlap: each frame's people are matched to the tracks of the last second by
mask IoU, greedily from the best pair down. A track that finds no match is searched for inside its
last box, widened (people.Rescue: the pose network on the crop, then Selfie Segmentation on it),
which carries the dancer through frames where the whole-frame detector misses an inverted or
blurred body. With `box`, when no detected person lies in the box, the rescue in the box starts a
track, so a dancer the detector never finds can still be followed.

Everyone's masks are spilled to a temporary file (crop.MaskSpill) during the one pass of the
network; the chosen person's are read back after the choice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..errors import DiscodanceError, require
from .crop import MaskSpill, mask_bbox
from .motion import own_motion, shrink_factor, small_gray
from .people import Person, inverted

PICKS = ("moving", "largest", "point", "box")
PICK_HELP = "largest, moving, point X,Y or box X,Y,W,H"
MIN_IOU = 0.2          # consecutive masks of one person overlap at least this much (fast twirls: 0.3+)
DUPLICATE_IOU = 0.5    # two detections overlapping this much are one person found twice
GROW = 0.25            # the rescue searches the last box widened by this share of its side, each way
AREA_RANGE = (1 / 3, 3.0)  # a rescued mask must be within this factor of the last mask's area
MIN_INSIDE = 0.25      # `box`: share of a person's mask inside the box for them to count
CONTENTION = 0.25      # after a second, only tracks within this share of the best are rescued
RESCUE_TRIES = 3       # a lost track is searched for in this many frames, then left to the detectors


@dataclass(frozen=True)
class Pick:
    """The rule that chooses the dancer; `at` is (x, y) or (x, y, w, h) in source pixels."""
    rule: str = "moving"
    at: tuple[float, ...] = ()

    def __str__(self) -> str:
        return self.rule + (" " + ",".join(f"{v:g}" for v in self.at) if self.at else "")


def parse_pick(text) -> Pick:
    """'moving', 'largest', 'point 120,300' or 'box 80,40,200,400' ('point=..', 'point:..' too)."""
    text = " ".join(text) if isinstance(text, (list, tuple)) else str(text)
    rule, _, rest = re.sub(r"\s+", " ", text.strip()).partition(" ")
    if not rest and re.fullmatch(r"\w+[=:].*", rule):
        rule, rest = re.split(r"[=:]", rule, maxsplit=1)
    rule = rule.lower()
    require(rule in PICKS, f"--pick {text.strip()!r}: choose {PICK_HELP}")
    want = {"point": 2, "box": 4}.get(rule, 0)
    try:
        at = tuple(float(v) for v in rest.replace(" ", ",").split(",") if v) if rest else ()
    except ValueError:
        raise DiscodanceError(f"--pick {text.strip()!r}: expected numbers, as in {PICK_HELP}") from None
    require(len(at) == want, f"--pick {rule} takes {want or 'no'} number(s)"
            f"{' separated by commas' if want else ''} ({PICK_HELP}), got {text.strip()!r}")
    require(all(np.isfinite(at)) and all(v >= 0 for v in at),
            f"--pick {text.strip()!r}: coordinates must be finite and >= 0 (source pixels)")
    require(rule != "box" or (at[2] > 0 and at[3] > 0), f"--pick {text.strip()!r}: the box needs a width and a height")
    return Pick(rule, at)


def check_inside(pick: Pick, width: int, height: int, where: str) -> None:
    """A point or box must start inside the first frame (width x height source pixels)."""
    if pick.at:
        require(pick.at[0] < width and pick.at[1] < height,
                f"--pick {pick}: outside the {width}x{height} frames of {where}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def widened(box, grow: float = GROW):
    """A (y0, x0, y1, x1) box grown to a square around its centre, plus `grow` of its side each way."""
    cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * (0.5 + grow)
    return cy - half, cx - half, cy + half, cx + half


@dataclass
class Track:
    """One person followed through the clip, with the running sums the rules read."""
    id: int
    mask: np.ndarray | None
    points: np.ndarray
    last: int
    first: int
    seen: int = 1
    rescued: int = 0
    area: float = 0.0
    motion: float = 0.0  # summed mean grey-level change inside the mask, camera motion taken out

    def summary(self, frames: int) -> dict:
        return {"track": self.id, "frames": self.seen, "rescued": self.rescued, "first_frame": self.first,
                "motion": round(self.motion / max(frames - 1, 1), 3),
                "mean_area": round(self.area / max(frames, 1), 1)}


@dataclass
class Tracker:
    """Matches each frame's people to tracks by mask IoU and spills every person's mask.

    `rescue(frame, box, upside_down)` searches a lost track's box; `discover(frame)` looks for one
    more person in a frame whose known people are greyed out, every `discover_every` frames: a
    detector keeps only its most confident finds, and a prominent bystander can hide the dancer
    from it (proxy B of docs/silhouettes.md, every second frame: found in the first with it, the 8th without).
    """
    spill: MaskSpill
    max_gap: int
    rescue: Callable | None = None
    discover: Callable | None = None
    discover_every: int = 1
    key: Callable | None = None       # the rule's measure per frame seen (None: rescue everyone)
    tracks: list[Track] = field(default_factory=list)
    index: list[dict] = field(default_factory=list)  # per frame: track id -> (spill entry, points)
    gray: np.ndarray | None = None    # the last frame, small (motion.py)
    moved: np.ndarray | None = None   # what moved by itself since the frame before, small

    def update(self, t: int, frame: np.ndarray, people: list) -> None:
        people = _distinct(people)
        self.index.append({})
        step = shrink_factor(frame.shape[0])
        gray = small_gray(frame, step)
        self.moved = own_motion(self.gray, gray) if self.gray is not None else None
        self.gray = gray
        lost = self._match(t, people)
        claimed = np.zeros(frame.shape[:2], bool)
        for person in people:
            claimed |= person.mask
        for track in lost if self.rescue is not None else ():
            if t - track.last > RESCUE_TRIES or not self._worth_rescuing(track):
                continue
            found = self._rescue(track, frame, claimed)
            if found is not None:
                self._extend(track, t, found, rescued=True)
                claimed |= found.mask
        if self.discover is not None and t % self.discover_every == 0:
            self._discover(t, frame, claimed, [tr for tr in lost if tr.last != t])
        for track in self.tracks:  # ended tracks keep their sums only
            if track.mask is not None and t - track.last > self.max_gap:
                track.mask = None

    def _match(self, t: int, people: list) -> list[Track]:
        """Extend the live tracks with the people that overlap them best, start tracks for the rest;
        returns the live tracks left without anyone."""
        live = [tr for tr in self.tracks if tr.mask is not None]
        pairs = sorted(((iou(tr.mask, p.mask), i, j) for i, tr in enumerate(live) for j, p in enumerate(people)),
                       reverse=True)
        matched, taken = set(), set()
        for score, i, j in pairs:
            if score >= MIN_IOU and i not in matched and j not in taken:
                matched.add(i), taken.add(j)
                self._extend(live[i], t, people[j])
        for j in sorted(set(range(len(people))) - taken):
            self.start(t, people[j])
        return [tr for i, tr in enumerate(live) if i not in matched]

    def start(self, t: int, person) -> Track:
        track = Track(len(self.tracks), None, person.points, t, t, seen=0)
        self.tracks.append(track)
        self._extend(track, t, person)
        return track

    def _extend(self, track: Track, t: int, person, rescued: bool = False) -> None:
        if self.moved is not None:
            step = shrink_factor(person.mask.shape[0])
            inside = person.mask[::step, ::step][:self.moved.shape[0], :self.moved.shape[1]]
            track.motion += float(self.moved[inside].mean()) if inside.any() else 0.0
        track.mask, track.last = person.mask, t
        track.seen, track.rescued = track.seen + 1, track.rescued + rescued
        track.area += float(np.count_nonzero(person.mask))
        if np.isfinite(person.points).any():
            track.points = person.points
        self.index[t][track.id] = (len(self.spill), person.points)
        self.spill.add(person.mask)

    def _worth_rescuing(self, track: Track) -> bool:
        """A rescue costs a network run. Once a track has been seen for a second, it is searched for
        only while it is within CONTENTION of the best live track by the rule's measure (`key`);
        in a crowd this spares the spectators, whose motion is a tenth of the dancer's."""
        if self.key is None or track.seen < self.max_gap:
            return True
        best = max(self.key(tr) for tr in self.tracks if tr.mask is not None)
        return self.key(track) >= CONTENTION * best

    def _rescue(self, track: Track, frame: np.ndarray, claimed: np.ndarray):
        """The track's person inside its widened last box, if what is found there is plausibly them.

        People already placed in this frame are greyed out first, so the search cannot latch onto
        a bystander inside the box; what it finds must overlap the person's last mask.
        """
        found = self.rescue(_grey(frame, claimed), widened(mask_bbox(track.mask)), inverted(track.points))
        if found is None:
            return None
        found = Person(_component_on(found.mask & ~claimed, track.mask), found.points)
        ratio = np.count_nonzero(found.mask) / max(np.count_nonzero(track.mask), 1)
        near = iou(found.mask, track.mask) >= MIN_IOU / 2
        return found if AREA_RANGE[0] <= ratio <= AREA_RANGE[1] and near else None

    def _discover(self, t: int, frame: np.ndarray, claimed: np.ndarray, lost: list[Track]) -> None:
        """One more person, not among those placed: a lost track's if it overlaps one, else a new one."""
        found = self.discover(_grey(frame, claimed))
        if found is None or np.count_nonzero(found.mask & ~claimed) < 0.5 * np.count_nonzero(found.mask):
            return  # nobody, or someone already placed (a grey shape can still look like a person)
        found = Person(_component_on(found.mask & ~claimed, np.zeros_like(claimed)), found.points)
        best = max(lost, key=lambda tr: iou(tr.mask, found.mask), default=None)
        if best is not None and iou(best.mask, found.mask) >= MIN_IOU:
            self._extend(best, t, found)
        else:
            self.start(t, found)


def _grey(frame: np.ndarray, claimed: np.ndarray) -> np.ndarray:
    """The frame with the people already placed painted mid-grey: a searching network ignores them."""
    return np.where(claimed[..., None], np.uint8(128), frame) if claimed.any() else frame


def _distinct(people: list) -> list:
    """Drop detections that are the same person found twice (the larger one stays)."""
    kept = []
    for person in sorted(people, key=lambda p: -np.count_nonzero(p.mask)):
        if person.mask.any() and all(iou(person.mask, k.mask) < DUPLICATE_IOU for k in kept):
            kept.append(person)
    return kept


def _component_on(mask: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The 8-connected part of `mask` that overlaps `last` most (the largest when none does)."""
    from scipy import ndimage
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask
    overlap = np.bincount(labels[last], minlength=n + 1)[1:]
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels == 1 + int(np.argmax(overlap + 1e-6 * sizes))


PER_FRAME = {"moving": lambda tr: tr.motion / tr.seen, "largest": lambda tr: tr.area / tr.seen}


def _first_frame_people(tracker: Tracker, shape) -> list[tuple[Track, np.ndarray]]:
    return [(tracker.tracks[tid], tracker.spill.mask(entry, shape)) for tid, (entry, _) in tracker.index[0].items()]


def _inside(mask: np.ndarray, at) -> int:
    """Pixels of a mask inside an (x, y, w, h) box."""
    x, y, w, h = (int(round(v)) for v in at)
    return int(np.count_nonzero(mask[max(y, 0):y + h, max(x, 0):x + w]))


def _seed_box(tracker: Tracker, frame: np.ndarray, at) -> None:
    """`box`: when no one the detector found lies in the box, look for a person inside it."""
    for track, mask in _first_frame_people(tracker, frame.shape[:2]):
        if _inside(mask, at) >= MIN_INSIDE * np.count_nonzero(mask):
            return
    x, y, w, h = at
    found = tracker.rescue(frame, (y, x, y + h, x + w), False) if tracker.rescue else None
    if found is not None:
        tracker.start(0, found)


def choose(tracker: Tracker, pick: Pick, at, shape) -> Track | None:
    """The track the rule picks (None when nobody was found); `at` is in the analysed pixels."""
    if not tracker.tracks:
        return None
    if pick.rule in ("moving", "largest"):
        key = (lambda tr: (tr.motion, tr.area)) if pick.rule == "moving" else (lambda tr: (tr.area, tr.motion))
        return max(tracker.tracks, key=key)
    first = _first_frame_people(tracker, shape)
    if pick.rule == "point":
        x, y = (int(v) for v in at)
        under = [(np.count_nonzero(m), tr.id) for tr, m in first if m[min(y, shape[0] - 1), min(x, shape[1] - 1)]]
        require(under, f"--pick {pick}: no person found under this point in the first frame "
                       f"({len(first)} found there); give a box around the dancer instead: --pick box X,Y,W,H")
        return tracker.tracks[min(under)[1]]  # two masks under the point: the smaller, more surely meant
    inside = [(_inside(m, at), tr.id) for tr, m in first if _inside(m, at) >= MIN_INSIDE * np.count_nonzero(m)]
    require(inside, f"--pick {pick}: no person found inside this box in the first frame; is the dancer in it?")
    return tracker.tracks[max(inside)[1]]


def follow(frames: Iterator[np.ndarray], detect, rescue, pick: Pick, at=(), fps: float = 24.0,
           report: dict | None = None, discover=None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(mask, keypoints) of the chosen person in every frame; empty mask and NaN where they are absent.

    `detect(frame)` gives a frame's people, `rescue(frame, box, upside_down)` one person in a box,
    `discover(frame)` one person anywhere, four times a second; `at` is the point or box in the
    frames' pixels. `report` receives what was chosen and why.
    """
    tracker, spill, count = None, None, 0
    try:
        for t, frame in enumerate(frames):
            if tracker is None:
                spill = MaskSpill(frame.shape[:2])  # 8x the frame: stored at full resolution
                tracker = Tracker(spill, max(1, int(round(fps))), rescue, discover, max(1, int(round(fps / 4))),
                                  PER_FRAME.get(pick.rule))
            tracker.update(t, frame, detect(frame))
            if t == 0 and pick.rule == "box":
                _seed_box(tracker, frame, at)
            count, shape = t + 1, frame.shape[:2]
        if tracker is None:
            return
        chosen = choose(tracker, pick, at, shape)
        if report is not None:
            report.update(_report(tracker, chosen, pick, count))
        for t in range(count):
            entry = tracker.index[t].get(chosen.id) if chosen is not None else None
            if entry is None:
                yield np.zeros(shape, dtype=bool), np.full((33, 2), np.nan, np.float32)
            else:
                yield spill.mask(entry[0], shape), entry[1]
    finally:
        if spill is not None:
            spill.close()


def _report(tracker: Tracker, chosen: Track | None, pick: Pick, frames: int) -> dict:
    """For meta.json: the rule, the chosen person and the runners-up, with the figures compared."""
    others = sorted((tr for tr in tracker.tracks if tr is not chosen), key=lambda tr: -tr.motion)
    return {"pick": str(pick), "people_found": len(tracker.tracks),
            "chosen": chosen.summary(frames) if chosen is not None else None,
            "others": [tr.summary(frames) for tr in others[:3]]}

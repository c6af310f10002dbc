"""Choosing the dancer among several people (`prepare --pick`, data/pick.py): the rules and the
tracker on drawn masks, the CLI's errors, and, where DAVIS dance-twirl and mediapipe are present, the
two proxies of issue 15 (upside down; a larger, still person pasted in) and point/box picks."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA, one_line_error
from discodance.cli import main
from discodance.data.crop import MaskSpill
from discodance.data.dataset import load_dataset
from discodance.data.people import Person
from discodance.data.motion import camera_shift, own_motion, shrink_factor, small_gray
from discodance.data.pick import Pick, Tracker, choose, follow, parse_pick
from discodance.errors import DiscodanceError

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "pick_dancer.py"
spec = importlib.util.spec_from_file_location("pick_dancer", BENCH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)  # the proxies are built by the benchmark's own functions

try:
    from discodance.data.people import import_mediapipe
    import_mediapipe()
    HAVE_MEDIAPIPE = True
except DiscodanceError:
    HAVE_MEDIAPIPE = False
needs_twirl = pytest.mark.skipif(not (SHARED_DATA / "davis" / "dance-twirl" / "masks").is_dir() or not HAVE_MEDIAPIPE,
                                 reason="needs ../shared/data/davis/dance-twirl and mediapipe (pip install 'discodance[segment]')")
FRAMES = slice(0, 60, 2)  # 30 frames over 2.5 s: enough motion to tell, a few seconds of CPU


# ----------------------------------------------------------------------------- drawn people
def blob(cy, cx, ry, rx, shape=(60, 90)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def person(mask) -> Person:
    return Person(mask, np.full((33, 2), np.nan, np.float32))


def scene(t: int) -> list[Person]:
    """A large still person at the left; a smaller one at the right whose shape keeps changing."""
    still = blob(30, 20, 22, 10)
    dancer = blob(30, 65, 16 - 4 * np.sin(t), 8 + 3 * np.sin(t))
    return [person(dancer), person(still)] if t % 2 else [person(still), person(dancer)]  # order shuffles


def drawn(frames: int) -> np.ndarray:
    """The scene's people drawn white on black, whoever the detector is made to miss."""
    video = np.zeros((frames, 60, 90, 3), np.uint8)
    for t in range(frames):
        video[t][np.any([p.mask for p in scene(t)], axis=0)] = 255
    return video


def run(pick: str, frames: int = 12, detect=scene, rescue=None, discover=None) -> list[np.ndarray]:
    at = parse_pick(pick).at
    return [m for m, _ in follow(iter(drawn(frames)), iter_detect(detect), rescue, parse_pick(pick), at,
                                 fps=12, discover=discover)]


def iter_detect(detect):
    count = iter(range(10 ** 6))
    return lambda frame: detect(next(count))


def test_parse_pick_forms_and_errors():
    assert parse_pick("moving") == Pick("moving") and parse_pick(["largest"]) == Pick("largest")
    assert parse_pick(["point", "12,30.5"]) == parse_pick("point:12,30.5") == parse_pick("point=12,30.5") \
        == Pick("point", (12.0, 30.5))
    assert str(parse_pick("box 1,2,30,40")) == "box 1,2,30,40"
    for bad, needle in [("sideways", "choose largest, moving"), ("point 1", "takes 2 number"),
                        ("box 1,2,3", "takes 4 number"), ("point a,b", "expected numbers"),
                        ("moving 3", "takes no number"), ("point -1,5", ">= 0"), ("box 1,1,0,9", "width and a height"),
                        ("point nan,3", "finite")]:
        with pytest.raises(DiscodanceError, match=needle):
            parse_pick(bad)


def test_own_motion_ignores_the_camera_pan():
    rng = np.random.default_rng(0)
    scene_ = np.kron(rng.integers(0, 255, (40, 60)), np.ones((8, 8))).astype(np.uint8)[..., None].repeat(3, axis=2)
    before, after = scene_[40:280, 40:440], scene_[43:283, 35:435].copy()  # the camera moved 3 down, 5 left
    after[100:140, 200:240] = 255 - after[100:140, 200:240]                # and something moved by itself
    step = shrink_factor(240)
    moved = own_motion(small_gray(before, step), small_gray(after, step))
    assert camera_shift(small_gray(before, step), small_gray(after, step)) == (-3, 5)
    assert np.median(moved) < 2 and moved[105:135, 205:235].mean() > 50


def test_moving_picks_the_changing_person_and_largest_the_big_one():
    still = blob(30, 20, 22, 10)
    moving = run("moving")
    assert all(0 < m.sum() < still.sum() and not (m & still).any() for m in moving)
    assert all((m == still).all() for m in run("largest"))


def test_point_and_box_pick_on_the_first_frame():
    still = blob(30, 20, 22, 10)
    assert all((m == still).all() for m in run("point 20,30"))           # x=20, y=30: the still one
    assert all(not (m & still).any() and m.any() for m in run("box 50,5,35,50")) # around the right one
    with pytest.raises(DiscodanceError, match="no person found under this point"):
        run("point 45,2")
    with pytest.raises(DiscodanceError, match="no person found inside this box"):
        run("box 40,0,5,5")


def test_identity_survives_gaps_and_duplicates():
    """A detection missing in some frames and found twice in others keeps one track."""
    def detect(t):
        people = scene(t)
        if t in (4, 5):
            return [p for p in people if p.mask[30, 20]]     # the mover unseen for two frames
        return people + [person(people[0].mask.copy())]      # and everyone found twice
    masks = run("moving", detect=detect)
    assert [bool(m.any()) for m in masks] == [True] * 4 + [False] * 2 + [True] * 6


def test_rescue_fills_a_missed_frame_and_may_not_take_someone_else():
    seen = []

    def rescue(found):
        def search(frame, box, upside_down):
            seen.append(frame[30, 20].tolist())  # the still person is greyed out before the search
            return person(found)
        return search
    missing = lambda t: scene(t) if t != 3 else [p for p in scene(t) if p.mask[30, 20]]  # noqa: E731
    masks = run("moving", detect=missing, rescue=rescue(blob(30, 65, 12, 6)))
    assert masks[3].any() and not masks[3][30, 20] and seen == [[128, 128, 128]]
    masks = run("moving", detect=missing, rescue=rescue(blob(30, 20, 22, 10)))  # finds the still one
    assert not masks[3].any() and masks[2].any() and masks[4].any()


def test_a_box_where_the_detector_sees_no_one_starts_a_track():
    seeded = person(blob(30, 65, 12, 6))
    masks = run("box 50,5,35,50", detect=lambda t: [scene(t)[0] if scene(t)[0].mask[30, 20] else scene(t)[1]],
                rescue=lambda frame, box, upside_down: seeded)
    assert masks[0].any() and (masks[0] == seeded.mask).all()


def test_discovery_finds_who_the_detector_hides_behind_a_bystander():
    """The detector sees only the still person; greyed out, the mover is found (every 3rd frame at 12 fps)."""
    greyed = []

    def discover(frame):
        greyed.append(frame[30, 20].tolist())
        return person(blob(30, 65, 16, 8))
    masks = run("point 65,30", detect=lambda t: [p for p in scene(t) if p.mask[30, 20]], discover=discover)
    assert [bool(m.any()) for m in masks] == [t % 3 == 0 for t in range(12)]
    assert greyed == [[128, 128, 128]] * 4 and not masks[0][30, 20]


def test_the_spill_gives_masks_back_whole():
    spill = MaskSpill((60, 90))
    try:
        spill.add(blob(30, 40, 10, 20))
        assert (spill.mask(0, (60, 90)) == blob(30, 40, 10, 20)).all()
    finally:
        spill.close()


def test_tracker_choose_with_no_one_is_none():
    spill = MaskSpill((8, 8))
    try:
        assert choose(Tracker(spill, 3), Pick("moving"), (), (8, 8)) is None
    finally:
        spill.close()


# ----------------------------------------------------------------------------- command line
def test_bad_pick_values_are_one_line_errors(capsys, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    for pick, needle in [(["sideways"], "choose largest, moving"), (["point", "1"], "takes 2 number"),
                         (["box", "1,2,3"], "takes 4 number"), (["point", "x,y"], "expected numbers"),
                         (["point", "70,10"], "outside the 64x48 frames"), (["box", "0,50,4,4"], "outside"),
                         (["point", "1,2", str(folder)], "give the sources before --pick")]:
        one_line_error(capsys, ["prepare", folder, "--out", out, "--pick", *pick], needle)
    one_line_error(capsys, ["prepare", folder, "--out", out, "--method", "threshold", "--pick", "largest"],
                   "--pick chooses among the people found by --method segment")
    assert not out.exists()


# ----------------------------------------------------------------------------- real footage
@pytest.fixture(scope="module")
def twirl():
    return bench.load_davis("dance-twirl", FRAMES)


@needs_twirl
def test_upside_down_dancer_is_found(twirl):
    frames, truth = bench.flipped(*twirl)
    masks, _ = bench.dancer_masks(frames)
    assert np.mean([bench.iou(m, t) for m, t in zip(masks, truth)]) >= 0.6


@needs_twirl
def test_upside_down_dancer_is_kept_when_the_detector_misses_every_second_frame(twirl):
    frames, truth = bench.flipped(*twirl)
    masks, report = bench.dancer_masks(frames, blind_every=2)
    assert report["chosen"]["rescued"] >= len(frames) // 2 - 2
    assert np.mean([bench.iou(m, t) for m, t in zip(masks[1::2], truth[1::2])]) >= 0.6


@needs_twirl
def test_a_larger_still_person_does_not_steal_the_pick(twirl):
    frames, truth, pasted = bench.with_still_person(*twirl)
    assert pasted.sum() > 1.05 * truth.sum(axis=(1, 2)).mean()  # the pasted person is the larger
    masks, report = bench.dancer_masks(frames)
    assert np.mean([bench.iou(m, t) for m, t in zip(masks, truth)]) >= 0.6
    assert np.mean([bench.iou(m, pasted) for m in masks]) < 0.05
    assert report["people_found"] >= 2  # the pasted person was found, and passed over


@needs_twirl
@pytest.mark.parametrize("rule", ["point", "box"])
def test_point_and_box_on_the_pasted_person_choose_them(twirl, rule, tmp_path):
    frames, _, pasted = bench.with_still_person(*twirl)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:12]):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    ys, xs = np.nonzero(pasted)
    at = (f"{int(np.median(xs))},{int(np.median(ys))}" if rule == "point" else
          f"{xs.min()},{ys.min()},{xs.max() - xs.min() + 1},{ys.max() - ys.min() + 1}")
    assert main(["prepare", str(folder), "--out", str(tmp_path / "ds"), "--no-crop", "--pick", rule, at]) == 0
    ds = load_dataset(tmp_path / "ds")
    assert np.mean([bench.iou(np.asarray(f) > 127, pasted) for f in ds.frames]) >= 0.6
    assert ds.meta["extra"]["silhouettes"]["clips"][0]["method_options"]["pick"] == f"{rule} {at}"

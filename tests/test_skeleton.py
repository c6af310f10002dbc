"""Keypoints without a named skeleton (data/skeleton.py): the up axis, the inferred body, the CLI's
--up / --skeleton, and the self-test against the named CMU salsa BVH.

The self-test: the salsa positions of the BVH reader lose their names, are shuffled, turned to z up,
normalised to [0, 1] and given 3 mm of marker noise; the silhouettes drawn from them must match
those drawn from the named BVH. `python tests/test_skeleton.py` prints the table for all 18 takes
(docs/mocap.md).
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from discodance.cli import main
from discodance.data import skeleton
from discodance.data.dataset import load_dataset
from discodance.data.mocap import load_bvh, load_motion, prepare_mocap
from discodance.data.render import Framing, body_height, project, render_capsules
from discodance.errors import DiscodanceError

from conftest import one_line_error

SALSA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cmu_salsa" / "bvh"
needs_salsa = pytest.mark.skipif(not SALSA.is_dir(), reason=f"CMU salsa BVH not found at {SALSA} (../shared/data absent)")
TAKES = ["60_01", "60_09", "61_02", "61_09"]  # both dancers; 60_09 has splits, 61_09 the worst framing
NOISE_M = 0.003                                 # marker noise, metres (std per coordinate)


# ----------------------------------------------------------------------------- the self-test's markers
def unnamed_markers(points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Positions (T, J, 3), metres, y up -> markers (T, J, 3): shuffled, z up, normalised to [0, 1],
    NOISE_M of noise; and how (order, offset, span), so the metres can be recovered."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(points.shape[1])
    z_up = np.stack([points[..., 0], -points[..., 2], points[..., 1]], -1)[:, order]  # (x, y, z) -> (x, -z, y)
    z_up = z_up + rng.normal(0, NOISE_M, z_up.shape)
    lo = z_up.min((0, 1))
    span = float((z_up.max((0, 1)) - lo).max())
    return ((z_up - lo) / span).astype(np.float32), {"order": order, "offset": lo, "span": span}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a > 127, b > 127
    return (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)


def _same_camera(drawing, markers, how, framing: Framing, size) -> np.ndarray:
    """The inferred body drawn with the named BVH's own framing (the markers back in metres)."""
    metres = skeleton.turn_up(markers.astype(np.float64) * how["span"] + how["offset"], drawing.up)
    pts = drawing.body.points(project(metres, 0.0))                          # (T, P, 2)
    seg = framing.apply(pts[:, drawing.body.segments])                        # (T, S, 2, 2) pixels
    return render_capsules(seg, drawing.body.radii * body_height(pts) * framing.scale, *size)


def self_test(take: str, folder: Path, *, end_sites: bool = True, center: str = "follow", size=(64, 64)) -> dict:
    """Per-frame IoU of a take's unnamed markers against its named BVH: each dataset framed by
    itself (as prepare writes them) and the inferred body drawn with the BVH's framing."""
    bvh = SALSA / f"{take}_scaled.bvh"
    motion = load_bvh(bvh)
    points = (motion.positions if end_sites else motion.joints)[::4]         # 120 -> 30 fps, as prepare does
    markers, how = unnamed_markers(points)
    np.savez(folder / f"{take}.npz", keypoints=markers, fps=np.float64(30.0))
    named = load_dataset(prepare_mocap([bvh], folder / f"{take}_named", size=size, center=center))
    unnamed = load_dataset(prepare_mocap([folder / f"{take}.npz"], folder / f"{take}_unnamed", size=size, center=center))
    drawing = skeleton.plan_drawing([load_motion(folder / f"{take}.npz")], 30.0)
    framing = Framing.from_meta(named.meta["extra"]["clips"][0]["framing"])
    return {"up": drawing.up, "limbs": drawing.found["limbs"],
            "own framing": _iou(np.asarray(named.frames), np.asarray(unnamed.frames)),
            "same framing": _iou(np.asarray(named.frames), _same_camera(drawing, markers, how, framing, size))}


# ----------------------------------------------------------------------------- without the real data
def test_up_axes_parse_and_turn_with_proper_rotations():
    assert [skeleton.parse_up(t) for t in ("z", "+Z", " -y ", "x")] == ["+z", "+z", "-y", "+x"]
    for bad in ("w", "zz", "", "+-z", "up"):
        with pytest.raises(DiscodanceError, match="bad up axis"):
            skeleton.parse_up(bad)
    p = np.random.default_rng(0).normal(size=(4, 5, 3))
    assert np.array_equal(skeleton.turn_up(p, "+y"), p)
    np.testing.assert_allclose(skeleton.turn_up(p, "+z"), np.stack([p[..., 0], p[..., 2], -p[..., 1]], -1))
    for up in skeleton.UP_AXES:
        axis = np.zeros((1, 1, 3))
        axis[..., "xyz".index(up[1])] = 1.0 if up[0] == "+" else -1.0
        np.testing.assert_allclose(skeleton.turn_up(axis, up)[0, 0], [0, 1, 0], atol=1e-12)   # up -> +y
        turned = skeleton.turn_up(np.eye(3)[None], up)[0]                                   # images of x, y, z
        assert np.isclose(np.linalg.det(turned), 1.0)                                      # no mirror


def _dancer_files(folder: Path, frames: int = 300):
    """The built-in dancer's 2-D joints as a named keypoint file and as shuffled, unnamed ones."""
    from discodance.data.synthetic import JOINTS, PARENTS, make_dancer
    _, poses, _ = make_dancer(frames, 64, 64, seed=1)
    order = np.random.default_rng(0).permutation(poses.shape[1])
    np.savez(folder / "named.npz", keypoints=poses, fps=np.float64(24), joint_names=np.array(JOINTS),
             parents=np.array(PARENTS))
    np.savez(folder / "unnamed.npz", keypoints=poses[:, order], fps=np.float64(24))
    return folder / "named.npz", folder / "unnamed.npz"


def test_unnamed_2d_keypoints_get_a_body_not_a_chain(tmp_path):
    """The built-in dancer's joints, shuffled and unnamed: five limbs found, the silhouettes close to
    the named ones; with skeleton='none' they are the old chain through shuffled joints."""
    named, unnamed = _dancer_files(tmp_path)
    drawing = skeleton.plan_drawing([load_motion(unnamed)], 24.0)
    assert drawing.kind == "inferred" and drawing.up == "+y" and not drawing.detected
    assert drawing.found["limbs"] == ["arm", "arm", "head", "leg", "leg"]
    frames = {name: np.asarray(load_dataset(prepare_mocap([path], tmp_path / name, fps=24.0, **kw)).frames)
              for name, path, kw in [("named", named, {}), ("inferred", unnamed, {}),
                                     ("chain", unnamed, {"skeleton": "none", "force": True})]}
    assert _iou(frames["named"], frames["inferred"]).mean() >= 0.75   # 2-D: rigidity is only approximate
    assert _iou(frames["named"], frames["chain"]).mean() < 0.6


def test_known_layouts_are_drawn_as_before(tmp_path):
    """BVH, COCO-17 and named joints with parents keep their own skeleton and y up; names without
    parents, or generic names, get an inferred body."""
    from discodance.data.synthetic import JOINTS, PARENTS
    named, unnamed = _dancer_files(tmp_path, 60)
    motion = load_motion(named)
    assert skeleton.plan_drawing([motion], 24.0).body is None
    coco = np.load(unnamed)["keypoints"][:, :17]
    np.save(tmp_path / "coco.npy", coco)
    assert skeleton.plan_drawing([load_motion(tmp_path / "coco.npy")], 24.0).body is None
    names_only = load_motion(unnamed, joint_names=list(JOINTS))                   # names, no parents
    generic = load_motion(named, joint_names=[f"m{i}" for i in range(18)], joint_parents=list(PARENTS))
    assert skeleton.plan_drawing([names_only], 24.0).kind == skeleton.plan_drawing([generic], 24.0).kind == "inferred"
    assert skeleton.generic_names(["m1", "LED_3", "joint7"]) and not skeleton.generic_names(["m1", "l_knee"])


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"joint_names": ["a"]}), "'parents'"),
    (json.dumps({"parents": [-1, 0], "bones": [[0, 1]]}), "'parents'"),
    (json.dumps({"parents": [-1, 0, 1]}), "parents must be 18 indices"),
    (json.dumps({"parents": ["a"] * 18}), "parents must be integers"),
    (json.dumps([[0, 1], [1, 18]]), "bones must be pairs of two different joint indices in 0..17"),
    (json.dumps([[0, 0]]), "bones must be pairs"),
    (json.dumps({"bones": [[0, 1, 2]]}), "pairs of integers"),
    (json.dumps({"parents": list(range(-1, 17)), "joint_names": ["a"]}), "1 joint names for 18 joints"),
])
def test_bad_skeleton_files_are_one_line_errors(tmp_path, capsys, content, message):
    _, unnamed = _dancer_files(tmp_path, 40)
    (tmp_path / "sk.json").write_text(content)
    one_line_error(capsys, ["prepare", unnamed, "--out", tmp_path / "d", "--skeleton", tmp_path / "sk.json"], message)
    assert not (tmp_path / "d").exists()


def test_bad_up_and_skeleton_options_are_one_line_errors(tmp_path, capsys):
    _, unnamed = _dancer_files(tmp_path, 40)
    out = ["--out", tmp_path / "d"]
    one_line_error(capsys, ["prepare", unnamed, *out, "--up", "w"], "argument --up", "bad up axis 'w'")
    one_line_error(capsys, ["prepare", unnamed, *out, "--up", "z"], "--up is for 3-D motion")
    one_line_error(capsys, ["prepare", unnamed, *out, "--skeleton", tmp_path / "no.json"], "no.json not found")
    (tmp_path / "a.bvh").write_text("HIERARCHY\nROOT r\n{\n OFFSET 0 0 0\n CHANNELS 3 Xposition Yposition "
                                    "Zposition\n End Site\n {\n OFFSET 0 1 0\n }\n}\nMOTION\nFrames: 2\n"
                                    "Frame Time: 0.1\n0 0 0\n0 0 0\n")
    one_line_error(capsys, ["prepare", tmp_path / "a.bvh", *out, "--skeleton", "none"], "a BVH file names its own")
    (tmp_path / "frames").mkdir()
    one_line_error(capsys, ["prepare", tmp_path / "frames", *out, "--up", "z"], "--up and --skeleton are for motion files")
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- on the CMU salsa takes
@needs_salsa
@pytest.mark.parametrize("take", ["60_01", "61_09"])
def test_the_up_axis_is_found_for_all_six_signed_axes(take):
    joints = load_bvh(SALSA / f"{take}_scaled.bvh").joints[::4].astype(np.float64)         # (T, J, 3) y up
    rng = np.random.default_rng(1)
    for up in skeleton.UP_AXES:
        held = joints @ skeleton.turn_up(np.eye(3)[None], up)[0].T                        # the file's `up` is up
        np.testing.assert_allclose(skeleton.turn_up(held, up), joints, atol=1e-9)
        lo = held.min((0, 1))
        markers = (held - lo) / (held.max((0, 1)) - lo).max() + rng.normal(0, 0.002, held.shape)
        assert skeleton.detect_up([(markers, 30.0)]) == up


@needs_salsa
@pytest.mark.parametrize("take", TAKES)
def test_unnamed_markers_draw_the_named_dancer(take, tmp_path):
    """The must-show self-test: every frame's IoU >= 0.8. With the BVH's End Sites among the
    markers (57 points: toes, fingertips), also for the datasets as prepare writes them, each
    framed by itself. Without them (43 joints) only with the named BVH's framing: the missing
    toes move that clip's floor and scale (docs/mocap.md)."""
    for end_sites in (True, False):
        (tmp_path / str(end_sites)).mkdir()
        r = self_test(take, tmp_path / str(end_sites), end_sites=end_sites)
        print(f"{take} {'57 points' if end_sites else '43 joints'}: same framing {_stats(r['same framing'])}; "
              f"own framing {_stats(r['own framing'])}")
        assert r["up"] == "+z" and r["limbs"] == ["arm", "arm", "head", "leg", "leg"]
        assert r["same framing"].min() >= 0.8 and r["same framing"].mean() >= 0.9
        if end_sites:
            assert r["own framing"].min() >= 0.8 and r["own framing"].mean() >= 0.9


def _z_up_file(tmp_path, take="60_01") -> tuple[Path, dict]:
    """A take's joints (43, no End Sites) as an unnamed z-up marker file."""
    markers, how = unnamed_markers(load_bvh(SALSA / f"{take}_scaled.bvh").joints[::4])
    np.save(tmp_path / "markers.npy", markers)
    return tmp_path / "markers.npy", how


@needs_salsa
def test_the_gate_refuses_markers_without_a_skeleton_and_accepts_the_inferred_one(tmp_path, capsys):
    markers, _ = _z_up_file(tmp_path)
    base = ["prepare", str(markers), "--fps", "30", "--out"]
    one_line_error(capsys, [*base, tmp_path / "none", "--skeleton", "none"], "look broken", "wider than tall", "--force")
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none.partial*"))
    assert main([*base, str(tmp_path / "forced"), "--skeleton", "none", "--force"]) == 0
    assert json.loads((tmp_path / "forced" / "meta.json").read_text())["extra"]["check"]["upright"] < 0.8
    assert main([*base, str(tmp_path / "d")]) == 0
    assert "skeleton: inferred for 43 joints" in capsys.readouterr().err
    data = load_dataset(tmp_path / "d")
    extra = data.meta["extra"]
    assert extra["check"]["upright"] >= 0.8 and extra["check"]["foreground"] >= 0.01
    assert extra["skeleton"]["kind"] == "inferred" and extra["skeleton"]["up"] == "+z" and extra["skeleton"]["up_detected"]
    assert "turned so that y is up (the file's +z was up)" in data.meta["poses"]["axes"]
    extent = np.median(data.poses.max(1) - data.poses.min(1), axis=0)          # (3,): y is now the tall axis
    assert np.argmax(extent) == 1 and sorted(data.meta["poses"]["joint_parents"])[:2] == [-1, 0]


@needs_salsa
def test_up_overrides_the_detected_axis(tmp_path, capsys):
    markers, _ = _z_up_file(tmp_path)
    base = ["prepare", str(markers), "--fps", "30", "--out"]
    one_line_error(capsys, [*base, tmp_path / "y", "--up", "y"], "look broken", "wider than tall")
    assert main([*base, str(tmp_path / "z"), "--up", "z"]) == 0
    drawn = json.loads((tmp_path / "z" / "meta.json").read_text())["extra"]["skeleton"]
    assert (drawn["kind"], drawn["up"], drawn["up_detected"]) == ("inferred", "+z", False)


@needs_salsa
def test_a_skeleton_file_gives_bones_or_names(tmp_path):
    """The markers' true bones (index pairs) or names and parents, in the shuffled marker order."""
    motion = load_bvh(SALSA / "60_01_scaled.bvh")
    markers, how = unnamed_markers(motion.positions[::4])
    np.save(tmp_path / "m.npy", markers)
    where = np.argsort(how["order"])                                           # BVH joint -> marker index
    bones = [[int(where[p]), int(where[j])] for j, p in enumerate(motion.parents) if p >= 0]
    parents = [-1 if p < 0 else int(where[p]) for p in motion.parents[how["order"]]]
    (tmp_path / "bones.json").write_text(json.dumps({"bones": bones}))
    (tmp_path / "named.json").write_text(json.dumps({"joint_names": [motion.names[i] for i in how["order"]],
                                                     "parents": parents}))
    bvh = np.asarray(load_dataset(prepare_mocap([SALSA / "60_01_scaled.bvh"], tmp_path / "bvh")).frames)
    for name in ("bones", "named"):
        data = load_dataset(prepare_mocap([tmp_path / "m.npy"], tmp_path / name, fps=30.0,
                                          skeleton=tmp_path / f"{name}.json"))
        assert data.meta["extra"]["skeleton"]["kind"] == "file" and data.meta["extra"]["skeleton"]["up"] == "+z"
        iou = _iou(bvh, np.asarray(data.frames))
        assert iou.mean() >= (0.85 if name == "bones" else 0.95), (name, _stats(iou))


def _stats(iou: np.ndarray) -> str:
    return f"min {iou.min():.3f} mean {iou.mean():.3f} median {np.median(iou):.3f} below 0.8 {np.mean(iou < 0.8):.1%}"


if __name__ == "__main__":  # the table in docs/mocap.md
    import tempfile
    takes = sys.argv[1:] or sorted(p.name[:5] for p in SALSA.glob("*.bvh"))
    for end_sites in (True, False):
        for center in ("follow", "clip"):
            pooled = {"own framing": [], "same framing": []}
            for take in takes:
                with tempfile.TemporaryDirectory() as tmp:
                    r = self_test(take, Path(tmp), end_sites=end_sites, center=center)
                print(f"{'57 points' if end_sites else '43 joints'} {center:6s} {take} up {r['up']} {r['limbs']}: "
                      + "; ".join(f"{k} {_stats(r[k])}" for k in pooled), flush=True)
                for k in pooled:
                    pooled[k].append(r[k])
            print(f"== {'57 points' if end_sites else '43 joints'} {center} all: "
                  + "; ".join(f"{k} {_stats(np.concatenate(v))}" for k, v in pooled.items()), flush=True)

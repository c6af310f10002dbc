"""Bad input through the command line (issue 11): outlier keypoints, absurd frame sizes,
decompression bombs, stale partial folders, dataset permissions, corrupt dataset descriptions.

Each refusal is exit code 2 with exactly one line on stderr and nothing left at --out; each
repair is exit code 0 with exactly one warning line on stderr.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discodance.cli import main
from discodance.data.dataset import load_dataset
from discodance.data.writer import write_dataset
from discodance.data.keypoints import load_keypoints
from discodance.data.mocap import load_bvh, prepare_mocap

from test_mocap import SALSA, bvh_text, coco_standing, needs_salsa

SALSA_FILE = SALSA / "bvh" / "60_10_scaled.bvh"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, args, message, out_dir: Path):
    """Exit 2, one stderr line naming the problem, no traceback, nothing at or beside out_dir."""
    code, out, err = run(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("discodance: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err and not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.partial-")]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


def mean_iou(a, b) -> float:
    return float(np.mean([iou(x, y) for x, y in zip(a, b)]))


# ----------------------------------------------------------------------------- 1. outliers
def _salsa_keypoints(tmp_path, name, edit=None) -> Path:
    """The salsa joints (no End Sites) as a 3-D keypoint file in metres, optionally edited."""
    m = load_bvh(SALSA_FILE)
    pts = m.joints.copy()
    if edit is not None:
        edit(pts)
    names = [n for n, e in zip(m.names, m.end_site) if not e]
    np.savez(tmp_path / name, keypoints=pts, fps=np.float64(m.fps), joint_names=np.array(names),
             parents=m.joint_parents())
    return tmp_path / name


def _salsa_bvh(tmp_path, name, frame, column, value) -> Path:
    """The salsa BVH with one motion value replaced (frame 500 is kept by 120 -> 30 fps)."""
    lines = SALSA_FILE.read_text().splitlines()
    row_at = lines.index("MOTION") + 3 + frame
    row = lines[row_at].split()
    row[column] = value
    lines[row_at] = " ".join(row)
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return tmp_path / name


def _set(t, j, d, value):
    def edit(pts):
        pts[t, j, d] = value
    return edit


SALSA_CASES = {  # name -> (make the clean file, make the corrupted one)
    "keypoints_3d_coordinate_30": (lambda p: _salsa_keypoints(p, "clean.npz"),
                                   lambda p: _salsa_keypoints(p, "bad.npz", _set(500, 20, 0, 30.0))),
    "keypoints_3d_joint_far_away": (lambda p: _salsa_keypoints(p, "clean.npz"),
                                    lambda p: _salsa_keypoints(p, "bad.npz", _set(501, 7, 1, -4.0))),
    "bvh_root_position_1e308": (lambda p: SALSA_FILE, lambda p: _salsa_bvh(p, "bad.bvh", 500, 0, "1e308")),
    "bvh_rotation_1e308": (lambda p: SALSA_FILE, lambda p: _salsa_bvh(p, "bad.bvh", 500, 10, "1e308")),
    "bvh_root_height_1e30": (lambda p: SALSA_FILE, lambda p: _salsa_bvh(p, "bad.bvh", 500, 1, "1e30")),
}


@needs_salsa
@pytest.mark.parametrize("case", sorted(SALSA_CASES))
def test_one_outlier_in_real_salsa_is_repaired(tmp_path, capsys, case):
    make_clean, make_bad = SALSA_CASES[case]
    clean, bad = make_clean(tmp_path), make_bad(tmp_path)
    assert run(capsys, "prepare", clean, "--out", tmp_path / "clean")[0] == 0
    code, _, err = run(capsys, "prepare", bad, "--out", tmp_path / "bad")
    assert code == 0, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("dataset check:")]  # the gate's summary
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "repaired" in lines[0], err
    a, b = load_dataset(tmp_path / "clean"), load_dataset(tmp_path / "bad")
    assert np.isfinite(b.poses).all() and b.meta["extra"]["clips"][0]["repaired"] > 0
    assert np.asarray(b.frames).reshape(len(b.frames), -1).any(axis=1).all()  # no blank frame
    assert mean_iou(a.frames, b.frames) >= 0.95


def _coco_image(tmp_path, name, edit=None) -> Path:
    """A COCO-17 dancer in image pixels (about 170 px tall), optionally edited."""
    pts = coco_standing(T=60, dims=2) * np.array([100, -100], dtype=np.float32) + [320, 400]
    if edit is not None:
        edit(pts)
    np.save(tmp_path / name, pts)
    return tmp_path / name


@pytest.mark.parametrize("frames", [[20], [20, 21, 22], [5, 40]])
def test_detector_zero_zero_misses_are_missing_joints(tmp_path, capsys, frames):
    def miss(pts):
        pts[frames, 15] = 0.0  # the left ankle not found: a detector writes (0, 0)
    clean, bad = _coco_image(tmp_path, "clean.npy"), _coco_image(tmp_path, "bad.npy", miss)
    assert run(capsys, "prepare", clean, "--out", tmp_path / "clean", "--fps", "30")[0] == 0
    code, _, err = run(capsys, "prepare", bad, "--out", tmp_path / "bad", "--fps", "30")
    warnings = [line for line in err.strip().splitlines() if not line.startswith("dataset check:")]
    assert code == 0 and len(warnings) == 1 and f"repaired {len(frames)} " in err, err
    a, b = load_dataset(tmp_path / "clean"), load_dataset(tmp_path / "bad")
    assert abs(np.mean(b.frames > 0) - np.mean(a.frames > 0)) < 0.01  # the dancer did not shrink
    assert mean_iou(a.frames, b.frames) >= 0.95


def test_joint_at_origin_in_most_frames_is_not_a_miss(tmp_path):
    pts = coco_standing(T=30, dims=2) * np.array([100, -100], dtype=np.float32)
    pts -= pts[:, :1]  # centred on the nose: (0, 0) is where that joint really is
    np.save(tmp_path / "centred.npy", pts)
    m = load_keypoints(tmp_path / "centred.npy")
    assert m.repaired == 0 and np.array_equal(m.positions, pts)


@needs_salsa
def test_clean_salsa_files_need_no_repair():
    files = sorted((SALSA / "bvh").glob("*.bvh"))
    assert len(files) == 18
    assert [load_bvh(f).repaired for f in files] == [0] * 18


def _many_far(pts):
    pts[::5, 3, 0] = 30.0  # 20% of the frames


def _long_overflow(tmp_path):
    lines = bvh_text([[0, 0, 0, 0, 0, 0, 10 * t, 0, 0] for t in range(40)]).splitlines()
    first = lines.index("MOTION") + 3
    for t in range(10, 20):  # 10 consecutive frames > max_gap = 5
        lines[first + t] = "1e308 " + lines[first + t].split(" ", 1)[1]
    (tmp_path / "long.bvh").write_text("\n".join(lines) + "\n")
    return tmp_path / "long.bvh"


TOO_MANY = {
    "keypoints_many_outliers": (lambda p: _coco_image(p, "many.npy", _many_far), "of 60 frames hold outlier"),
    "bvh_long_overflow": (_long_overflow, "missing or an outlier for 10 consecutive frames"),
}


@pytest.mark.parametrize("case", sorted(TOO_MANY))
def test_too_many_or_too_long_outliers_are_refused(tmp_path, capsys, case):
    make, message = TOO_MANY[case]
    assert_refused(capsys, ["prepare", make(tmp_path), "--out", tmp_path / "ds", "--fps", "10"],
                   message, tmp_path / "ds")


# ----------------------------------------------------------------------------- 2. frame size
def _bvh(tmp_path):
    (tmp_path / "move.bvh").write_text(bvh_text([[0, 0, 0, 0, 0, 0, 10 * t, 0, 0] for t in range(12)]))
    return tmp_path / "move.bvh"


def _images(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((24, 32), 200, np.uint8)).save(folder / f"{i}.png")
    return folder


def _video(tmp_path):
    from test_video import dark_on_bright, figure_masks, write_video
    return write_video(tmp_path / "dance.mp4", dark_on_bright(figure_masks(n=6)))


@pytest.mark.parametrize("source", [_bvh, _images, _video])
@pytest.mark.parametrize("size", [("20000", "20000"), ("64", "4097")])
def test_absurd_frame_size_is_refused_before_any_work(tmp_path, capsys, source, size):
    args = ["prepare", source(tmp_path), "--out", tmp_path / "ds", "--size", *size, "--method", "threshold"]
    assert_refused(capsys, args, f"{size[0]}x{size[1]} is too large: frames may be at most 4096", tmp_path / "ds")


@pytest.mark.parametrize("source", [_bvh, _images])
def test_frames_that_do_not_fit_on_disk_or_in_memory_are_refused(tmp_path, capsys, monkeypatch, source):
    import discodance.data.budget as budget
    path = source(tmp_path)
    monkeypatch.setattr(budget, "free_disk", lambda folder: 1000)
    assert_refused(capsys, ["prepare", path, "--out", tmp_path / "ds", "--method", "threshold"],
                   "are free where", tmp_path / "ds")
    monkeypatch.setattr(budget, "free_disk", lambda folder: None)
    monkeypatch.setattr(budget, "available_memory", lambda: 1000)
    assert_refused(capsys, ["prepare", path, "--out", tmp_path / "ds", "--method", "threshold"],
                   "of memory to draw", tmp_path / "ds")


# ----------------------------------------------------------------------------- 3. image bombs
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("pixels", [(20000, 20000), (10000, 10000)], ids=["bomb-error", "bomb-warning"])
@pytest.mark.parametrize("position", ["first", "later"])
def test_decompression_bomb_in_image_folder(tmp_path, capsys, pixels, position):
    folder = _images(tmp_path)
    bomb = folder / ("0.png" if position == "first" else "2.png")
    _png_header_only(bomb, *pixels)
    assert_refused(capsys, ["prepare", folder, "--out", tmp_path / "ds", "--method", "threshold"],
                   f"{bomb}: image too large", tmp_path / "ds")


# ----------------------------------------------------------------------------- 4. partial folders
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_partial_folders_of_the_target_are_removed(tmp_path, capsys):
    def partial(name, pid=None, age=0.0):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "frames.npy").write_bytes(b"half")
        if pid is not None:
            (folder / ".writer-pid").write_text(f"{pid} {os.uname().nodename}\n")
        os.utime(folder, (folder.stat().st_mtime - age,) * 2)
        return folder
    dead = partial(".ds.partial-abc12345", _dead_pid())
    old_no_pid = partial(".ds.partial-zz_99xyz", age=7200)   # killed before writing its PID
    live = partial(".ds.partial-live0001", os.getpid())      # another writer, still running
    fresh_no_pid = partial(".ds.partial-new00001")           # a writer that just started
    other = partial(".ds.partial-x.partial-abc12345", _dead_pid())  # target "ds.partial-x"
    other_target = partial(".dsx.partial-abc12345", _dead_pid())
    code, _, err = run(capsys, "prepare", _bvh(tmp_path), "--out", tmp_path / "ds")
    assert code == 0, err
    assert not dead.exists() and not old_no_pid.exists()
    assert live.exists() and fresh_no_pid.exists() and other.exists() and other_target.exists()
    assert not (tmp_path / "ds" / ".writer-pid").exists()


def test_failed_prepare_removes_its_own_partial_folder(tmp_path, capsys):
    good = _bvh(tmp_path)
    (tmp_path / "bad.bvh").write_text(bvh_text([[0] * 9, [0] * 8]))
    assert_refused(capsys, ["prepare", good, tmp_path / "bad.bvh", "--out", tmp_path / "ds"],
                   "bad.bvh", tmp_path / "ds")


# ----------------------------------------------------------------------------- 5. permissions
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_dataset_folder_respects_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = prepare_mocap([_bvh(tmp_path)], tmp_path / "ds", size=(16, 16))
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "meta.json").stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- 6. dataset files
def _edit_meta(**changes):
    def damage(path):
        meta = json.loads((path / "meta.json").read_text())
        for key, value in changes.items():
            if value is KeyError:
                meta.pop(key)
            elif key == "splits":
                meta["splits"].update(value)
            else:
                meta[key] = value
        (path / "meta.json").write_text(json.dumps(meta))
    return damage


def _npy_shape(shape):
    def damage(path):
        from discodance.data.writer import _npy_header
        data = (path / "frames.npy").read_bytes()
        (path / "frames.npy").write_bytes(_npy_header("|u1", shape) + data[256:])
    return damage


DAMAGE = {
    "overlap_train_val": (_edit_meta(splits={"val": [[30, 36]]}), "split blocks overlap: train [0, 32) and val [30, 36)"),
    "overlap_test_in_train": (_edit_meta(splits={"test": [[0, 4]]}), "split blocks overlap"),
    "fps_missing": (_edit_meta(fps=KeyError), "fps must be a positive number, got None"),
    "fps_text": (_edit_meta(fps="fast"), "fps must be a positive number, got 'fast'"),
    "fps_nan": (_edit_meta(fps=float("nan")), "fps must be a positive number, got nan"),
    "fps_zero": (_edit_meta(fps=0), "fps must be a positive number, got 0"),
    "fps_negative": (_edit_meta(fps=-24.0), "fps must be a positive number, got -24.0"),
    "npy_shape_overflow": (_npy_shape((2 ** 62, 64, 64)), "not a readable .npy array: its header says shape"),
    "npy_shape_too_big": (_npy_shape((2 ** 30, 8, 8)), "but the file holds 2,560 bytes"),
}


@pytest.mark.parametrize("command", ["info", "train"])
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_corrupt_dataset_is_one_line_error(tmp_path, capsys, case, command):
    frames = (np.random.default_rng(0).random((40, 8, 8)) > 0.5).astype(np.uint8) * 255
    path = write_dataset(tmp_path / "d", frames, fps=24, source="t")
    damage, message = DAMAGE[case]
    damage(path)
    args = ["info", path] if command == "info" else ["train", "--data", path, "--out", tmp_path / "r",
                                                     "--steps", "1", "--no-progress"]
    assert_refused(capsys, args, message, tmp_path / "r")

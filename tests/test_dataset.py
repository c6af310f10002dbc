"""The on-disk dataset: round trip, contiguous splits, windows inside clips, bad files, atomic writes."""
import json

import numpy as np
import pytest

from discodance.data.dataset import load_dataset, split_clip
from discodance.data.writer import DatasetWriter, write_dataset
from discodance.errors import DiscodanceError


def frames(n=40, h=6, w=5, seed=0):
    return (np.random.default_rng(seed).random((n, h, w)) > 0.5).astype(np.uint8) * 255


def test_round_trip_memory_mapped(tmp_path):
    f = frames()
    poses = np.random.default_rng(1).random((40, 3, 2)).astype(np.float32)
    write_dataset(tmp_path / "d", f, poses=poses, fps=30, source="unit", joint_names=["a", "b", "c"],
                  joint_parents=[-1, 0, 1], pose_units="px",
                  clips=[{"name": "x", "start": 0, "length": 15}, {"name": "y", "start": 15, "length": 25}])
    d = load_dataset(tmp_path / "d")
    assert isinstance(d.frames, np.memmap) and np.array_equal(d.frames, f) and np.array_equal(d.poses, poses)
    assert d.meta["poses"]["joint_names"] == ["a", "b", "c"] and d.fps == 30


def test_splits_are_contiguous_blocks_per_clip_and_windows_stay_inside():
    assert split_clip(100, 50) == {"train": [100, 140], "val": [140, 145], "test": [145, 150]}


def test_windows_never_cross_clip_or_split_boundaries(tmp_path):
    clips = [{"name": "a", "start": 0, "length": 20}, {"name": "b", "start": 20, "length": 20}]
    d = load_dataset(write_dataset(tmp_path / "d", frames(), fps=24, source="t", clips=clips))
    blocks = d.blocks("train") + d.blocks("val") + d.blocks("test")
    for split in ("train", "val", "test"):
        for length in (1, 2, 3):
            for s in d.window_starts(split, length):
                assert any(b <= s and s + length <= e for b, e in d.blocks(split)), (split, s)
    # train blocks of the two clips are [0, 16) and [20, 36): 3-frame windows may not start at 14..19
    assert set(d.window_starts("train", 3)) == set(range(0, 14)) | set(range(20, 34))
    assert sum(e - b for b, e in blocks) == 40
    starts = d.window_starts("train", 3)
    w = d.windows(starts[[0, 27]], 3)
    assert w.shape == (2, 3, 6, 5) and w.dtype == np.uint8 and len(starts) == 28
    assert np.array_equal(w[1], d.frames[starts[27]:starts[27] + 3])


def test_streaming_writer_accepts_chunks_and_is_atomic(tmp_path):
    out = tmp_path / "d"
    with pytest.raises(DiscodanceError):
        with DatasetWriter(out, 6, 5) as w:
            w.add_clip("ok", [frames(10), frames(5)])
            w.add_clip("bad", [frames(4, h=7)])  # wrong frame size mid-stream
    assert not out.exists() and not list(tmp_path.iterdir()), "no half-written dataset may remain"
    with DatasetWriter(out, 6, 5) as w:
        assert w.add_clip("ok", (frames(10, seed=i) for i in range(3))) == 30
        w.finish(fps=24, source="chunks")
    assert len(load_dataset(out).frames) == 30
    with pytest.raises(DiscodanceError, match="already exists"):
        DatasetWriter(out, 6, 5)


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "meta.json").unlink(), "no meta.json"),
    (lambda p: (p / "frames.npy").unlink(), "no frames.npy"),
    (lambda p: (p / "meta.json").write_text("{oops"), "not valid JSON"),
    (lambda p: (p / "frames.npy").write_bytes(b"garbage"), "not a readable .npy"),
    (lambda p: np.save(p / "frames.npy", np.zeros((40, 6, 5), np.float32)), "uint8"),
    (lambda p: np.save(p / "frames.npy", np.zeros((0, 6, 5), np.uint8)), "no frames"),
    (lambda p: np.save(p / "frames.npy", np.zeros((39, 6, 5), np.uint8)), "meta.json says 40"),
    (lambda p: (p / "meta.json").write_text(json.dumps({**json.loads((p / "meta.json").read_text()),
                                                        "clips": [{"name": "a", "start": 3, "length": 5}]})), "clips"),
])
def test_broken_datasets_give_one_line_errors(tmp_path, damage, message):
    path = write_dataset(tmp_path / "d", frames(), fps=24, source="t")
    damage(path)
    with pytest.raises(DiscodanceError, match=message) as err:
        load_dataset(path)
    assert "\n" not in str(err.value)


def test_missing_and_non_folder_paths(tmp_path):
    with pytest.raises(DiscodanceError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DiscodanceError, match="not a folder"):
        load_dataset(tmp_path / "file")

"""Writers and layout: GIF/MP4/PNG files that open, with the right frames."""
import numpy as np
import pytest
from PIL import Image

from discodance.generate import STRIP_FRAMES, tile, write_gif, write_mp4, write_outputs, write_strip


def sequences(b=3, t=20, h=16, w=12):
    rng = np.random.default_rng(0)
    return (rng.random((b, t, h, w)) > 0.5).astype(np.uint8) * 255


def test_tile_places_every_sequence_unchanged():
    seq = sequences()
    grid = tile(seq, columns=2, scale=2, gap=1)
    assert grid.shape == (20, 2 * (32 + 1) + 1, 2 * (24 + 1) + 1)
    assert np.array_equal(grid[:, 1:33:2, 1:25:2], seq[0])
    assert np.array_equal(grid[:, 34:66:2, 1:25:2], seq[2])


def test_gif_has_every_frame(tmp_path):
    frames = sequences()[0]
    path = write_gif(tmp_path / "a.gif", frames, fps=10)
    with Image.open(path) as im:
        assert im.n_frames == 20 and im.size == (12, 16)
        im.seek(5)
        assert np.array_equal(np.array(im.convert("L")), frames[5])
    assert not list(tmp_path.glob(".*"))


def test_mp4_decodes_to_the_same_number_of_frames(tmp_path):
    import imageio_ffmpeg
    frames = sequences(t=24, h=50, w=30)[0]
    path = write_mp4(tmp_path / "a.mp4", frames, fps=24)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    assert meta["size"] == (32, 64)  # padded up to multiples of 16
    assert sum(1 for _ in reader) == 24


def test_strip_has_one_column_per_requested_frame(tmp_path):
    path = write_strip(tmp_path / "s.png", sequences(b=2, t=20), STRIP_FRAMES, scale=1)
    with Image.open(path) as im:
        w, h = im.size
    assert w == 4 * (12 + 2 * 2) and h == 2 * 16 + 3 * 2 + 14
    with pytest.raises(Exception, match="none of the strip frames"):
        write_strip(tmp_path / "t.png", sequences(t=1), (5, 6))


def test_write_outputs_names(tmp_path):
    files = write_outputs(tmp_path, sequences(), fps=12)
    assert {k: v.split("/")[-1] for k, v in files.items()} == {"gif": "samples.gif", "mp4": "samples.mp4",
                                                               "strip": "strip.png"}


def test_models_with_different_seed_lengths_share_the_last_seed_frame(tiny_data):
    from discodance.data.dataset import load_dataset
    from discodance.generate import seed_starts
    d = load_dataset(tiny_data)
    last = [seed_starts(d, "test", c, 3, continuation=4) + c - 1 for c in (1, 2, 5)]
    assert all(np.array_equal(last[0], x) for x in last)
    for c, starts in zip((1, 2, 5), last):
        for s in starts - c + 1:
            assert any(b <= s and s + c <= e for b, e in d.blocks("test"))

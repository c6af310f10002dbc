"""Video / image folder -> silhouette dataset: decoding, methods, cropping, errors.

Real footage (DAVIS dance-twirl, in ../shared/data) is used where present; the rest runs on tiny
videos generated here with imageio-ffmpeg. Tests of the `segment` method skip when the optional
mediapipe extra is not installed.
"""
from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from discodance.data.crop import crop_mask, smooth_boxes
from discodance.data.dataset import load_dataset
from discodance.data.silhouette import (keep_dancer, make_method, otsu_threshold, prepare, prepare_images,
                                        prepare_video)
from discodance.data.video import ImageClip, VideoClip, list_images, open_source, read_image
from discodance.errors import DiscodanceError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DAVIS = DATA / "davis" / "dance-twirl"
needs_davis = pytest.mark.skipif(not (DAVIS / "dance-twirl.mp4").is_file(),
                                 reason=f"real footage (DAVIS dance-twirl) not found at {DAVIS}")
try:
    from discodance.data.segment import import_mediapipe
    import_mediapipe()
    HAVE_MEDIAPIPE = True
except DiscodanceError:
    HAVE_MEDIAPIPE = False
needs_mediapipe = pytest.mark.skipif(not HAVE_MEDIAPIPE,
                                     reason="mediapipe not installed: pip install 'discodance[segment]'")


# ----------------------------------------------------------------------------- synthetic videos
def figure_masks(n=24, h=64, w=96) -> np.ndarray:
    """A 'dancer' (body ellipse + head disc) sliding right and bobbing: (n, h, w) bool."""
    yy, xx = np.mgrid[:h, :w]
    masks = []
    for t in range(n):
        cx, cy = 30 + 1.5 * t, 36 + 3 * np.sin(t / 3)
        body = ((xx - cx) / 7) ** 2 + ((yy - cy) / 16) ** 2 <= 1
        head = (xx - cx) ** 2 + (yy - (cy - 19)) ** 2 <= 25  # overlaps the body: a neck
        masks.append(body | head)
    return np.stack(masks)


def write_video(path: Path, frames: np.ndarray, fps: float = 10, codec: str | None = None) -> Path:
    """Encode (T, H, W, 3) uint8 frames with the FFmpeg inside imageio-ffmpeg."""
    writer = imageio_ffmpeg.write_frames(str(path), (frames.shape[2], frames.shape[1]), fps=fps,
                                         codec=codec, quality=9, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def dark_on_bright(masks: np.ndarray) -> np.ndarray:
    """Render masks as a dark dancer (40) on a bright backdrop (220), RGB."""
    grey = np.where(masks, 40, 220).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=3)


def textured_stage(masks: np.ndarray, seed=0) -> np.ndarray:
    """A fixed, busy, mid-grey backdrop (so threshold fails) with a red dancer moving over it."""
    rng = np.random.default_rng(seed)
    h, w = masks.shape[1:]
    tiles = rng.integers(60, 200, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    stage = np.kron(tiles, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]
    frames = np.repeat(stage[None], len(masks), axis=0)
    frames[masks] = (230, 20, 20)
    return frames


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A dark-dancer mp4, its ground-truth masks, and a fixed-camera textured-stage mp4."""
    root = tmp_path_factory.mktemp("synth")
    masks = figure_masks()
    return {"masks": masks, "dark": write_video(root / "dark.mp4", dark_on_bright(masks)),
            "stage": write_video(root / "stage.mp4", textured_stage(masks)),
            "blank": write_video(root / "blank.mp4", np.full((12, 64, 96, 3), 230, np.uint8))}


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("suffix,codec", [(".mp4", None), (".mkv", "libx264"), (".avi", "mpeg4"),
                                          (".mov", "libx264"), (".webm", "libvpx-vp9")])
def test_decodes_common_containers(tmp_path, suffix, codec):
    frames = dark_on_bright(figure_masks(n=8))
    path = write_video(tmp_path / f"clip{suffix}", frames, codec=codec)
    clip = open_source(path)
    got = np.stack(list(clip.frames()))
    assert got.shape == frames.shape and clip.fps == pytest.approx(10)
    assert np.abs(got.astype(int) - frames).mean() < 8  # lossy codecs, same picture


def test_time_range_fps_and_stride(synth):
    clip = VideoClip(synth["dark"], start=0.5, end=1.5)  # 24 frames at 10 fps
    assert sum(1 for _ in clip.frames(gray=True)) == 10
    half = VideoClip(synth["dark"], fps=5)
    assert half.fps == 5 and sum(1 for _ in half.frames()) == 12
    strided = VideoClip(synth["dark"], stride=3)
    assert strided.fps == pytest.approx(10 / 3) and sum(1 for _ in strided.frames()) == 8
    assert len(VideoClip(synth["dark"]).sample(4)) == 4


def test_sample_by_seeking_matches_sequential(synth, monkeypatch):
    clip = VideoClip(synth["dark"])
    sequential = clip.sample(3, gray=True)
    monkeypatch.setattr("discodance.data.video.SEQUENTIAL_SAMPLE", 0)  # force seeks
    seeked = clip.sample(3, gray=True)
    assert len(seeked) == 3 and all(f.shape == (64, 96) for f in seeked)
    assert np.abs(seeked[1].astype(int) - sequential[1]).mean() < 10


def test_decoding_streams_in_constant_memory(tmp_path):
    """Peak Python memory while decoding 120 frames stays at a few frames, not the video."""
    frames = np.repeat(dark_on_bright(figure_masks(n=1, h=240, w=320)), 120, axis=0)
    path = write_video(tmp_path / "long.mp4", frames)
    frame_bytes = 240 * 320 * 3
    tracemalloc.start()
    n = sum(1 for _ in open_source(path).frames())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 120 and peak < 8 * frame_bytes


@needs_davis
def test_davis_video_matches_its_frames():
    clip = open_source(DAVIS / "dance-twirl.mp4")
    assert (clip.height, clip.width, clip.fps) == (480, 854, 24)
    frames = list(clip.frames())
    assert len(frames) == 90
    jpg = read_image(DAVIS / "frames" / "00045.jpg")
    assert np.abs(frames[45].astype(int) - jpg).mean() < 6


def test_image_folder_natural_order_and_errors(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((8, 12), i * 20, np.uint8)).save(tmp_path / f"f{i}.png")
    assert [p.name for p in list_images(tmp_path)] == ["f1.png", "f2.png", "f10.png"]
    assert [int(f[0, 0]) for f in ImageClip(tmp_path).frames(gray=True)] == [20, 40, 200]
    Image.fromarray(np.zeros((9, 12), np.uint8)).save(tmp_path / "f11.png")
    with pytest.raises(DiscodanceError, match="f11.png: frames of mixed sizes"):
        list(ImageClip(tmp_path).frames())
    (tmp_path / "f11.png").write_bytes(b"not a png")
    with pytest.raises(DiscodanceError, match="f11.png: not a readable image"):
        list(ImageClip(tmp_path).frames())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DiscodanceError, match="no images"):
        prepare_images(empty, tmp_path / "ds", method="threshold")


# ----------------------------------------------------------------------------- bad input
def test_bad_videos_are_one_line_errors(synth, tmp_path):
    data = synth["dark"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])       # moov atom lost
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    cases = {"cut.mp4": "not a readable video", "text.mp4": "not a readable video"}
    for name, message in cases.items():
        with pytest.raises(DiscodanceError, match=message) as err:
            prepare_video(tmp_path / name, tmp_path / "ds", method="threshold", progress=False)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DiscodanceError, match="no such file"):
        VideoClip(tmp_path / "missing.mp4")
    with pytest.raises(DiscodanceError, match="unsupported file type"):
        open_source(Path(__file__))
    assert not (tmp_path / "ds").exists()


def test_truncated_streamable_video_fails_while_decoding(synth, tmp_path):
    """Moov atom first (+faststart), then cut: the header reads, the frames run out."""
    fast = tmp_path / "fast.mp4"
    import subprocess
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(synth["stage"]), "-c", "copy",
                    "-movflags", "+faststart", str(fast)], check=True)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(DiscodanceError, match="cut.mp4: corrupt or truncated video"):
        list(VideoClip(cut).frames())


def test_zero_frame_videos(tmp_path):
    import subprocess
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    for name in ("zero.mov", "zero.avi"):
        subprocess.run([ffmpeg, "-v", "quiet", "-f", "lavfi", "-i", "color=white:s=64x64:r=10",
                        "-frames:v", "0", "-c:v", "mpeg4", str(tmp_path / name)])
        with pytest.raises(DiscodanceError, match=f"{name}: no (video stream|decodable video frames)"):
            prepare_video(tmp_path / name, tmp_path / "ds", method="threshold", progress=False)


def test_empty_time_range_is_an_error(synth):
    with pytest.raises(DiscodanceError, match="no frames in the requested time range"):
        list(VideoClip(synth["dark"], start=100).frames())


def test_no_person_and_no_half_written_dataset(synth, tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(DiscodanceError, match="blank.mp4: no person found"):
        prepare_video([synth["dark"], synth["blank"]], out, method="threshold", progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unknown_method_and_missing_extra(synth, tmp_path, monkeypatch):
    with pytest.raises(DiscodanceError, match="unknown silhouette method 'magic'; choose from threshold"):
        prepare_video(synth["dark"], tmp_path / "ds", method="magic")
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    with pytest.raises(DiscodanceError, match=r"needs MediaPipe: pip install 'discodance\[segment\]'"):
        make_method("segment")
    assert not (tmp_path / "ds").exists()


def test_mixed_sizes_without_crop(synth, tmp_path):
    small = write_video(tmp_path / "small.mp4", dark_on_bright(figure_masks(h=48, w=64)))
    with pytest.raises(DiscodanceError, match="small.mp4: frames of mixed sizes"):
        prepare_video([synth["dark"], small], tmp_path / "ds", method="threshold", crop=False)
    prepare_video([synth["dark"], small], tmp_path / "ok", method="threshold", progress=False)  # crops: fine


# ----------------------------------------------------------------------------- methods
def test_otsu_and_keep_dancer():
    hist = np.zeros(256)
    hist[40], hist[220] = 100, 300
    assert 40 <= otsu_threshold(hist) < 220
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:8] = True      # dancer
    mask[15:18, 15:18] = True   # smaller blob
    mask[0, 19] = True          # speckle
    kept = keep_dancer(mask)
    assert kept[5, 5] and not kept[16, 16] and not kept[0, 19]


def test_threshold_full_resolution(synth, tmp_path):
    ds = load_dataset(prepare_video(synth["dark"], tmp_path / "ds", method="threshold", crop=False,
                                    progress=False))
    assert ds.frame_size == (64, 96) and ds.frames.dtype == np.uint8
    assert set(np.unique(ds.frames)) <= {0, 255} and ds.poses is None
    assert np.mean([iou(f, m) for f, m in zip(ds.frames, synth["masks"])]) > 0.9
    extra = ds.meta["extra"]["silhouettes"]
    assert extra["method"] == "threshold" and 40 < extra["clips"][0]["method_options"]["threshold"] < 220


def test_threshold_invert(tmp_path):
    masks = figure_masks(n=10)
    bright = 255 - dark_on_bright(masks)
    path = write_video(tmp_path / "bright.mp4", bright)
    ds = load_dataset(prepare_video(path, tmp_path / "ds", method="threshold", invert=True, crop=False,
                                    progress=False))
    assert np.mean([iou(f, m) for f, m in zip(ds.frames, masks)]) > 0.9


def test_background_on_fixed_camera(synth, tmp_path):
    ds = load_dataset(prepare_video(synth["stage"], tmp_path / "ds", method="background", crop=False,
                                    progress=False))
    assert np.mean([iou(f, m) for f, m in zip(ds.frames, synth["masks"])]) > 0.85


def test_crop_is_steady_and_matches_cropped_truth(synth, tmp_path):
    ds = load_dataset(prepare_video(synth["dark"], tmp_path / "ds", method="threshold", size=(32, 32),
                                    progress=False))
    assert ds.frame_size == (32, 32) and len(ds.frames) == 24
    boxes = np.array(ds.meta["extra"]["silhouettes"]["clips"][0]["crop_boxes"])
    assert np.ptp(boxes[:, 2]) < 0.5 and np.ptp(boxes[:, 3]) < 0.5      # one size: no zoom pumping
    assert np.abs(np.diff(boxes[:, 1] + boxes[:, 3] / 2)).max() < 3      # centre moves smoothly
    truth = [crop_mask(m, b, (32, 32)) for m, b in zip(synth["masks"], boxes)]
    assert np.mean([iou(f, t) for f, t in zip(ds.frames, truth)]) > 0.85
    centre = np.argwhere(np.asarray(ds.frames).max(axis=0) > 0).mean(axis=0)
    assert np.all(np.abs(centre - 15.5) < 4)                              # dancer kept centred


def test_large_source_is_analysed_smaller_but_boxes_stay_in_source_pixels(tmp_path):
    masks = np.kron(figure_masks(n=8), np.ones((10, 10), bool))          # 640x960 > 540 rows
    path = write_video(tmp_path / "big.mp4", dark_on_bright(masks))
    ds = load_dataset(prepare_video(path, tmp_path / "ds", method="threshold", size=(32, 32), progress=False))
    info = ds.meta["extra"]["silhouettes"]["clips"][0]
    assert info["source_size"] == [640, 960] and info["analysed_size"] == [540, 810]
    truth = [crop_mask(m, b, (32, 32)) for m, b in zip(masks, info["crop_boxes"])]
    assert np.mean([iou(f, t) for f, t in zip(ds.frames, truth)]) > 0.85


def test_smooth_boxes_contain_the_dancer_and_bridge_gaps():
    t = np.arange(200)
    cy, cx = 100 + 20 * np.sin(t / 15), 200 + t
    half = 30 + 10 * (np.sin(t / 4) > 0)                 # arms in / out: extent jumps every frame
    bboxes = np.stack([cy - half, cx - half / 2, cy + half, cx + half / 2], axis=1)
    bboxes[50:60] = np.nan                                 # dancer lost for 10 frames
    boxes = smooth_boxes(bboxes, fps=25, size=(64, 64))
    ok = ~np.isnan(bboxes[:, 0])
    assert np.all(boxes[ok, 0] <= bboxes[ok, 0]) and np.all(boxes[ok, 0] + boxes[ok, 2] >= bboxes[ok, 2])
    assert np.all(boxes[ok, 1] <= bboxes[ok, 1]) and np.all(boxes[ok, 1] + boxes[ok, 3] >= bboxes[ok, 3])
    assert np.ptp(boxes[:, 2]) < 1e-6 and not np.isnan(boxes).any()


def test_prepare_dispatches_videos_and_folders(synth, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(dark_on_bright(figure_masks(n=6))):
        Image.fromarray(frame).save(folder / f"{i}.png")
    ds = load_dataset(prepare([synth["dark"], folder], tmp_path / "ds", method="threshold", fps=10,
                              progress=False))
    assert [c["name"] for c in ds.meta["clips"]] == ["dark", "frames"] and ds.fps == 10
    assert [c["length"] for c in ds.meta["clips"]] == [24, 6]


# ----------------------------------------------------------------------------- real footage
@needs_davis
def test_davis_masks_folder_roundtrip(tmp_path):
    truth = np.stack([read_image(p, gray=True) for p in list_images(DAVIS / "masks")])
    full = load_dataset(prepare_images(DAVIS / "masks", tmp_path / "full", masks=True, crop=False,
                                       progress=False))
    assert np.array_equal(np.asarray(full.frames), np.where(truth > 127, 255, 0))
    cropped = load_dataset(prepare_images(DAVIS / "masks", tmp_path / "crop", masks=True, progress=False))
    boxes = cropped.meta["extra"]["silhouettes"]["clips"][0]["crop_boxes"]
    scores = [iou(f, crop_mask(t, b, (64, 64))) for f, t, b in zip(cropped.frames, truth, boxes)]
    assert np.mean(scores) > 0.99


@needs_davis
@needs_mediapipe
def test_segment_meets_iou_target_on_davis_video(tmp_path):
    truth = np.stack([read_image(p, gray=True) for p in list_images(DAVIS / "masks")])
    full = load_dataset(prepare_video(DAVIS / "dance-twirl.mp4", tmp_path / "full", crop=False,
                                      progress=False))
    assert np.mean([iou(f, t) for f, t in zip(full.frames, truth)]) >= 0.80
    assert full.poses.shape == (90, 33, 2) and full.meta["poses"]["units"] == "px"
    hips = np.asarray(full.poses)[:, 23:25]
    assert np.isfinite(hips).all() and (hips[..., 0] < 854).all() and (hips[..., 1] < 480).all()
    meta = json.loads((tmp_path / "full" / "meta.json").read_text())
    assert meta["poses"]["joint_names"][0] == "nose" and len(meta["poses"]["joint_parents"]) == 33


@needs_mediapipe
def test_segment_no_person_is_an_error(synth, tmp_path):
    with pytest.raises(DiscodanceError, match="no person found"):
        prepare_video(synth["blank"], tmp_path / "ds", method="segment", progress=False)
    assert not (tmp_path / "ds").exists()

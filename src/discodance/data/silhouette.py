"""Silhouettes from dance videos or image folders, written as a discodance dataset.

Three ways to tell the dancer from the rest of the frame, selectable by name:

* ``threshold`` -- the DanceNet recipe (jsn5/dancenet, create_data.py, 2018): luma below a
  brightness threshold is the dancer (a dark dancer on a bright backdrop; ``invert`` for a bright
  one on dark). The threshold defaults to Otsu's (N. Otsu, "A threshold selection method from
  gray-level histograms", IEEE Trans. SMC 9(1), 1979) over a sample of the clip's frames, so a
  single value serves the whole clip and the silhouette does not flicker.
* ``background`` -- a fixed camera's background: the per-pixel temporal median of frames sampled
  across the clip (the dancer moves, so the median sees the backdrop); pixels far from it (Otsu
  on the sampled differences) are the dancer. Needs a tripod: any camera motion breaks it.
* ``segment`` -- a person-segmentation network run offline on CPU (MediaPipe Pose, see
  segment.py); also gives 33 body keypoints, stored as poses.

Every method's mask is then cleaned (a 3x3 opening drops speckle, the largest 8-connected
component is kept as the dancer), cropped with a steady box and resized (crop.py), and
binarized to 0/255.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

from ..errors import DiscodanceError, require
from ..progress import progress_bar, say
from .crop import MaskSpill, smooth_boxes
from .budget import check_budget, check_frame_size
from .writer import DatasetWriter
from .method import Method
from .pick import Pick, check_inside, parse_pick
from .segment import Segment
from .video import Clip, ImageClip, VideoClip, open_source

METHODS = ("threshold", "background", "segment")
MIN_WORK_HEIGHT = 540  # crops are analysed at <= max(540, 8 x output height) rows, not at 4K
_SQUARE = np.ones((3, 3), dtype=bool)


# ----------------------------------------------------------------------------- methods
def otsu_threshold(hist: np.ndarray) -> int:
    """Otsu (1979): the level t maximising the between-class variance of {<= t} and {> t}."""
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(len(p)))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))
    return int(np.argmax(np.nan_to_num(between[:-1], nan=0.0)))


def opening(mask: np.ndarray, size: int = 3) -> np.ndarray:
    """Binary opening by a size x size square (separable min then max filter: 3x faster)."""
    u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    return ndimage.maximum_filter(ndimage.minimum_filter(u8, size), size).astype(bool)


def closing(mask: np.ndarray, size: int = 5) -> np.ndarray:
    """Binary closing by a size x size square: fills gaps narrower than `size` pixels."""
    u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    return ndimage.minimum_filter(ndimage.maximum_filter(u8, size), size).astype(bool)


def keep_dancer(mask: np.ndarray, open_first: bool = True) -> np.ndarray:
    """The largest 8-connected component of a boolean mask, after a 3x3 opening (drops speckle).

    A frame holds one dancer; the other blobs a method lets through (a dark shop window, a
    passer-by's legs) are smaller, so the largest component is the safest single guess.
    """
    if open_first:
        mask = opening(mask, 3)
    labels, n = ndimage.label(mask, structure=_SQUARE)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


class Threshold(Method):
    """DanceNet's recipe: luma <= threshold is the dancer (> threshold with invert=True)."""
    name, gray = "threshold", True

    def __init__(self, threshold: int | None = None, invert: bool = False, samples: int = 16):
        require(threshold is None or 0 <= threshold <= 255, f"threshold must be 0..255, got {threshold}")
        self.threshold, self.invert, self.samples = threshold, bool(invert), samples

    def fit(self, clip: Clip) -> None:
        if self.threshold is None:
            hist = sum(np.bincount(f.ravel(), minlength=256) for f in clip.sample(self.samples, gray=True))
            self.threshold = otsu_threshold(hist)

    def __call__(self, frame):
        return (frame > self.threshold) if self.invert else (frame <= self.threshold), None

    def options(self) -> dict:
        return {"threshold": self.threshold, "invert": self.invert}


class Background(Method):
    """Fixed-camera background subtraction against a temporal median of sampled frames.

    The median of frames spread over the whole clip is the empty stage wherever the dancer
    spends less than half the time; a pixel whose largest channel difference to it exceeds
    the Otsu threshold of the sampled differences (at least `min_threshold`) is the dancer.
    A 5x5 closing rejoins body parts whose colour happens to match the backdrop.
    """
    name = "background"

    def __init__(self, samples: int = 20, threshold: int | None = None, min_threshold: int = 25):
        self.samples, self.threshold, self.min_threshold = samples, threshold, min_threshold
        self.background: np.ndarray | None = None

    def fit(self, clip: Clip) -> None:
        sample = np.stack(clip.sample(self.samples))
        self.background = np.median(sample, axis=0).astype(np.int16)
        if self.threshold is None:
            hist = sum(np.bincount(self._diff(f).ravel(), minlength=256) for f in sample)
            self.threshold = max(otsu_threshold(hist), self.min_threshold)

    def _diff(self, frame: np.ndarray) -> np.ndarray:
        return np.abs(frame.astype(np.int16) - self.background).max(axis=2).astype(np.uint8)

    def __call__(self, frame):
        mask = self._diff(frame) > self.threshold
        return closing(mask, 5), None

    def options(self) -> dict:
        return {"threshold": self.threshold, "samples": self.samples}


class Masks(Method):
    """Images that already are masks (e.g. hand-drawn): anything brighter than mid-grey."""
    name, gray, clean = "masks", True, False

    def __call__(self, frame):
        return frame > 127, None


def make_method(name: str, *, invert: bool = False, **options) -> Method:
    """A fresh method by name (one per clip: the segmenter tracks the dancer across frames)."""
    if name == "threshold":
        return Threshold(invert=invert, **options)
    if name == "background":
        return Background(**options)
    if name == "segment":
        return Segment(**options)
    if name == "masks":
        return Masks()
    raise DiscodanceError(f"unknown silhouette method {name!r}; choose from {', '.join(METHODS)}")


# ----------------------------------------------------------------------------- one clip
def _masks(clip: Clip, method: Method, progress: bool, keypoints: list) -> Iterator[np.ndarray]:
    """Full-resolution dancer masks of a clip; keypoints of each frame appended to `keypoints`."""
    bar = progress_bar(clip.frames(gray=method.gray), total=clip.est_frames, unit="frame",
                       desc=f"{clip.name} [{method.name}]", enabled=progress)
    sy, sx = clip.scale
    for mask, points in method.masks(iter(bar)):
        keypoints.append(points if points is None else points * np.float32([sx, sy]))
        yield keep_dancer(mask) if method.clean else mask


def _check_found(clip: Clip, method: Method, found: int, total: int) -> None:
    """No dancer in any frame is an error; in some frames, a warning on stderr."""
    require(found > 0, f"{clip.path}: no person found in any of its {total} frames "
                       f"(method {method.name!r}); is there a dancer in view?")
    if found < total:
        say(f"warning: {clip.path}: no dancer found in {total - found} of {total} frames (left empty)")


def _full_frames(clip, method, progress, keypoints) -> Iterator[np.ndarray]:
    """crop=False: stream masks at the source resolution straight into the dataset."""
    found = total = 0
    for mask in _masks(clip, method, progress, keypoints):
        found, total = found + bool(mask.any()), total + 1
        yield np.where(mask, 255, 0).astype(np.uint8)
    _check_found(clip, method, found, total)


def _cropped_frames(clip, method, size, progress, keypoints, boxes_out: list) -> Iterator[np.ndarray]:
    """crop=True: spill all masks (pass 1), choose steady boxes, render them (pass 2)."""
    spill = MaskSpill(size)
    try:
        for mask in _masks(clip, method, progress, keypoints):
            spill.add(mask)
        _check_found(clip, method, spill.nonempty(), len(spill))
        boxes = smooth_boxes(np.array(spill.bboxes), clip.fps, size)
        boxes_out.append(boxes * np.tile(clip.scale, 2))  # in source pixels, like the poses
        yield from spill.frames(boxes, size)
    finally:
        spill.close()


def _stacked(keypoints: list) -> Iterator[np.ndarray]:
    """Poses as one (T, J, 2) chunk, built only when the writer asks (after the frames)."""
    yield np.stack(keypoints).astype(np.float32)


# ----------------------------------------------------------------------------- entry points
def _as_list(paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    require(paths, "no input given")
    return paths


def _unique_names(clips: Sequence[Clip]) -> None:
    seen: dict[str, int] = {}
    for clip in clips:
        n = seen[clip.name] = seen.get(clip.name, 0) + 1
        if n > 1:
            clip.name = f"{clip.name}-{n}"


def _open_all(paths, fps, start, end, stride, max_height) -> list[Clip]:
    """Open (and probe) every input first, so a bad one fails before any work; one frame rate."""
    clips = [open_source(p, fps=fps, start=start, end=end, stride=stride, max_height=max_height)
             for p in paths]
    rate = clips[0].fps
    for i, clip in enumerate(clips):
        if abs(clip.fps - rate) > 1e-6:
            require(isinstance(clip, VideoClip), f"{clip.path}: image folders play at {clip.fps:g} "
                    f"frames/s but {clips[0].path} at {rate:g}; pass --fps")
            clips[i] = VideoClip(clip.path, fps=rate * stride, start=start, end=end, stride=stride,
                                 max_height=max_height)
    _unique_names(clips)
    return clips


def prepare(sources, out, *, method: str = "segment", masks: bool = False,
            size: tuple[int, int] = (64, 64), fps: float | None = None, start: float | None = None,
            end: float | None = None, stride: int = 1, crop: bool = True, overwrite: bool = False,
            invert: bool = False, progress: bool = True, method_options: dict | None = None,
            force: bool = False, pick: str | Pick | None = None) -> Path:
    """Videos and/or image folders -> a silhouette dataset at `out`, one clip per source.

    All sources share one frame rate (videos are resampled to the first source's, or to
    `fps`) and, with crop=False, must share one frame size. The gate (gate.py) refuses silhouettes
    that look broken unless `force`. `pick` chooses the dancer among the people `segment` finds
    (pick.py; default "moving"); a point or box is in each source's first frame. Returns the dataset path.
    """
    require(masks or method in METHODS,
            f"unknown silhouette method {method!r}; choose from {', '.join(METHODS)}")
    if pick is not None:
        require(method == "segment" and not masks, "--pick chooses among the people found by --method segment")
        pick = pick if isinstance(pick, Pick) else parse_pick(pick)
        method_options = {**(method_options or {}), "pick": pick}
    size = (int(size[0]), int(size[1]))
    require(size[0] >= 1 and size[1] >= 1, f"--size must be two positive numbers, got {size}")
    if crop:
        check_frame_size(*size)  # before a 20000x20000 work size is chosen
    work = max(MIN_WORK_HEIGHT, 8 * size[0]) if crop else None
    clips = _open_all(_as_list(sources), fps, start, end, stride, work)
    for clip in clips if pick is not None else ():
        check_inside(pick, clip.source_size[1], clip.source_size[0], clip.path)
    if not crop:
        for clip in clips:
            require((clip.height, clip.width) == (clips[0].height, clips[0].width),
                    f"{clip.path}: frames of mixed sizes ({clip.width}x{clip.height}, but "
                    f"{clips[0].path} is {clips[0].width}x{clips[0].height}); crop to one size instead")
        size = (clips[0].height, clips[0].width)
    # frames stream to disk one at a time: the disk must hold them all, memory a few frames
    check_budget(out, sum(c.est_frames or 0 for c in clips), *size, working_bytes=16 * size[0] * size[1],
                 what="--size" if crop else "source frame size (--no-crop)")
    name = "masks" if masks else method
    make_method(name, invert=invert, **(method_options or {})).close()  # fail fast on a missing extra
    with DatasetWriter(out, *size, overwrite=overwrite, check=True, force=force) as writer:  # gate.py
        info, used = [], None
        for clip in clips:
            used = make_method(name, invert=invert, **(method_options or {}))
            try:
                used.fit(clip)
                keypoints, boxes = [], []
                frames = (_cropped_frames(clip, used, size, progress, keypoints, boxes) if crop
                          else _full_frames(clip, used, progress, keypoints))
                poses = _stacked(keypoints) if used.joint_names else None
                length = writer.add_clip(clip.name, frames, poses)
            finally:
                used.close()
            info.append(_clip_info(clip, used, length, boxes))
        return writer.finish(
            fps=clips[0].fps, source=", ".join(str(c.path) for c in clips),
            joint_names=used.joint_names, joint_parents=used.joint_parents,
            pose_units="px" if used.joint_names else None,
            pose_axes="x right, y down (source pixels)" if used.joint_names else None,
            extra={"silhouettes": {"method": name, "crop": bool(crop), "size": list(size),
                                   "start": start, "end": end, "stride": stride, "clips": info}})


def _clip_info(clip: Clip, method: Method, length: int, boxes: list) -> dict:
    """Per-clip provenance for meta.json: source, its size and rate, method settings, crop boxes."""
    info = {"name": clip.name, "path": str(clip.path), "frames": length,
            "source_size": list(clip.source_size), "analysed_size": [clip.height, clip.width],
            "method_options": method.options()}
    if boxes:  # (y0, x0, h, w) in source pixels per frame: maps poses into the crops
        info["crop_boxes"] = np.round(boxes[0], 1).tolist()
    return info


def prepare_video(paths, out, *, method: str = "segment", size: tuple[int, int] = (64, 64),
                  fps: float | None = None, start: float | None = None, end: float | None = None,
                  crop: bool = True, overwrite: bool = False, invert: bool = False, stride: int = 1,
                  progress: bool = True, method_options: dict | None = None, pick: str | None = None) -> Path:
    """One or more video files -> a silhouette dataset (one clip per file)."""
    paths = _as_list(paths)
    for p in paths:
        require(not p.is_dir(), f"{p}: is a folder; use prepare_images for image folders")
    return prepare(paths, out, method=method, size=size, fps=fps, start=start, end=end,
                   stride=stride, crop=crop, overwrite=overwrite, invert=invert,
                   progress=progress, method_options=method_options, pick=pick)


def prepare_images(folder, out, *, method: str = "segment", masks: bool = False,
                   size: tuple[int, int] = (64, 64), crop: bool = True, overwrite: bool = False,
                   invert: bool = False, fps: float = 24.0, stride: int = 1, progress: bool = True,
                   method_options: dict | None = None, pick: str | None = None) -> Path:
    """One or more folders of frames (or, with masks=True, of masks) -> a silhouette dataset.

    Images are taken in natural order (2.png before 10.png) and played at `fps`.
    """
    folders = _as_list(folder)
    for f in folders:
        require(f.is_dir(), f"{f}: is not a folder of images")
    return prepare(folders, out, method=method, masks=masks, size=size, fps=fps, stride=stride,
                   crop=crop, overwrite=overwrite, invert=invert, progress=progress,
                   method_options=method_options, pick=pick)


__all__ = ["METHODS", "Method", "Threshold", "Background", "Masks", "make_method", "keep_dancer",
           "otsu_threshold", "prepare", "prepare_video", "prepare_images", "ImageClip", "VideoClip"]

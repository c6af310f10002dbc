"""Streaming frame sources: video files and folders of images, one frame in memory at a time.

Videos are decoded by the FFmpeg binary that ships inside the `imageio-ffmpeg` wheel (already a
core dependency, so nothing else has to be installed and nothing is downloaded at run time). We
run it as a subprocess and read raw frames from its stdout pipe, so memory stays at one frame no
matter how long the video is (an hour of 1080p is never held in RAM). FFmpeg reads every common
container and codec (mp4, mkv, avi, mov, webm; H.264, HEVC, VP9, AV1, MPEG-4, ...), at any
resolution and frame rate, applies rotation metadata, seeks (`-ss`), cuts (`-t`) and resamples
the frame rate (`fps` filter) for us. PyAV would do the same through a second, 60 MB copy of the
FFmpeg libraries and a lower-level API; the pipe is all we need.

Decoding runs with `-xerror`, so a truncated or corrupt file stops FFmpeg with a non-zero exit
code, which we turn into a one-line DiscodanceError naming the file.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DiscodanceError, require

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SEQUENTIAL_SAMPLE = 125  # sample() decodes the whole clip when it is shorter than n x this


def ffmpeg_exe() -> str:
    """Path of the FFmpeg binary inside the imageio-ffmpeg wheel."""
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def natural_key(path: Path) -> list:
    """Sort key that orders frame_2.png before frame_10.png (digits compare as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name.lower())]


def work_size(height: int, width: int, max_height: int | None) -> tuple[int, int]:
    """The frame size to analyse at: the source's, or shrunk to max_height keeping the aspect."""
    if not max_height or height <= max_height:
        return height, width
    return int(max_height), max(1, int(round(width * max_height / height)))


@dataclass
class Clip:
    """One input that becomes one clip of the dataset: a name, its frame size and frame rate.

    `height` x `width` is the size of the frames that frames() yields: the source's, or smaller
    when the clip was opened with max_height (silhouettes that will be cropped to 64x64 need no
    1080p analysis); `scale` maps those pixels back to the source's.
    """
    name: str
    path: Path
    height: int
    width: int
    fps: float              # rate of the frames that frames() yields
    est_frames: int | None  # for progress bars only; may be off by a few frames
    source_size: tuple[int, int] = (0, 0)

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): source pixels per delivered pixel, vertically and horizontally."""
        return self.source_size[0] / self.height, self.source_size[1] / self.width

    def frames(self, gray: bool = False) -> Iterator[np.ndarray]:
        """Yield frames as uint8 arrays (H, W, 3) RGB, or (H, W) luma when gray=True."""
        raise NotImplementedError

    def sample(self, n: int, gray: bool = False) -> list[np.ndarray]:
        """About n frames spread evenly over the clip, for fitting a background or a threshold."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- videos
_TELLING = re.compile(r"error|invalid|not found|corrupt|partial|damaged|no such|truncat|missing", re.I)
_GENERIC = ("Error opening input file", "Error opening input files", "Terminating thread",
            "Task finished", "Error while filtering", "Nothing was written")


def _ffmpeg_message(text: str) -> str:
    """The most telling line of FFmpeg's stderr, stripped of its '[demuxer @ 0x...]' prefix."""
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    telling = [ln for ln in lines if _TELLING.search(ln) and not ln.startswith(_GENERIC)]
    return (telling or lines or ["no message"])[0]


def _probe(path: Path) -> tuple[int, int, float, float, int]:
    """Width, height (after rotation), native fps, duration (0 if unknown), bytes of frame 0.

    Decodes the first frame as gray, so a file without a single decodable frame fails here,
    before any work is done; the sizes come from FFmpeg's description of the output stream.
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path), "-map", "0:v:0",
           "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    text = run.stderr.decode("utf-8", "replace")
    video = [ln for ln in text.splitlines() if re.search(r"Stream #.*Video:", ln)]
    if run.returncode != 0:
        if "0:v:0" in text or "matches no streams" in text:
            raise DiscodanceError(f"{path}: no video stream in this file (zero frames)")
        what = ("no decodable video frames" if video
                else "not a readable video (corrupt, truncated or not a video)")
        raise DiscodanceError(f"{path}: {what}: ffmpeg says {_ffmpeg_message(text)!r}")
    size = re.search(r"(?<![\w.])(\d{2,5})x(\d{2,5})\b", video[-1].split("Video:", 1)[1]) if video else None
    require(size is not None, f"{path}: no video stream found")
    fps = re.search(r"([\d.]+) fps", video[0]) or re.search(r"([\d.]+) tbr", video[0])
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text)
    seconds = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else 0.0
    return int(size[1]), int(size[2]), float(fps[1]) if fps else 0.0, seconds, len(run.stdout)


class VideoClip(Clip):
    """A video file, optionally cut to [start, end) seconds, resampled to `fps` and strided.

    The frame rate is resampled by FFmpeg's `fps` filter (it drops or duplicates frames to the
    nearest timestamp), then every `stride`-th frame is kept; the clip's fps accounts for both.
    """

    def __init__(self, path, *, fps: float | None = None, start: float | None = None,
                 end: float | None = None, stride: int = 1, name: str | None = None,
                 max_height: int | None = None):
        path = Path(path)
        require(path.exists(), f"{path}: no such file")
        require(path.is_file(), f"{path}: is not a file")
        require(fps is None or fps > 0, f"--fps must be positive, got {fps}")
        require(start is None or start >= 0, f"start time must be >= 0 s, got {start}")
        require(end is None or end > (start or 0), f"end time {end} s must be after start {start or 0} s")
        require(int(stride) >= 1, f"stride must be >= 1, got {stride}")
        self.start, self.end, self.stride, self.target_fps = start, end, int(stride), fps
        width, height, src_fps, duration, first = _probe(path)
        require(first > 0, f"{path}: the video has no frames")
        self.duration = duration
        base_fps = fps or src_fps or 25.0
        span = (end if end is not None else duration) - (start or 0)
        est = int(round(max(span, 0) * base_fps / self.stride)) if duration else None
        super().__init__(name or path.stem, path, *work_size(height, width, max_height),
                         base_fps / self.stride, est, (height, width))

    def _command(self, pix_fmt: str, seek: float | None, frames: int | None) -> list[str]:
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-xerror"]
        if seek:
            cmd += ["-ss", f"{seek:.6f}"]
        cmd += ["-i", str(self.path)]
        if self.end is not None and frames is None:
            cmd += ["-t", f"{self.end - (self.start or 0):.6f}"]
        cmd += ["-map", "0:v:0", "-an", "-sn", "-dn"]
        filters = [f"fps={self.target_fps:.6f}"] if self.target_fps and frames is None else []
        if (self.height, self.width) != self.source_size:
            filters.append(f"scale={self.width}:{self.height}:flags=area")
        if filters:
            cmd += ["-vf", ",".join(filters)]
        if frames is not None:
            cmd += ["-frames:v", str(frames)]
        return cmd + ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]

    def _decode(self, gray: bool, seek: float | None, frames: int | None) -> Iterator[np.ndarray]:
        """Run FFmpeg and yield its raw frames; raise on a non-zero exit or a cut-off frame."""
        shape = (self.height, self.width) if gray else (self.height, self.width, 3)
        nbytes = int(np.prod(shape))
        with tempfile.TemporaryFile() as errfile:
            proc = subprocess.Popen(self._command("gray" if gray else "rgb24", seek, frames),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile)
            try:
                while True:
                    buf = proc.stdout.read(nbytes)
                    if len(buf) < nbytes:
                        break
                    yield np.frombuffer(buf, np.uint8).reshape(shape)
                code = proc.wait()
            finally:
                if proc.poll() is None:  # the consumer stopped early: stop FFmpeg
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            errfile.seek(0)
            message = _ffmpeg_message(errfile.read().decode("utf-8", "replace"))
        if code != 0:
            raise DiscodanceError(f"{self.path}: corrupt or truncated video: ffmpeg says {message!r}")
        if buf:
            raise DiscodanceError(f"{self.path}: truncated video (last frame is incomplete)")

    def frames(self, gray: bool = False) -> Iterator[np.ndarray]:
        count = 0
        for i, frame in enumerate(self._decode(gray, self.start, None)):
            if i % self.stride == 0:
                count += 1
                yield frame
        if count == 0:
            where = " in the requested time range" if self.start or self.end else ""
            raise DiscodanceError(f"{self.path}: the video has no frames{where}")

    def sample(self, n: int, gray: bool = False) -> list[np.ndarray]:
        """n frames spread evenly over the clip.

        A long clip is sampled by seeking (each seek decodes from the previous keyframe, at most
        a GOP of ~250 frames, so an hour costs no more than a minute); a short one, whose keyframes
        may be few, by one sequential pass that keeps n evenly spaced frames.
        """
        begin = self.start or 0.0
        stop = self.end if self.end is not None else self.duration
        if stop <= begin:  # duration unknown: fall back to the first n frames
            return [f for _, f in zip(range(n), self.frames(gray))]
        if self.est_frames is not None and self.est_frames * self.stride <= n * SEQUENTIAL_SAMPLE:
            keep = set(np.linspace(0, max(self.est_frames - 1, 0), n).round().astype(int).tolist())
            return [f for i, f in enumerate(self.frames(gray)) if i in keep]
        times = begin + (np.arange(n) + 0.5) * (stop - begin) / n
        out = [f for t in times for f in self._decode(gray, float(t), 1)]
        require(out, f"{self.path}: the video has no frames")
        return out


# ----------------------------------------------------------------------------- image folders
def list_images(folder) -> list[Path]:
    """Image files in a folder, in natural order (2.png before 10.png)."""
    folder = Path(folder)
    require(folder.exists(), f"{folder}: no such folder")
    require(folder.is_dir(), f"{folder}: is not a folder")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    require(files, f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(files, key=natural_key)


def read_image(path: Path, gray: bool = False) -> np.ndarray:
    """One image as uint8 RGB (H, W, 3) or luma (H, W); unreadable files are a DiscodanceError.

    PIL's decompression-bomb guard (Image.MAX_IMAGE_PIXELS, 89 million pixels) is made strict:
    its warning (1-2x the limit) is an error too, since no video frame is that large and a
    small file that unpacks to gigabytes is an attack or a corrupt header, not a frame.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return np.asarray(img.convert("L" if gray else "RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DiscodanceError(f"{path}: image too large to be a video frame, refused as a possible "
                              f"decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DiscodanceError(f"{path}: not a readable image ({e})") from None


class ImageClip(Clip):
    """A folder of frames (or of masks) in natural sort order, played at `fps`."""

    def __init__(self, folder, *, fps: float = 24.0, stride: int = 1, name: str | None = None,
                 max_height: int | None = None):
        require(fps > 0, f"fps must be positive, got {fps}")
        require(int(stride) >= 1, f"stride must be >= 1, got {stride}")
        self.files = list_images(folder)[:: int(stride)]
        height, width = read_image(self.files[0], gray=True).shape
        super().__init__(name or Path(folder).resolve().name, Path(folder),
                         *work_size(height, width, max_height), fps / int(stride), len(self.files),
                         (height, width))

    def _read(self, path: Path, gray: bool) -> np.ndarray:
        img = read_image(path, gray)
        height, width = self.source_size
        require(img.shape[:2] == (height, width),
                f"{path}: frames of mixed sizes ({img.shape[1]}x{img.shape[0]}, but "
                f"{self.files[0].name} is {width}x{height})")
        if (self.height, self.width) != (height, width):
            img = np.asarray(Image.fromarray(img).resize((self.width, self.height), Image.Resampling.BOX))
        return img

    def frames(self, gray: bool = False) -> Iterator[np.ndarray]:
        for path in self.files:
            yield self._read(path, gray)

    def sample(self, n: int, gray: bool = False) -> list[np.ndarray]:
        idx = np.unique(np.linspace(0, len(self.files) - 1, min(n, len(self.files))).round().astype(int))
        return [self._read(self.files[i], gray) for i in idx]


def open_source(path, *, fps: float | None = None, start: float | None = None,
                end: float | None = None, stride: int = 1, max_height: int | None = None) -> Clip:
    """A Clip for a video file or an image folder, chosen by what the path is."""
    path = Path(path)
    require(path.exists(), f"{path}: no such file or folder")
    if path.is_dir():
        require(start is None and end is None, f"{path}: start/end times apply to videos, not image folders")
        return ImageClip(path, fps=fps or 24.0, stride=stride, max_height=max_height)
    require(path.suffix.lower() in VIDEO_SUFFIXES,
            f"{path}: unsupported file type {path.suffix!r} (videos: {', '.join(VIDEO_SUFFIXES)}; "
            "or give a folder of images)")
    return VideoClip(path, fps=fps, start=start, end=end, stride=stride, max_height=max_height)

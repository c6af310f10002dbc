"""What moves between two frames, with the camera's own motion taken out (pick.py's `moving` rule).

A dancer changes the pixels they cover from one frame to the next; a spectator standing still does
not, except that a hand-held camera pans and shakes, which moves everything. So each frame is
compared with the previous one twice: as it is (a pixel fixed in the picture shows no change) and
after shifting the previous frame by the camera's translation, found by phase correlation over the
whole frame (a pixel fixed in the scene shows no change; C. D. Kuglin and D. C. Hines, "The phase
correlation image alignment method", IEEE Conf. Cybernetics and Society, 1975). The smaller of the
two absolute grey-level differences is what moved by itself. Frames are analysed at about 240 rows.

Why not the masks' own change of shape: the person masks of spectators in a crowd, partly hidden
and poorly segmented, jump from frame to frame as much as a dancer's (1 - IoU of 0.3-0.6 per frame
on DAVIS dance-twirl), while the grey-level change inside them is a tenth of the dancer's.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

ANALYSIS_ROWS = 240


def shrink_factor(height: int) -> int:
    """The integer step that brings a frame's height near ANALYSIS_ROWS."""
    return max(1, int(round(height / ANALYSIS_ROWS)))


def small_gray(frame: np.ndarray, step: int) -> np.ndarray:
    """Grey levels averaged over step x step blocks (float32), lightly blurred."""
    image = Image.fromarray(frame).convert("L")
    size = (frame.shape[1] // step, frame.shape[0] // step)
    small = np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float32)
    return ndimage.gaussian_filter(small, 1.0)  # compression noise and sub-pixel shifts


def camera_shift(before: np.ndarray, after: np.ndarray) -> tuple[int, int]:
    """(dy, dx) that moves `before` onto `after`: the peak of their phase correlation."""
    window = np.outer(np.hanning(before.shape[0]), np.hanning(before.shape[1])).astype(np.float32)
    a = np.fft.rfft2((after - after.mean()) * window)
    b = np.fft.rfft2((before - before.mean()) * window)
    cross = a * np.conj(b)
    peak = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=before.shape)
    dy, dx = np.unravel_index(int(np.argmax(peak)), peak.shape)
    dy = dy - before.shape[0] if dy > before.shape[0] // 2 else dy
    dx = dx - before.shape[1] if dx > before.shape[1] // 2 else dx
    return int(dy), int(dx)


def own_motion(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-pixel grey-level change not explained by the camera: min(|after - before|, |after -
    before shifted by the camera|), for two small_gray frames."""
    moved = ndimage.shift(before, camera_shift(before, after), order=1, mode="nearest")
    return np.minimum(np.abs(after - before), np.abs(after - moved))

"""Cropping full-resolution silhouettes to a steady box around the dancer, then resizing.

A per-frame bounding box jitters with every arm swing and "pumps" (zooms in and out) as the
dancer opens and closes; a network trained on such crops would have to learn the camera's
jitter. So cropping is done in two passes over each clip:

1. every frame's mask is reduced to its own bounding box, downscaled to at most 8x the output
   size, bit-packed and zlib-compressed into a temporary spill file (a few KB per frame on
   disk, never the whole clip in RAM);
2. once all bounding boxes are known, `smooth_boxes` picks the crop boxes: a Gaussian-smoothed
   centre, and a box size that is the largest extent needed within +-10 s (so a short clip gets
   one fixed size, and a long one changes size only slowly), then every stored mask is
   rendered into its box with `render`, padded with background where the box leaves the frame.

The box keeps the output's aspect ratio, so the dancer is never stretched.
"""
from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

MARGIN = 1.15            # box side / the dancer's extent: a little air around the limbs
CENTRE_SIGMA_S = 0.3     # seconds; smooths out limb-driven jitter of the box centre
SIZE_WINDOW_S = 10.0     # seconds; the box is as large as the largest pose within +-this
SIZE_SIGMA_S = 2.0       # seconds; makes the rare size changes of long clips gradual
STORE_OVERSAMPLE = 8     # spilled masks keep up to 8x the output resolution (IoU 0.999 vs exact)


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """(y0, x0, y1, x1) pixel-edge bounds of the True pixels, or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return float(rows[0]), float(cols[0]), float(rows[-1] + 1), float(cols[-1] + 1)


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaNs (frames with no dancer), constant beyond the ends."""
    ok = ~np.isnan(values)
    idx = np.arange(len(values))
    return np.interp(idx, idx[ok], values[ok])


def smooth_boxes(bboxes: np.ndarray, fps: float, size: tuple[int, int], *, margin: float = MARGIN,
                 centre_sigma_s: float = CENTRE_SIGMA_S, size_window_s: float = SIZE_WINDOW_S,
                 size_sigma_s: float = SIZE_SIGMA_S) -> np.ndarray:
    """Crop boxes (T, 4) = (y0, x0, h, w) from per-frame bboxes (T, 4), in the masks' pixels.

    bboxes rows are (y0, x0, y1, x1), NaN where the frame has no dancer. The centre is the
    bounding-box centre smoothed with a Gaussian of `centre_sigma_s`; the box height is the
    running maximum (over +-`size_window_s`) of what each frame needs around that smoothed
    centre, times `margin`, then smoothed with `size_sigma_s` so it never jumps. With the
    window far wider than the smoothing, every frame's dancer stays inside its box.
    """
    bboxes = np.asarray(bboxes, dtype=np.float64)
    valid = ~np.isnan(bboxes[:, 0])
    assert valid.any(), "smooth_boxes needs at least one frame with a dancer"
    out_h, out_w = size
    sigma = centre_sigma_s * fps
    cy = gaussian_filter1d(_fill_gaps((bboxes[:, 0] + bboxes[:, 2]) / 2), sigma, mode="nearest")
    cx = gaussian_filter1d(_fill_gaps((bboxes[:, 1] + bboxes[:, 3]) / 2), sigma, mode="nearest")
    half_y = np.maximum(cy - bboxes[:, 0], bboxes[:, 2] - cy)
    half_x = np.maximum(cx - bboxes[:, 1], bboxes[:, 3] - cx)
    need = np.nan_to_num(2 * np.maximum(half_y, half_x * out_h / out_w) * margin, nan=0.0)
    window = 2 * int(round(size_window_s * fps)) + 1
    height = maximum_filter1d(need, size=window, mode="nearest")
    height = gaussian_filter1d(height, size_sigma_s * fps, mode="nearest")
    height = np.maximum(height, 8.0)
    width = height * out_w / out_h
    return np.stack([cy - height / 2, cx - width / 2, height, width], axis=1)


def render(mask: np.ndarray, origin: tuple[float, float], scale: float, box, size) -> np.ndarray:
    """Cut `box` (y0, x0, h, w in source pixels) out of a mask and resize it to size, 0/255.

    `mask` covers the source rectangle starting at `origin` (y, x) with `scale` source pixels per
    mask pixel (1 for a full-resolution mask). Parts of the box outside the mask are background.
    Area averaging (downscale) or bilinear (upscale) then a 50 % cut keeps thin limbs fair.
    """
    out_h, out_w = size
    y0, x0 = (box[0] - origin[0]) / scale, (box[1] - origin[1]) / scale
    h, w = box[2] / scale, box[3] / scale
    iy, ix = int(round(y0)), int(round(x0))
    ih, iw = max(1, int(round(h))), max(1, int(round(w)))
    canvas = np.zeros((ih, iw), dtype=np.uint8)
    sy0, sx0 = max(iy, 0), max(ix, 0)
    sy1, sx1 = min(iy + ih, mask.shape[0]), min(ix + iw, mask.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        canvas[sy0 - iy:sy1 - iy, sx0 - ix:sx1 - ix] = np.where(mask[sy0:sy1, sx0:sx1], 255, 0)
    if (ih, iw) == (out_h, out_w):
        return canvas
    method = Image.Resampling.BOX if ih >= out_h else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(canvas).resize((out_w, out_h), method))
    return np.where(small >= 128, 255, 0).astype(np.uint8)


def crop_mask(mask: np.ndarray, box, size) -> np.ndarray:
    """Crop a full-resolution mask (e.g. ground truth) with a box from smooth_boxes."""
    return render(np.asarray(mask) > 0, (0.0, 0.0), 1.0, box, size)


@dataclass
class _Entry:
    offset: int
    nbytes: int
    shape: tuple[int, int]
    origin: tuple[float, float]
    scale: float


class MaskSpill:
    """Pass-1 store: each frame's mask cut to its bounding box, downscaled, packed, compressed.

    Keeps RAM constant in the clip length (only a small index per frame stays in memory); the
    temporary file is deleted on close. `limit` is the longest stored side, in pixels.
    """

    def __init__(self, size: tuple[int, int]):
        self.limit = STORE_OVERSAMPLE * max(size)
        self.file = tempfile.TemporaryFile(prefix="discodance-masks-")
        self.entries: list[_Entry | None] = []
        self.bboxes: list[tuple[float, float, float, float]] = []

    def add(self, mask: np.ndarray) -> None:
        bbox = mask_bbox(mask)
        if bbox is None:
            self.entries.append(None)
            self.bboxes.append((np.nan,) * 4)
            return
        y0, x0, y1, x1 = (int(v) for v in bbox)
        crop = mask[y0:y1, x0:x1]
        scale = max(1.0, max(crop.shape) / self.limit)
        if scale > 1.0:
            shape = (max(1, round(crop.shape[0] / scale)), max(1, round(crop.shape[1] / scale)))
            img = Image.fromarray(np.where(crop, 255, 0).astype(np.uint8))
            crop = np.asarray(img.resize(shape[::-1], Image.Resampling.BOX)) >= 128
            scale = (y1 - y0) / crop.shape[0]
        data = zlib.compress(np.packbits(crop, axis=None).tobytes(), 1)
        self.file.seek(0, 2)
        self.entries.append(_Entry(self.file.tell(), len(data), crop.shape, (float(y0), float(x0)), scale))
        self.file.write(data)
        self.bboxes.append(bbox)

    def __len__(self) -> int:
        return len(self.entries)

    def nonempty(self) -> int:
        return sum(e is not None for e in self.entries)

    def _read(self, entry: _Entry) -> np.ndarray:
        n = entry.shape[0] * entry.shape[1]
        self.file.seek(entry.offset)
        bits = np.frombuffer(zlib.decompress(self.file.read(entry.nbytes)), dtype=np.uint8)
        return np.unpackbits(bits, count=n).reshape(entry.shape).astype(bool)

    def frames(self, boxes: np.ndarray, size: tuple[int, int]):
        """Yield each stored mask rendered into its crop box, (H, W) uint8 0/255."""
        for entry, box in zip(self.entries, boxes):
            if entry is None:
                yield np.zeros(size, dtype=np.uint8)
                continue
            yield render(self._read(entry), entry.origin, entry.scale, box, size)

    def mask(self, i: int, shape: tuple[int, int]) -> np.ndarray:
        """Stored mask number i as a whole (H, W) bool frame again (pick.py keeps everyone's here)."""
        entry, out = self.entries[i], np.zeros(shape, dtype=bool)
        if entry is None:
            return out
        return render(self._read(entry), entry.origin, entry.scale, (0.0, 0.0, *shape), shape) > 0

    def close(self) -> None:
        self.file.close()

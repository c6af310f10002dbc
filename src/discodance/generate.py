"""Rollouts from seed frames, and the writers: animated GIF, MP4 (H.264) and a PNG strip.

Every writer renders to a temporary file beside the target and renames it into place, so an
interrupted run never leaves a truncated GIF or MP4 behind under the final name.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .data.dataset import Dataset
from .errors import require
from .folders import check_target
from .limits import require_memory
from .data.batches import load_windows, seed_starts

STRIP_FRAMES = (0, 1, 2, 16)  # the report's figures 1-4: the seed and generated frames 1, 2 and 16


# ----------------------------------------------------------------------------- rollouts
@torch.no_grad()
def generate(model, dataset: Dataset, num: int = 8, steps: int = 32, seed: int = 0, split: str = "test",
             temperature: float = 1.0, feedback: str = "binary", mode: str = "chain", device="cpu"):
    """Generated frames (num, 1 + steps, H, W) float in [0, 1] and the seed frame indices.

    mode "chain" rolls out from held-out seed frames; mode "prior" decodes i.i.d. codes from the prior.
    """
    require(num >= 1, f"--num must be >= 1, got {num}")
    require(steps >= 1, f"--steps must be >= 1, got {steps}")
    require(temperature >= 0, f"--temperature must be >= 0, got {temperature}")
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    if mode == "prior":
        require(hasattr(model, "sample_prior"), "this model has no prior to sample from")
        frames = model.sample_prior(num * (steps + 1), generator, temperature)
        return frames.view(num, steps + 1, *frames.shape[-2:]).cpu(), np.zeros(0, dtype=int)
    require(mode == "chain", f"mode must be chain or prior, got {mode!r}")
    starts = seed_starts(dataset, split, model.seed_frames, num, steps)
    seed_frames = load_windows(dataset, starts, model.seed_frames, device)
    out = model.rollout(seed_frames, steps, generator, temperature=temperature, feedback=feedback)
    return out.float().cpu(), starts + model.seed_frames - 1


# ----------------------------------------------------------------------------- layout
def to_uint8(frames) -> np.ndarray:
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    return frames


def tile(sequences: np.ndarray, columns: int | None = None, scale: int = 3, gap: int = 2) -> np.ndarray:
    """(B, T, H, W) uint8 -> (T, H', W') uint8: the B sequences in a grid, upscaled, gray gaps."""
    b, t, h, w = sequences.shape
    columns = columns or int(np.ceil(np.sqrt(b * 2)))  # wider than tall: fits screens
    columns = min(columns, b)
    rows = int(np.ceil(b / columns))
    big = sequences.repeat(scale, 2).repeat(scale, 3)
    hh, ww = h * scale, w * scale
    canvas = np.full((t, rows * (hh + gap) + gap, columns * (ww + gap) + gap), 96, np.uint8)
    for i in range(b):
        r, c = divmod(i, columns)
        y, x = gap + r * (hh + gap), gap + c * (ww + gap)
        canvas[:, y:y + hh, x:x + ww] = big[i]
    return canvas


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


# ----------------------------------------------------------------------------- writers
def write_gif(path, frames: np.ndarray, fps: float = 12.0) -> Path:
    """(T, H, W) uint8 -> looping animated GIF."""
    path = Path(path)
    images = [Image.fromarray(f, mode="L") for f in to_uint8(frames)]
    tmp = _tmp(path)
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    os.replace(tmp, path)
    return path


def write_mp4(path, frames: np.ndarray, fps: float = 12.0) -> Path:
    """(T, H, W) uint8 -> H.264 MP4 (yuv420p, plays everywhere), padded to multiples of 16."""
    import imageio_ffmpeg

    path = Path(path)
    frames = to_uint8(frames)
    t, h, w = frames.shape
    ph, pw = -h % 16, -w % 16
    frames = np.pad(frames, ((0, 0), (0, ph), (0, pw)), constant_values=96)
    tmp = _tmp(path)
    writer = imageio_ffmpeg.write_frames(str(tmp), (w + pw, h + ph), fps=fps, codec="libx264",
                                         pix_fmt_in="gray", macro_block_size=16, quality=8,
                                         ffmpeg_log_level="error")
    writer.send(None)
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()
    os.replace(tmp, path)
    return path


def write_strip(path, sequences: np.ndarray, indices=STRIP_FRAMES, scale: int = 3) -> Path:
    """(B, T, H, W) -> PNG: one row per sequence, one labelled column per chosen frame index."""
    path = Path(path)
    seq = to_uint8(sequences)
    indices = [i for i in indices if i < seq.shape[1]]
    require(indices, f"none of the strip frames {list(STRIP_FRAMES)} exist in a {seq.shape[1]}-frame rollout")
    cols = [tile(seq[:, [i]], columns=1, scale=scale)[0] for i in indices]   # each (B rows, one column)
    body = np.concatenate(cols, axis=1)
    label_h = 14
    canvas = Image.new("L", (body.shape[1], body.shape[0] + label_h), 40)
    canvas.paste(Image.fromarray(body), (0, label_h))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    col_w = cols[0].shape[1]
    for k, i in enumerate(indices):
        draw.text((k * col_w + 4, 1), "seed" if i == 0 else f"frame {i}", fill=255, font=font)
    tmp = _tmp(path)
    canvas.save(tmp)
    os.replace(tmp, path)
    return path


def write_outputs(out: Path, sequences, fps: float, name: str = "samples", strip_indices=STRIP_FRAMES) -> dict:
    """samples.gif, samples.mp4 and strip.png for generated sequences (B, T, H, W)."""
    seq = to_uint8(sequences)
    grid = tile(seq)
    paths = {"gif": write_gif(out / f"{name}.gif", grid, fps),
             "mp4": write_mp4(out / f"{name}.mp4", grid, fps),
             "strip": write_strip(out / "strip.png" if name == "samples" else out / f"{name}_strip.png",
                                  seq, strip_indices)}
    return {k: str(v) for k, v in paths.items()}


def _output_bytes(num: int, steps: int, frame_size) -> int:
    """Memory a rollout's outputs take at once: float frames, their uint8 copy, the upscaled GIF grid
    (tile's 3x scale, twice: the grid and PIL's frames)."""
    pixels = num * (steps + 1) * frame_size[0] * frame_size[1]
    return pixels * (4 + 1 + 2 * 9)


def generate_from_run(run, out, num=8, steps=32, temperature=1.0, seed=0, feedback="binary",
                      mode="chain", data=None, split="test", overwrite=False, device="cpu", sets=None) -> dict:
    """The `discodance generate` command: load a run, roll out, write GIF/MP4/strip and frames.npy;
    `sets` change the model's sampling settings for this rollout (runs.with_rollout_settings)."""
    from .runs import open_run, sampling_settings

    out = Path(out)
    model, _, dataset = open_run(run, data, device, sets)
    check_target(out, "samples", inputs=[dataset.path], overwrite=overwrite)
    require_memory(_output_bytes(num, steps, dataset.frame_size), f"{num} rollouts of {steps} frames")
    frames, seed_index = generate(model, dataset, num, steps, seed, split, temperature, feedback, mode, device)
    out.mkdir(parents=True, exist_ok=True)
    files = write_outputs(out, frames, dataset.fps)
    tmp = out / ".frames.tmp.npy"
    np.save(tmp, to_uint8(frames))
    os.replace(tmp, out / "frames.npy")
    files["frames"] = str(out / "frames.npy")
    return {"files": files, "seed_frames": [int(i) for i in seed_index], "shape": list(frames.shape),
            **sampling_settings(model, sets)}

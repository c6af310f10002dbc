"""Check the BVH reader on the 18 CMU salsa files and draw a salsa silhouette GIF.

Measures, per file: parse + forward-kinematics time, max |error| against the independent
reference positions (30 fps, End Sites removed), the same error when the rotation channels are
composed in the reverse order (to show the order matters and ours is the right one), bone-length
constancy over all 120 fps frames, and the lowest foot point per frame (does the dancer touch
the floor?). Then times silhouette rendering (5,000 frames at 64x64) and a full prepare_mocap of
all files, and writes docs/img/salsa_silhouettes.gif (the two partners of take 01, front view).

    nice -n 10 python benchmarks/mocap_check.py [--data ../shared/data] [--gif docs/img/...]
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from discodance.data.keypoints import resample
from discodance.data.mocap import forward_kinematics, load_bvh, prepare_mocap, read_bvh
from discodance.data.render import default_body, plan_silhouettes, project, render_capsules

ROOT = Path(__file__).resolve().parents[1]
FOOT = ("rFoot", "lFoot", "rFoot_end", "lFoot_end")  # ankles and toe tips


def reversed_order_fk(skeleton, values):
    """FK with each joint's rotation channels composed in reverse (Ry @ Rx @ Rz for ZXY)."""
    sk, vals, col = copy.deepcopy(skeleton), values.copy(), 0
    for j, chans in enumerate(skeleton.channels):
        rot = [k for k, c in enumerate(chans) if c.lower().endswith("rotation")]
        new = list(chans)
        for k, k_rev in zip(rot, rot[::-1]):
            new[k] = chans[k_rev]
            vals[:, col + k] = values[:, col + k_rev]
        sk.channels[j] = tuple(new)
        col += len(chans)
    return forward_kinematics(sk, vals)


def check_file(path: Path, reference) -> dict:
    t0 = time.perf_counter()
    m = load_bvh(path)
    seconds = time.perf_counter() - t0
    ref = reference[path.stem.replace("_scaled", "")]
    keep = ~m.end_site
    err = float(np.abs(resample(m.joints, m.fps, 30.0) - ref).max())
    skeleton, values, _ = read_bvh(path)
    wrong = float(np.abs(reversed_order_fk(skeleton, values)[::4][:, keep] - ref).max())
    parents = m.parents
    bones = np.linalg.norm(m.positions[:, 1:] - m.positions[:, parents[1:]], axis=-1)  # (T, J-1)
    foot = m.positions[:, [m.names.index(n) for n in FOOT], 1].min(axis=1)              # (T,)
    return {"file": path.name, "frames": len(m.positions), "load_s": seconds, "max_err_m": err,
            "reversed_order_err_m": wrong, "bone_std_m": float(bones.std(axis=0).max()),
            "foot_min_heights": foot}


def render_speed(files: list[Path], n_frames: int = 5000) -> dict:
    xy, total = [], 0
    for path in files:
        m = load_bvh(path)
        xy.append(project(resample(m.positions, m.fps, 30.0), 0.0))
        total += len(xy[-1])
        if total >= n_frames:
            break
    xy = np.concatenate(xy)[:n_frames]                                 # (T, J, 2)
    body = default_body(m.names, m.parents, xy.shape[1])
    t0 = time.perf_counter()
    seg, radii, _ = plan_silhouettes(xy, body, 64, 64, center="follow")
    frames = render_capsules(seg, radii, 64, 64)
    seconds = time.perf_counter() - t0
    return {"frames": len(frames), "capsules": int(len(body.segments)), "seconds": seconds,
            "fps": len(frames) / seconds, "dancer_fraction": float((frames > 0).mean())}


def salsa_gif(a: Path, b: Path, out: Path, seconds: float = 6.0, size: int = 64, zoom: int = 2):
    """The two partners of one take side by side, front view, camera following each dancer."""
    panels = []
    for path in (a, b):
        m = load_bvh(path)
        xy = project(resample(m.positions, m.fps, 30.0), 0.0)[: int(30 * seconds)]
        seg, radii, _ = plan_silhouettes(xy, default_body(m.names, m.parents, xy.shape[1]), size, size,
                                         center="follow")
        panels.append(render_capsules(seg, radii, size, size))
    frames = np.concatenate([panels[0], np.full((len(panels[0]), size, 2), 128, np.uint8), panels[1]], axis=2)
    frames = frames.repeat(zoom, axis=1).repeat(zoom, axis=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(out, save_all=True, append_images=images[1:], duration=33, loop=0, optimize=True)
    return {"gif": str(out), "frames": len(images), "bytes": out.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--gif", type=Path, default=ROOT / "docs" / "img" / "salsa_silhouettes.gif")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    salsa = args.data / "cmu_salsa"
    files = sorted((salsa / "bvh").glob("*.bvh"))
    if not files:
        raise SystemExit(f"no BVH files under {salsa / 'bvh'}")
    reference = np.load(salsa / "reference_positions_30fps.npz")

    rows = [check_file(p, reference) for p in files]
    print("| file | frames (120 fps) | load + FK s | max err vs reference (m) | reversed-order err (m) "
          "| max bone-length std (m) | min foot height (m) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['frames']} | {r['load_s']:.2f} | {r['max_err_m']:.1e} | "
              f"{r['reversed_order_err_m']:.3f} | {r['bone_std_m']:.1e} | {r['foot_min_heights'].min():.3f} |")
    feet = np.concatenate([r["foot_min_heights"] for r in rows])
    summary = {
        "files": len(rows), "frames": int(sum(r["frames"] for r in rows)),
        "load_s_total": sum(r["load_s"] for r in rows),
        "max_err_m": max(r["max_err_m"] for r in rows),
        "min_reversed_order_err_m": min(r["reversed_order_err_m"] for r in rows),
        "bone_std_m": max(r["bone_std_m"] for r in rows),
        "foot_min_height_percentiles_m": {str(q): float(np.percentile(feet, q)) for q in (0, 1, 5, 50, 95, 99)},
        "frames_with_a_foot_below_5cm": float((feet < 0.05).mean()),
        "frames_with_a_foot_below_0": float((feet < 0).mean()),
    }
    summary["render"] = render_speed(files)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        prepare_mocap(files, Path(tmp) / "salsa", size=(64, 64), fps=30.0)
        summary["prepare_all_18_s"] = time.perf_counter() - t0
    summary["gif"] = salsa_gif(salsa / "bvh" / "60_01_scaled.bvh", salsa / "bvh" / "61_01_scaled.bvh", args.gif)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""Where does a long rollout's distance to the training frames come from? For each run, R rollouts
of up to 2,048 frames from held-out seeds; for the 64-frame windows ending at each frame of
--ends, the frame Fréchet distance to the training frames split into its mean term |mu - mu_t|^2
and the rest (the covariance term), the implausible share, the dancer's area against the training
frames', and how the frames spread over the training take: each frame's nearest training frame
(pixel Hamming distance), its 40-frame segment, and the share of frames in the 10 % most visited
segments (real training windows, drawn uniformly: about 0.1) and the KL divergence of those
visits from uniform. A rollout whose distance grows through the mean term while its visits
concentrate is settling on a part of the take, not leaving it.

    python benchmarks/drift_curve.py DATA RUN [RUN ...] [--ends 64,256,1024,2048] [--set stay=0.5]

One JSON object per run on stdout (and appended to --out). docs/code-prior.md quotes it.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from discodance.data.dataset import load_dataset  # noqa: E402
from discodance.evaluation import stats  # noqa: E402
from discodance.evaluation.evalnet import load_or_train  # noqa: E402
from discodance.evaluation.full import FullEvalConfig, implausible_flags, timed_rollouts  # noqa: E402
from long_drift import drift_arguments, open_with_settings, training_windows  # noqa: E402
from prior_memory import SEGMENT, WINDOW, nearest  # noqa: E402


class Reference:
    """The training frames: evaluation-network statistics and pixels for nearest-frame look-ups."""

    def __init__(self, ds, net):
        train = ds.indices("train")
        self.mu, self.cov = stats.gaussian_stats(net.embed(ds.frames[train])["features"])
        self.bits = torch.as_tensor(ds.frames[train] > 127).reshape(len(train), -1).float()
        self.area = float((ds.frames[train] > 127).mean())
        self.segments = math.ceil(len(train) / SEGMENT)

    def window_row(self, frames: np.ndarray, net, ref: dict) -> dict:
        """Figures of frames (R, WINDOW, H, W)."""
        flat = frames.reshape(-1, *frames.shape[2:])
        emb = net.embed(flat)
        mu, cov = stats.gaussian_stats(emb["features"])
        mean_term = float(((mu - self.mu) ** 2).sum())
        fd = stats.frechet_from_stats(mu, cov, self.mu, self.cov)
        visits = np.bincount(nearest(flat, self.bits)[0] // SEGMENT, minlength=self.segments) / len(flat)
        seen = visits[visits > 0]
        return {"fd_train": round(fd, 4), "fd_mean_term": round(mean_term, 4),
                "implausible": round(float(implausible_flags(emb, ref).mean()), 4),
                "area": round(float((frames > 127).mean()) / self.area, 3),
                "top10pct_segments": round(float(np.sort(visits)[::-1][:max(1, self.segments // 10)].sum()), 3),
                "visits_kl": round(float((seen * np.log(seen * self.segments)).sum()), 3)}


def main() -> None:
    ap = drift_arguments(__doc__, "stay=0.5")
    ap.add_argument("--ends", default="64,256,1024,2048")
    args = ap.parse_args()
    ends = sorted(int(e) for e in args.ends.split(","))
    if ends[0] < WINDOW:
        raise SystemExit(f"--ends: every end must be >= {WINDOW}")
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    cfg = FullEvalConfig(rollouts=args.rollouts, horizons=(256, 1024)).validate()
    net, ref = load_or_train(ds, cfg.evalnet, device="cpu")
    reference = Reference(ds, net)
    idx = training_windows(ds, args.rollouts, np.random.default_rng(0))
    rows = [{"data": str(ds.path), "real_train_windows": reference.window_row(ds.frames[idx], net, ref)}]
    for run in args.runs:
        model, changed = open_with_settings(run, ds, args.set)
        frames, _ = timed_rollouts(model, ds, FullEvalConfig(rollouts=args.rollouts, horizons=(ends[-1],)).validate(), "cpu")
        rows.append({"run": run, **({"set": changed} if changed else {}),
                     **{str(e): reference.window_row(frames[:, e - WINDOW + 1:e + 1], net, ref) for e in ends}})
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()

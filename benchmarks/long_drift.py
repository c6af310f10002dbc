"""Do long rollouts drift? For each run, R rollouts of 1,024 frames from held-out seed frames; the
64-frame windows ending at frame 256 and at frame 1,024 are compared with the training frames and
the test block (frame Fréchet distance in the evaluation network's features, as in `evaluate
--full`), with their implausible share and flicker. The same distance of R random 64-frame real
training windows (8 draws) says how close to the training frames real motion is; `drift_fd_train`
is the change from 256 to 1,024 frames with a 90 % interval from resampling whole rollouts, the
noise that decides whether a run drifts (the same rollouts are seen at both horizons); likewise
`drift_fd_test` and `drift_implausible`.

    python benchmarks/long_drift.py DATA RUN [RUN ...] --rollouts 128 [--set top_p=0.9] [--out results.jsonl]

Each line printed (and appended to --out) is one JSON object. docs/compare/README.md quotes it.
"""
from __future__ import annotations

import argparse
from functools import partial
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from discodance.data.dataset import load_dataset  # noqa: E402
from discodance.evaluation import stats  # noqa: E402
from discodance.evaluation.evalnet import load_or_train  # noqa: E402
from discodance.evaluation.full import FullEvalConfig, implausible_flags, timed_rollouts  # noqa: E402
from discodance.config import parse_overrides  # noqa: E402
from discodance.errors import DiscodanceError  # noqa: E402
from discodance.runs import open_run, sampling_settings  # noqa: E402

WINDOW = 64
HORIZONS = (256, 1024)


def training_windows(ds, windows: int, rng: np.random.Generator, length: int = WINDOW) -> np.ndarray:
    """Frame indices (windows, length) of random real training windows (never crossing clips)."""
    return rng.choice(ds.window_starts("train", length), windows)[:, None] + np.arange(length)


def drift_arguments(doc: str, set_example: str) -> argparse.ArgumentParser:
    """The command line the long-rollout benchmarks share: DATA RUN [RUN ...] --rollouts --out --set."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--rollouts", type=int, default=128)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a rollout setting of every run's model config (e.g. {set_example})")
    return ap


def real_window_fds(ds, net, reference: np.ndarray, windows: int, length: int = WINDOW, draws: int = 8,
                    seed: int = 0) -> np.ndarray:
    """Frame FD to `reference` features of `windows` random real training windows of `length`
    frames, sampled the way rollouts are measured; one value per draw."""
    rng = np.random.default_rng(seed)
    fds = []
    for _ in range(draws):
        idx = training_windows(ds, windows, rng, length).ravel()
        fds.append(stats.frechet_distance(net.embed(ds.frames[idx])["features"], reference))
    return np.array(fds)


def real_noise(ds, net, train_features: np.ndarray, rollouts: int, draws: int = 8) -> list[float]:
    """Mean and sd of the distance of `rollouts` random real training windows to the training frames."""
    fds = real_window_fds(ds, net, train_features, rollouts, draws=draws)
    return [round(float(np.mean(fds)), 4), round(float(np.std(fds)), 4)]


def open_with_settings(run: str, ds, sets: list[str]):
    """(the run's model with --set sampling settings, validated as `discodance evaluate --set` does,
    {setting: typed value} of those changed)."""
    try:
        pairs = parse_overrides(sets)
        model, _, _ = open_run(run, ds.path, "cpu", pairs)
    except DiscodanceError as e:
        raise SystemExit(f"{run}: {e}") from None
    return model, sampling_settings(model, pairs).get("sampling_settings", {})


def drift(run: str, ds, net, ref: dict, cfg: FullEvalConfig, train_f: np.ndarray, test_f: np.ndarray,
          sets: list[str]) -> dict:
    model, changed = open_with_settings(run, ds, sets)
    frames, _ = timed_rollouts(model, ds, cfg, "cpu")                       # (R, 1 + 1024, H, W) uint8
    row, feats, flags = {"run": run, **({"set": changed} if changed else {})}, {}, {}
    for h in HORIZONS:
        window = frames[:, h - WINDOW + 1:h + 1]
        emb = net.embed(window.reshape(-1, *frames.shape[2:]))
        feats[h] = emb["features"].reshape(len(frames), WINDOW, -1)         # (R, WINDOW, D)
        flags[h] = implausible_flags(emb, ref).reshape(len(frames), WINDOW)  # (R, WINDOW)
        row[str(h)] = {"fd_train": round(float(stats.frechet_distance(emb["features"], train_f)), 4),
                       "fd_test": round(float(stats.frechet_distance(emb["features"], test_f)), 4),
                       "implausible": round(float(flags[h].mean()), 4),
                       "flicker": round(float(stats.flicker(window)), 5)}
    early, late = HORIZONS
    for name, ref_f in (("fd_train", train_f), ("fd_test", test_f)):
        row[f"drift_{name}"] = paired_bootstrap(feats[early], feats[late], partial(fd_of_windows, ref_f))
    row["drift_implausible"] = paired_bootstrap(flags[early], flags[late], np.mean)
    return row


def fd_of_windows(reference: np.ndarray, windows: np.ndarray) -> float:
    return stats.frechet_distance(windows.reshape(-1, windows.shape[-1]), reference)


def paired_bootstrap(early: np.ndarray, late: np.ndarray, statistic, draws: int = 200) -> dict:
    """The change statistic(late) - statistic(early) over rollouts (R, ...), with a 90 % interval
    from resampling whole rollouts, the same ones at both horizons (frames of one rollout are not
    independent). drift = the interval lies above 0; settled = it excludes 0."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(draws):
        pick = rng.integers(0, len(early), len(early))
        diffs.append(statistic(late[pick]) - statistic(early[pick]))
    lo, hi = np.percentile(diffs, [5, 95])
    return {"change": round(float(np.mean(diffs)), 4), "interval90": [round(float(lo), 4), round(float(hi), 4)],
            "drift": bool(lo > 0), "settled": bool(lo > 0 or hi < 0)}


def main() -> None:
    args = drift_arguments(__doc__, "top_p=0.9").parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    cfg = FullEvalConfig(rollouts=args.rollouts, horizons=HORIZONS).validate()
    net, ref = load_or_train(ds, cfg.evalnet, device="cpu")
    train_f = net.embed(ds.frames[ds.indices("train")])["features"]
    test_f = net.embed(ds.frames[ds.indices("test")])["features"]
    rows = [{"data": str(ds.path), "rollouts": args.rollouts, "window": WINDOW,
             "real_train_windows_fd_train": real_noise(ds, net, train_f, args.rollouts),
             "floor_test_vs_train": round(float(stats.frechet_distance(test_f, train_f)), 4)}]
    print(json.dumps(rows[0]), flush=True)
    for run in args.runs:
        rows.append(drift(run, ds, net, ref, cfg, train_f, test_f, args.set))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()

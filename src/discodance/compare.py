"""`discodance compare`: train several models under one wall-clock budget and the same seeds,
evaluate them all with evaluation.full.evaluate_full, and write a report folder (evaluation/report.py).

Fairness rules:
- every (model, seed) run gets the same `minutes` of training wall time (and, if given, the same
  step cap), the same data, the same training-loop settings and the same seed;
- a two-stage model (code-prior on a gumbel-vae; vae-lstm-mdn stage=lstm, DanceNet's LSTM-MDN on
  its stage=vae VAE) trains its own first stage, and its budget counts both stages -- the first
  gets (1 - prior_share) of the minutes, the second the rest. A first stage of another registered
  model (code-prior's gumbel-vae) takes that model's --set values, so it is the same network as
  that model's own runs;
- each run trains in its own process (the `discodance train` command), so one model's memory and
  threads never affect another's, and the operating system reports that process's peak memory;
- every model rolls out from the same held-out seed frames (generate.seed_starts aligns seeds
  across models with different seed lengths).

The report is built in <out>.partial and renamed to <out> when complete. A finished run inside
<out>.partial (its train.json and evaluation.json written) is kept when the same compare is started
again, so an interrupted compare resumes instead of retraining.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import read_log
from .config import to_dict, write_json_atomic
from .data.dataset import load_dataset
from .errors import DiscodanceError, require
from .folders import FolderLock, check_target, swap_in
from .evaluation.full import FullEvalConfig

GIF_ROLLOUT = dict(num=8, steps=48)
# --size: every model's settings under the user's --set values. "demo" puts each at the demo's conv
# size (16-128 channels) and 1.6-2.5 M trained parameters, which a CPU trains in minutes;
# "default" keeps each model's own defaults (6-16 M parameters, sized like the papers').
_DEMO_CONV = {"channels": "16,32,64,128", "hidden": "256"}
SIZES = {
    "default": {},
    "demo": {"gumbel-vae": _DEMO_CONV, "code-prior": {},
             "vae-lstm-mdn": {**_DEMO_CONV, "latent": "32", "lstm_layers": "2", "lstm_hidden": "256", "mixtures": "8"},
             "gan": {**_DEMO_CONV, "d_channels": "16,32,64,128", "code": "128"},
             "vrnn": {**_DEMO_CONV, "features": "128"},
             "lstm-ae": {**_DEMO_CONV, "features": "128", "lstm_hidden": "256", "lstm_layers": "1"}},
}
STRIP_ROWS = 4  # sequences shown in each strip of frames 0, 1, 2, 16


@dataclass
class CompareConfig:
    """A compare: which models, on what data, for how long, with which seeds."""
    data: str
    models: tuple[str, ...]
    out: str
    minutes: float = 5.0
    seeds: int = 1                                   # seeds 0 .. seeds-1
    steps: int | None = None                         # optional step cap on top of the minutes
    model_sets: dict[str, dict[str, str]] = field(default_factory=dict)   # model -> {key: value}
    train_sets: dict[str, str] = field(default_factory=dict)              # training-loop settings of every run
    model_train_sets: dict[str, dict[str, str]] = field(default_factory=dict)  # model -> its own loop settings
    prior_share: float = 0.25                        # two-stage models: share of the budget for the second stage
    size: str = "demo"                               # a SIZES preset under model_sets
    device: str = "auto"
    overwrite: bool = False
    evaluation: FullEvalConfig = field(default_factory=FullEvalConfig)

    def validate(self) -> "CompareConfig":
        from .models import REGISTRY
        require(self.models, "--models must name at least one model")
        unknown = [m for m in self.models if m not in REGISTRY]
        require(not unknown, f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
        require(len(set(self.models)) == len(self.models), "--models lists a model twice")
        require(self.minutes > 0, f"--minutes must be > 0, got {self.minutes}")
        require(self.seeds >= 1, f"--seeds must be >= 1, got {self.seeds}")
        require(0 < self.prior_share < 1, f"prior_share must be in (0, 1), got {self.prior_share}")
        require(self.size in SIZES, f"--size must be one of {', '.join(SIZES)}, got {self.size!r}")
        self._apply_size()
        allowed = set(self.models) | {first[0] for first in map(self.first_stage, self.models) if first}
        stray = [m for m in self.model_sets if m not in allowed]
        require(not stray, f"--set names model(s) not in --models: {', '.join(stray)}")
        check_target(self.out, "report", inputs=[self.data], overwrite=self.overwrite)
        self.evaluation.validate()
        self._check_settings()
        return self

    def _apply_size(self) -> None:
        """The size preset's settings of every model and first stage, under the user's own."""
        from .models import REGISTRY
        preset = SIZES[self.size]
        sets = {m: {**preset.get(m, {}), **self.model_sets.get(m, {})} for m in self.models}
        for m in self.models:
            first = REGISTRY[m].first_stage(sets[m])
            if first and first[0] != m and first[0] in preset:
                sets[first[0]] = {**preset[first[0]], **self.model_sets.get(first[0], {})}
        self.model_sets = {**self.model_sets, **{m: s for m, s in sets.items() if s}}

    def first_stage(self, model: str) -> tuple[str, dict[str, str]] | None:
        """The model name and --set values of `model`'s first stage run, if it has one."""
        from .models import REGISTRY
        first = REGISTRY[model].first_stage(self.model_sets.get(model, {}))
        if first is None:
            return None
        name, sets = first
        return name, {**(self.model_sets.get(name, {}) if name != model else {}), **sets}

    def loop_settings(self, model: str) -> dict[str, str]:
        """The training-loop settings of `model`'s runs: every run's, then its own on top."""
        return {**self.train_sets, **self.model_train_sets.get(model, {})}

    def _check_settings(self) -> None:
        """Every --set and --train-set value, and every model's size, before any work starts."""
        from .config import TrainConfig, from_dict
        from .limits import check_model_size
        from .models import model_config
        stages = {m: self.first_stage(m) for m in self.models}
        models = set(self.models) | {first[0] for first in stages.values() if first}
        stray = [m for m in self.model_train_sets if m not in models]
        require(not stray, f"--train-set names model(s) not in --models: {', '.join(stray)}")
        frame_size = load_dataset(self.data).frame_size
        for model in sorted(models):
            from_dict(TrainConfig, {"steps": self.steps or 1, "minutes": self.minutes,
                                    **self.loop_settings(model)}).validate()
        for model, first in stages.items():
            sets = dict(self.model_sets.get(model, {}))
            if first:  # the first stage's run does not exist yet: check against its settings
                check_model_size(first[0], model_config(first[0], frame_size, first[1]))
                sets["base_config"] = to_dict(model_config(first[0], frame_size, first[1]))
            check_model_size(model, model_config(model, frame_size, sets))


# ----------------------------------------------------------------------------- training
def _set_args(pairs: dict[str, str], flag: str) -> list[str]:
    return [f"{flag}={k}={v}" for k, v in pairs.items()]


def train_run(cfg: CompareConfig, model: str, seed: int, out: Path, minutes: float, sets: dict, logs: Path) -> dict:
    """Train one run in a child process; return its wall time and peak resident memory (as the child
    measured it: the rusage os.wait4 reports would include the parent's memory, which a child
    inherits across fork and execve on Linux)."""
    if (out / "train.json").is_file():
        return json.loads((out / "train.json").read_text())
    cmd = [sys.executable, "-m", "discodance.cli", "train", "--data", str(cfg.data), "--model", model,
           "--out", str(out), "--minutes", f"{minutes:.6g}", "--seed", str(seed), "--device", cfg.device,
           "--no-progress", "--overwrite", *_set_args(sets, "--set"),
           *_set_args(cfg.loop_settings(model), "--train-set")]
    if cfg.steps:
        cmd += ["--steps", str(cfg.steps)]
    log_path = logs / f"{out.name}.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).wait()
    if code != 0:
        lines = log_path.read_text().strip().splitlines()
        raise DiscodanceError(f"training {model} (seed {seed}) failed: {lines[-1] if lines else f'exit code {code}'}"
                              f" (log: {log_path})")
    peaks = [r["max_rss_mb"] for r in read_log(out) if r.get("max_rss_mb") is not None]
    info = {"wall_seconds": time.perf_counter() - t0, "peak_rss_mb": max(peaks) if peaks else None,
            "minutes": minutes, "command": cmd[1:]}
    write_json_atomic(out / "train.json", info)
    return info


def train_model(cfg: CompareConfig, model: str, seed: int, runs: Path, logs: Path) -> tuple[Path, dict]:
    """Train `model` with `seed`; a two-stage model trains its first stage first, inside its budget."""
    run, sets, first = runs / f"{model}-s{seed}", cfg.model_sets.get(model, {}), cfg.first_stage(model)
    if first is None:
        return run, train_run(cfg, model, seed, run, cfg.minutes, sets, logs)
    base = runs / f"{model}-s{seed}.base"
    b = train_run(cfg, first[0], seed, base, cfg.minutes * (1 - cfg.prior_share), first[1], logs)
    p = train_run(cfg, model, seed, run, cfg.minutes * cfg.prior_share, {**sets, "base_run": str(base.resolve())}, logs)
    return run, {"wall_seconds": b["wall_seconds"] + p["wall_seconds"],
                 "peak_rss_mb": max(filter(None, [b["peak_rss_mb"], p["peak_rss_mb"]]), default=None),
                 "stages": {"base": b, "prior": p}}


# ----------------------------------------------------------------------------- evaluation
def evaluate_run(cfg: CompareConfig, run: Path, info: dict, dataset, device, log) -> dict:
    from .evaluation.full import evaluate_full
    from .runs import open_run
    cached = run / "evaluation.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    model, ckpt, _ = open_run(run, dataset.path, device)
    result = evaluate_full(model, ckpt, dataset, cfg.evaluation, device, run_dir=run, log=log)
    if info.get("peak_rss_mb") is not None:
        result["cost"]["train_peak_rss_mb"] = info["peak_rss_mb"]
    result = json.loads(json.dumps(result, default=float))
    write_json_atomic(cached, result)
    return result


def rollout_media(cfg: CompareConfig, runs: dict[str, Path], dataset, device, out: Path) -> dict:
    """GIF and strip of every model's seed-0 run from the same held-out seed frames, plus the real dance."""
    from .generate import generate, tile, to_uint8, write_gif, write_strip
    from .runs import open_run
    (out / "gifs").mkdir(exist_ok=True)
    (out / "strips").mkdir(exist_ok=True)
    media, seeds = {"gifs": [], "strips": []}, None
    for model, run in runs.items():
        net, _, _ = open_run(run, dataset.path, device)
        frames, seed_index = generate(net, dataset, seed=0, device=device, temperature=cfg.evaluation.temperature,
                                      feedback=cfg.evaluation.feedback, **GIF_ROLLOUT)
        seeds = seed_index if seeds is None else seeds
        write_gif(out / "gifs" / f"{model}.gif", tile(to_uint8(frames)), dataset.fps)
        write_strip(out / "strips" / f"{model}.png", frames[:STRIP_ROWS])
        media["gifs"].append((model, f"gifs/{model}.gif"))
        media["strips"].append((model, f"strips/{model}.png"))
    n = GIF_ROLLOUT["steps"] + 1
    inside = [s for s in seeds if any(b <= s and s + n <= e for b, e in dataset.blocks("test"))]
    if len(inside) == len(seeds):  # short test blocks (e.g. per-take mocap) have no real continuation to show
        real = np.stack([np.asarray(dataset.frames[s:s + n]) for s in seeds])
        write_gif(out / "gifs" / "real.gif", tile(real), dataset.fps)
        write_strip(out / "strips" / "real.png", real[:STRIP_ROWS])
        media["gifs"].insert(0, ("real (held-out continuation)", "gifs/real.gif"))
        media["strips"].insert(0, ("real", "strips/real.png"))
    return media


# ----------------------------------------------------------------------------- the whole compare
def run_compare(cfg: CompareConfig, log=None) -> dict:
    """Train, evaluate and report; returns the summary (also written as results.json)."""
    from .evaluation.evalnet import load_or_train
    from .runs import resolve_device
    cfg.validate()
    log = log or (lambda msg: None)
    dataset = load_dataset(cfg.data)
    device = resolve_device(cfg.device)
    final = Path(cfg.out)
    work = final.with_name(f".{final.name}.partial")
    with FolderLock(work):
        _claim(work, cfg)
        net, ref = load_or_train(dataset, cfg.evaluation.evalnet, device=device, log=log)
        return _train_evaluate_report(cfg, dataset, device, work, final, ref, log)


def _train_evaluate_report(cfg: CompareConfig, dataset, device, work: Path, final: Path, ref: dict, log) -> dict:
    from .evaluation.report import flatten
    rows, results, seed0 = [], {m: [] for m in cfg.models}, {}
    for seed in range(cfg.seeds):
        for model in cfg.models:
            log(f"[{model} seed {seed}] training ({cfg.minutes:g} min budget)")
            run, info = train_model(cfg, model, seed, work / "runs", work / "logs")
            log(f"[{model} seed {seed}] evaluating")
            result = evaluate_run(cfg, run, info, dataset, device, log)
            results[model].append(result)
            rows.append({"model": model, "seed": seed, "run": str(run.relative_to(work)), **flatten(result)})
            seed0.setdefault(model, run)
    log("writing the report")
    summary = write_report(cfg, work, rows, results, seed0, dataset, device, ref)
    swap_in(work, final)
    return {"report": str(final / "index.html"), "models": list(cfg.models), "seeds": cfg.seeds,
            "summary": {m: {k: v[0] for k, v in s.items()} for m, s in summary.items()}}


def _claim(work: Path, cfg: CompareConfig) -> None:
    """Create <out>.partial, or reuse one left by an interrupted compare with the same settings
    (models and seeds may differ: each (model, seed) run is independent)."""
    from dataclasses import asdict
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("models", "seeds", "out", "overwrite")}
    settings["data"] = str(Path(cfg.data).resolve())
    settings = json.loads(json.dumps(settings, default=str))
    stamp = work / "compare.json"
    if stamp.is_file():
        require(json.loads(stamp.read_text()) == settings,
                f"{work} holds an unfinished compare with other settings: delete it, or rerun with the same settings")
    (work / "runs").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    write_json_atomic(stamp, settings)


def _reference(rows: list[dict]) -> dict:
    """Real-data values (the same for every run on one dataset): the mean over runs."""
    keys = {k for r in rows for k in r if k.startswith("real_") or k.endswith("_floor")}
    return {k: float(np.mean([r[k] for r in rows if isinstance(r.get(k), (int, float))])) for k in keys
            if any(isinstance(r.get(k), (int, float)) for r in rows)}


def write_report(cfg: CompareConfig, work: Path, rows: list[dict], results: dict, seed0: dict,
                 dataset, device, ref: dict) -> dict:
    from .evaluation import report
    summary = {m: report.aggregate([r for r in rows if r["model"] == m]) for m in cfg.models}
    summary = {m: {k: v for k, v in s.items() if k != "seed"} for m, s in summary.items()}
    reference = _reference(rows)
    media = rollout_media(cfg, seed0, dataset, device, work)
    curves = {m: [read_log(work / "runs" / f"{m}-s{s}") for s in range(cfg.seeds)] for m in cfg.models}
    media["plots"] = [("training curves", report.plot_training(curves, work / "training.png").name),
                      ("metrics against rollout horizon",
                       report.plot_horizons(summary, list(cfg.evaluation.horizons), reference, work / "horizons.png").name)]
    report.write_csv(work / "results.csv", rows, ["model", "seed", "run"])
    report.write_csv(work / "summary.csv", [{"model": m, **{f"{k}_mean": v[0] for k, v in s.items()},
                                             **{f"{k}_sd": v[1] for k, v in s.items()}} for m, s in summary.items()],
                     ["model"])
    quality = time_to_quality(cfg, work / "runs")
    settings = {"data": str(Path(cfg.data).resolve()), "models": list(cfg.models), "minutes": cfg.minutes,
                "seeds": cfg.seeds, "steps": cfg.steps, "model_sets": cfg.model_sets, "train_sets": cfg.train_sets,
                "model_train_sets": cfg.model_train_sets,
                "prior_share": cfg.prior_share, "evaluation": results[cfg.models[0]][0]["settings"]}
    report.write_json(work / "results.json", {"settings": settings, "reference": reference,
                                              "evalnet": {k: v for k, v in ref.items() if k not in ("reference_features", "joints")},
                                              "summary": {m: {k: {"mean": v[0], "sd": v[1], "n": v[2]} for k, v in s.items()}
                                                          for m, s in summary.items()},
                                              "runs": rows, "results": results, "time_to_quality": quality})
    report.write_html(work / "index.html", f"discodance compare: {dataset.path.name}", summary, reference, media,
                      _notes(cfg, dataset, ref) + _quality_notes(quality))
    return summary


def time_to_quality(cfg: CompareConfig, runs: Path) -> dict:
    """CPU seconds each run needed to first reach a next-frame validation IoU that every run reaches
    (the lowest of the runs' best IoUs), a two-stage model's first stage counted in full; and the
    report's claim as one ratio: gumbel-vae's time over vae-lstm-mdn's, when both are compared."""
    curves = {}
    for model in cfg.models:
        for seed in range(cfg.seeds):
            run = runs / f"{model}-s{seed}"
            base = [r["cpu_seconds"] for r in read_log(run.with_name(run.name + ".base")) if "cpu_seconds" in r]
            curves[(model, seed)] = [(r["cpu_seconds"] + (base[-1] if base else 0.0), r["val_iou"])
                                     for r in read_log(run) if r.get("val_iou") is not None and "cpu_seconds" in r]
    unmeasured = sorted({m for (m, _), points in curves.items() if not points})   # e.g. no IoU on short val blocks
    curves = {key: points for key, points in curves.items() if key[0] not in unmeasured}
    if not curves:
        return {}
    threshold, seconds = _first_reach(curves)
    out = {"quality": "val_iou", "threshold": threshold, "unmeasured": unmeasured, "cpu_seconds": {
        m: [seconds[(m, s)] for s in range(cfg.seeds)] for m in cfg.models if m not in unmeasured}}
    pair = ("gumbel-vae", "vae-lstm-mdn")
    if set(pair) <= {m for m, _ in curves}:   # the claim at the quality both of its models reach (others may reach less)
        pair_threshold, pair_seconds = _first_reach({k: v for k, v in curves.items() if k[0] in pair})
        mean = lambda m: float(np.mean([t for (model, _), t in pair_seconds.items() if model == m]))
        out.update({"ratio_threshold": pair_threshold, "ratio_cpu_seconds": {m: mean(m) for m in pair},
                    "ratio_gumbel_vae_to_vae_lstm_mdn": mean(pair[0]) / mean(pair[1])})
    return out


def _first_reach(curves: dict) -> tuple[float, dict]:
    """The lowest of the curves' best IoUs, and the CPU seconds at which each curve first reaches it."""
    threshold = min(max(q for _, q in points) for points in curves.values())
    return threshold, {key: next(t for t, q in points if q >= threshold) for key, points in curves.items()}


def _quality_notes(quality: dict) -> list[str]:
    if not quality:
        return []
    times = ", ".join(f"{m} {np.mean(t) / 60:.1f}" for m, t in quality["cpu_seconds"].items())
    note = (f"Time to quality: CPU minutes each model needed to first reach a validation next-frame IoU of "
            f"{quality['threshold']:.3f} (the lowest of the runs' best; both stages counted): {times}.")
    if quality.get("unmeasured"):
        note += f" No validation IoU was logged for {', '.join(quality['unmeasured'])}."
    if "ratio_gumbel_vae_to_vae_lstm_mdn" in quality:
        note += (f" The report's cost claim, at the IoU both of its models reach ({quality['ratio_threshold']:.3f}): "
                 f"gumbel-vae ÷ vae-lstm-mdn = {quality['ratio_gumbel_vae_to_vae_lstm_mdn']:.2f}.")
    return [note]


def _notes(cfg: CompareConfig, dataset, ref: dict) -> list[str]:
    probe = (f"pose probe test error {ref['probe_error_px']:.2f} px (mean per joint)" if "probe_error_px" in ref
             else "no poses: an autoencoder's features")
    budget = f"{cfg.minutes:g} min of training per run" + (f", at most {cfg.steps} steps" if cfg.steps else "")
    notes = [f"Data: {dataset.path} ({len(dataset.frames)} frames of {dataset.frame_size[0]}x{dataset.frame_size[1]}). "
             f"Models: {', '.join(cfg.models)}; {budget}; "
             + ("seed 0." if cfg.seeds == 1 else f"seeds 0..{cfg.seeds - 1}."),
             f"Evaluation network: {probe}; frame Fréchet floor (train vs test) {ref['fid_floor']:.3g}. "
             f"{cfg.evaluation.rollouts} rollouts of {max(cfg.evaluation.horizons)} frames from held-out seed frames; "
             "motion features on 16-frame segments. See docs/evaluation.md for every definition."]
    for model in cfg.models:
        first = cfg.first_stage(model)
        if first:
            stage = first[0] + "".join(f" {k}={v}" for k, v in first[1].items() if k == "stage")
            notes.append(f"{model}'s budget counts both stages: its own first stage ({stage}) trains for "
                         f"{1 - cfg.prior_share:.0%} of the minutes, the second for the remaining {cfg.prior_share:.0%}.")
    return notes

"""The `discodance` command line. The model registry drives the --model choices.

Every problem with the user's input is one line on stderr ("discodance: error: ...") and exit
code 2; --json prints exactly one JSON object on stdout and nothing else there.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from . import cli_args as args_
from .config import TrainConfig, from_dict, parse_overrides
from .errors import DiscodanceError, require
from .folders import check_target
from .model_names import MODELS

SAMPLING_SET_HELP = ("a sampling setting of the trained model, for this command only, e.g. blend=0 or stay=0.25 "
                     "(an unknown one is refused with the list; repeatable)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (and exit code 2), like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _emit(obj: dict, as_json: bool, human) -> None:
    if as_json:
        print(json.dumps(obj, default=str))
    else:
        human(obj)


def _print_mapping(obj: dict, indent: str = "") -> None:
    for key, value in obj.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_mapping(value, indent + "  ")
        elif isinstance(value, float):
            print(f"{indent}{key}: {value:.5g}")
        else:
            print(f"{indent}{key}: {value}")


# ----------------------------------------------------------------------------- commands
def cmd_synth(args) -> None:
    from .data.synthetic import write_synthetic
    check_target(args.out, "dataset", overwrite=args.overwrite)
    path = write_synthetic(args.out, args.frames, args.size[0], args.size[1], args.seed, args.fps, args.overwrite)
    print(f"wrote {args.frames} frames of the built-in dancer ({args.size[0]}x{args.size[1]}) to {path}")


def cmd_prepare(args) -> None:
    from .data.keypoints import KEYPOINT_EXTENSIONS
    from .data.mocap import BVH_EXTENSIONS, prepare_mocap
    sources = [Path(s) for s in args.sources]
    for s in sources:
        require(s.exists(), f"{s} does not exist")
    motion = [s.is_file() and s.suffix.lower() in BVH_EXTENSIONS + KEYPOINT_EXTENSIONS for s in sources]
    require(all(motion) or not any(motion),
            "mix of motion files and videos/image folders: prepare them as separate datasets")
    require(not any(motion) or args.pick is None, "--pick is for videos and image folders, not motion files")
    require(all(motion) or (args.up is None and args.skeleton is None),
            "--up and --skeleton are for motion files (bvh, npy, npz, json), not videos or image folders")
    check_target(args.out, "dataset", inputs=sources, overwrite=args.overwrite)
    size = tuple(args.size)
    if all(motion):
        skeleton = "none" if args.skeleton is not None and args.skeleton.strip().lower() == "none" else args.skeleton
        path = prepare_mocap(sources, args.out, size=size, fps=args.fps or 30.0, view=args.view,
                             overwrite=args.overwrite, center=args.center, scale=args.scale,
                             max_gap=args.max_gap, force=args.force, up=args.up, skeleton=skeleton)
    else:
        from .data.silhouette import prepare
        path = prepare(sources, args.out, method=args.method, masks=args.masks, size=size, fps=args.fps,
                       start=args.start, end=args.end, stride=args.stride, crop=not args.no_crop,
                       overwrite=args.overwrite, invert=args.invert, force=args.force, pick=args.pick)
    from .data.dataset import load_dataset
    info = load_dataset(path).describe()
    print(f"wrote {info['frames']} frames of {info['frame_size'][0]}x{info['frame_size'][1]} "
          f"in {info['clips']} clip(s) to {path}")


def _train_config(args) -> TrainConfig:
    steps = args.steps
    if steps is None and args.minutes is not None:
        steps = 10 ** 9  # a wall-clock budget alone: the clock decides when to stop
    cfg = {"steps": steps, "minutes": args.minutes, "seed": args.seed, "device": args.device}
    for key in ("batch_size", "lr"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    cfg.update(parse_overrides(args.train_set))
    return from_dict(TrainConfig, {k: v for k, v in cfg.items() if v is not None}).validate()


def cmd_train(args) -> None:
    from .stages import first_stage_of, train_two_stages
    from .train import train
    # --resume keeps the run's own settings; only an explicit --steps/--minutes changes its budget
    explicit_budget = args.steps is not None or args.minutes is not None
    cfg = _train_config(args) if not args.resume or explicit_budget else None
    sets = parse_overrides(args.set)
    if not args.resume and first_stage_of(args.model or "gumbel-vae", sets):
        ckpt = train_two_stages(args.data, args.out, args.model, sets, cfg, args.prior_share,
                                overwrite=args.overwrite, progress=not args.no_progress)
    else:
        ckpt = train(args.data, args.out, args.model, sets, cfg, resume=args.resume,
                     overwrite=args.overwrite, progress=not args.no_progress)
    print(f"checkpoint: {ckpt}\nmetrics:    {Path(args.out) / 'metrics.jsonl'}")


def cmd_generate(args) -> None:
    from .generate import generate_from_run
    from .runs import resolve_device
    result = generate_from_run(args.run, args.out, args.num, args.steps, args.temperature, args.seed,
                               args.feedback, args.mode, args.data, args.split, args.overwrite,
                               resolve_device(args.device), parse_overrides(args.set))
    _emit(result, args.json, lambda r: [print(f"{k}: {v}") for k, v in r["files"].items()])


def cmd_evaluate(args) -> None:
    from .evaluation.likelihood import evaluate_model
    from .runs import open_run, resolve_device, sampling_settings
    device = resolve_device(args.device)
    sets = parse_overrides(args.set)
    model, ckpt, dataset = open_run(args.run, args.data, device, sets)
    if args.full:
        from .evaluation.full import FullEvalConfig, evaluate_full
        require(args.split == "test", "--full evaluates on the test split only")
        cfg = FullEvalConfig(rollouts=args.rollouts, samples=args.samples, batch_size=args.batch_size, horizons=args.horizons,
                             max_windows=args.max_windows, seed=args.seed)
        run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
        result = evaluate_full(model, ckpt, dataset, cfg, device, run_dir=run_dir,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
    else:
        result = evaluate_model(model, dataset, args.split, args.samples, args.batch_size, args.seed,
                                args.max_windows, device)
        require(result["windows"] > 0, f"the {args.split} split of {dataset.path} has no run of "
                                       f"{model.window} consecutive frames to evaluate on")
    result.update({"run": str(args.run), "data": str(dataset.path), "step": ckpt["step"],
                   **sampling_settings(model, sets)})
    _emit(result, args.json, _print_mapping)


def cmd_compare(args) -> None:
    from .compare import CompareConfig, run_compare
    from .evaluation.full import FullEvalConfig
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    train_sets, model_train_sets = args_.split_train_sets(args.train_set)
    cfg = CompareConfig(data=args.data, models=models, out=args.out, minutes=args.minutes, seeds=args.seeds,
                        steps=args.steps, model_sets=args_.model_sets(args.set), train_sets=train_sets,
                        model_train_sets=model_train_sets, prior_share=args.prior_share, size=args.size,
                        device=args.device, overwrite=args.overwrite,
                        evaluation=FullEvalConfig(rollouts=args.rollouts, samples=args.samples, horizons=args.horizons))
    result = run_compare(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    _emit(result, args.json, lambda r: print(f"report: {r['report']}"))


def cmd_info(args) -> None:
    path = Path(args.path)
    require(path.exists(), f"{path} does not exist")
    if (path / "meta.json").exists():
        from .data.dataset import load_dataset
        info = load_dataset(path).describe()
    else:
        require(path.is_file() or (path / "checkpoint.pt").exists(),
                f"{path} is neither a dataset (no meta.json) nor a run (no checkpoint.pt)")
        from .checkpoint import load_checkpoint
        ckpt = load_checkpoint(path)
        c = ckpt["config"]
        info = {"kind": "run", "path": str(path), "model": c["model"], "step": ckpt["step"],
                "train_seconds": round(ckpt["elapsed"], 1), "frame_size": c["frame_size"], "data": c["data"],
                "parameters": sum(int(v.numel()) for v in ckpt["model"].values()),
                "model_config": c["model_config"], "train": c["train"]}
    _emit(info, args.json, _print_mapping)


def cmd_demo(args) -> None:
    from .demo import run_demo
    run_demo(args.out, minutes=args.minutes, frames=args.frames, seed=args.seed, overwrite=args.overwrite,
             device=args.device)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="discodance", description="Dance generation with discrete latent variables.")
    p.add_argument("--version", action="version", version=f"discodance {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="built-in dancer -> gumbel-vae + transformer prior -> evaluate -> dancing GIFs, in minutes on a CPU")
    d.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    d.add_argument("--minutes", type=args_.positive_float, default=5.0,
                   help="training budget in minutes, both models (default 5: at most 55%% for the VAE, 45%% for the prior)")
    d.add_argument("--frames", type=args_.positive_int, default=5000, help="frames of the built-in dancer (default 5000)")
    d.add_argument("--seed", type=args_.seed, default=0)
    d.add_argument("--device", default="auto")
    d.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("synth", help="write the built-in procedural dancer as a dataset")
    s.add_argument("--out", required=True, help="dataset folder to create")
    s.add_argument("--frames", type=args_.positive_int, default=5000)
    s.add_argument("--size", type=args_.positive_int, nargs=2, default=(64, 64), metavar=("H", "W"))
    s.add_argument("--seed", type=args_.seed, default=0)
    s.add_argument("--fps", type=args_.positive_float, default=24.0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_synth)

    r = sub.add_parser("prepare", help="videos, image folders or motion capture -> a silhouette dataset")
    r.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="video files (mp4, mkv, avi, mov, webm), folders of images, or motion files (bvh, npy, npz, json)")
    r.add_argument("--out", required=True, help="dataset folder to create")
    r.add_argument("--method", default="segment", choices=("threshold", "background", "segment"),
                   help="video silhouettes: threshold (dark dancer, bright backdrop), background (fixed camera), "
                        "segment (person segmentation network; pip install 'discodance[segment]')")
    r.add_argument("--pick", nargs="+", action=args_.PickAction, default=None, metavar=("RULE", "X,Y"),
                   help="segment: which person is the dancer: moving (default: the one whose body changes shape "
                        "most over the clip), largest, point X,Y (the person under this point) or box X,Y,W,H "
                        "(the person inside this box); points and boxes are in source pixels of the first frame")
    r.add_argument("--masks", action="store_true", help="the image folders already hold masks")
    r.add_argument("--invert", action="store_true", help="threshold: a bright dancer on a dark backdrop")
    r.add_argument("--size", type=args_.positive_int, nargs=2, default=(64, 64), metavar=("H", "W"))
    r.add_argument("--no-crop", action="store_true", help="keep the source resolution: no crop, no resize")
    r.add_argument("--fps", type=args_.positive_float, default=None,
                   help="videos/mocap: resample to this rate (mocap default 30); image folders: the rate they were shot at (default 24)")
    r.add_argument("--start", type=float, default=None, help="video: first second to use")
    r.add_argument("--end", type=float, default=None, help="video: last second to use")
    r.add_argument("--stride", type=args_.positive_int, default=1, help="video/images: keep every Nth frame")
    r.add_argument("--view", default="front", help="mocap: front, side, back or a yaw angle in degrees")
    r.add_argument("--center", default="follow", choices=("follow", "clip"),
                   help="mocap: camera follows the dancer (smoothed) or stays fixed for the clip")
    r.add_argument("--scale", type=args_.positive_float, default=1.0, help="mocap: multiply positions to get metres")
    r.add_argument("--max-gap", type=int, default=5, help="keypoints: longest gap (frames) to interpolate")
    r.add_argument("--up", type=args_.up_axis, default=None, metavar="AXIS",
                   help="mocap: the files' up axis, x, y or z, optionally signed (--up=-z) (default: y, or "
                        "detected when the keypoints name no skeleton)")
    r.add_argument("--skeleton", default=None, metavar="FILE|none",
                   help="keypoints: a JSON skeleton (joint_names + parents, or bones as index pairs; docs/mocap.md), "
                        "or none: no inferred skeleton, unnamed keypoints drawn as a chain")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--force", action="store_true",
                   help="keep the dataset even when the check after preparing says it looks broken")
    r.set_defaults(func=cmd_prepare)

    t = sub.add_parser("train", help="train a model on a dataset")
    t.add_argument("--data", required=True, help="dataset folder")
    t.add_argument("--model", default=None, choices=sorted(MODELS), help="default: gumbel-vae")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--steps", type=args_.positive_int, default=None,
                   help="optimizer steps (default 2000, or unlimited when only --minutes is given)")
    t.add_argument("--minutes", type=args_.positive_float, default=None, help="wall-clock budget")
    t.add_argument("--seed", type=args_.seed, default=0)
    t.add_argument("--batch-size", type=args_.positive_int, default=None)
    t.add_argument("--lr", type=args_.positive_float, default=None)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="model setting, e.g. --set latents=32 (repeatable)")
    t.add_argument("--train-set", action="append", metavar="KEY=VALUE", help="training-loop setting, e.g. eval_every=200")
    t.add_argument("--prior-share", type=args_.positive_float, default=0.5,
                   help="two-stage models without base_run (code-prior; vae-lstm-mdn stage=lstm; vrnn, lstm-ae "
                        "two_stage=true): the first stage trains into OUT.base on 1 - share of the budget, "
                        "the model on the rest")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="roll out dances from held-out seed frames of a trained run")
    g.add_argument("run", help="run folder or checkpoint file")
    g.add_argument("--out", required=True, help="folder for samples.gif, samples.mp4, strip.png, frames.npy")
    g.add_argument("--steps", type=args_.positive_int, default=32, help="frames to generate after the seed")
    g.add_argument("--num", type=args_.positive_int, default=8, help="sequences (seeds) to generate")
    g.add_argument("--temperature", type=args_.nonneg_float, default=1.0, help="code sampling temperature (0 = most likely code)")
    g.add_argument("--feedback", default="binary", choices=("binary", "sample", "probs"))
    g.add_argument("--mode", default="chain", choices=("chain", "prior"), help="chain from seeds, or i.i.d. prior samples")
    g.add_argument("--seed", type=args_.seed, default=0)
    g.add_argument("--data", default=None, help="dataset for seed frames (default: the one the run trained on)")
    g.add_argument("--split", default="test", choices=("train", "val", "test"))
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help=SAMPLING_SET_HELP)
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate", help="held-out negative ELBO, importance-weighted bound and IoU")
    e.add_argument("run", help="run folder or checkpoint file")
    e.add_argument("--data", default=None, help="dataset (default: the one the run trained on)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--samples", type=args_.positive_int, default=100, help="importance samples S (default 100)")
    e.add_argument("--batch-size", type=args_.positive_int, default=64)
    e.add_argument("--max-windows", type=args_.positive_int, default=None, help="evaluate on at most this many frames")
    e.add_argument("--seed", type=args_.seed, default=0)
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    e.add_argument("--full", action="store_true",
                   help="also roll out and measure frame/motion quality, rollout health and cost (docs/evaluation.md)")
    e.add_argument("--rollouts", type=args_.positive_int, default=32, help="--full: sequences rolled out (default 32)")
    e.add_argument("--horizons", type=args_.horizons, default=(16, 64, 256),
                   help="--full: rollout lengths measured, comma-separated (default 16,64,256)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help=SAMPLING_SET_HELP)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="train several models on one budget and seeds, evaluate them, write an HTML report")
    c.add_argument("--data", required=True, help="dataset folder")
    c.add_argument("--models", required=True, help=f"comma-separated, from: {', '.join(sorted(MODELS))}")
    c.add_argument("--minutes", type=args_.positive_float, required=True, help="training budget per run (two-stage models: both stages)")
    c.add_argument("--seeds", type=args_.positive_int, default=1, help="seeds 0..S-1 per model (default 1)")
    c.add_argument("--out", required=True, help="report folder to create")
    c.add_argument("--steps", type=args_.positive_int, default=None, help="also stop each run after this many steps")
    c.add_argument("--set", action="append", metavar="MODEL:KEY=VALUE", help="model setting, e.g. gan:noise=16 (repeatable)")
    c.add_argument("--train-set", action="append", metavar="[MODEL:]KEY=VALUE",
                   help="training-loop setting for every run, or with MODEL: for that model's runs (repeatable)")
    c.add_argument("--size", choices=("demo", "default"), default="demo",
                   help="model sizes under your --set values: demo = the demo's conv size for every model "
                        "(1.6-2.5 M parameters, minutes on a CPU; default), default = each model's own defaults")
    c.add_argument("--prior-share", type=args_.positive_float, default=0.25,
                   help="two-stage models (code-prior, vae-lstm-mdn stage=lstm): share of the budget for the "
                        "second stage; the first stage gets the rest")
    c.add_argument("--rollouts", type=args_.positive_int, default=32, help="sequences rolled out per run (default 32)")
    c.add_argument("--horizons", type=args_.horizons, default=(16, 64, 256),
                   help="rollout lengths measured, comma-separated (default 16,64,256)")
    c.add_argument("--samples", type=args_.positive_int, default=32,
                   help="importance samples of the likelihood (default 32; evaluate uses 100)")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    c.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_compare)

    i = sub.add_parser("info", help="describe a dataset folder, run folder or checkpoint")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version or a usage error (already printed)
        return int(e.code or 0)
    try:
        args.func(args)
        return 0
    except DiscodanceError as e:
        print(f"discodance: error: {e}", file=sys.stderr)
    except OSError as e:  # permissions, full disk, ...: name the file, skip the traceback
        print(f"discodance: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
    except KeyboardInterrupt:
        print("discodance: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

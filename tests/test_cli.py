"""The command line end to end on tiny data, and one-line errors for malformed input."""
import json
import subprocess
import sys

import numpy as np
import pytest

from discodance.cli import main

from conftest import TINY_MODEL, one_line_error

MODEL_SET = [f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY_MODEL.items()]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["synth", "--out", str(root / "data"), "--frames", "240", "--size", "32", "32", "--seed", "1"]) == 0
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--steps", "6",
                 "--batch-size", "8", "--no-progress", *MODEL_SET, "--train-set", "eval_every=3"]) == 0
    return root


def test_end_to_end(tiny_run, tmp_path, capsys):
    code, out, err = cli(capsys, "generate", tiny_run / "run", "--out", tmp_path / "gen", "--steps", "17",
                         "--num", "3", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["shape"] == [3, 18, 32, 32]
    for key in ("gif", "mp4", "strip", "frames"):
        assert (tmp_path / "gen").joinpath(result["files"][key].split("/")[-1]).stat().st_size > 0
    assert np.load(tmp_path / "gen" / "frames.npy").shape == (3, 18, 32, 32)
    code, out, err = cli(capsys, "generate", tiny_run / "run", "--out", tmp_path / "prior", "--steps", "3",
                         "--num", "2", "--mode", "prior", "--json")
    assert code == 0 and json.loads(out)["shape"] == [2, 4, 32, 32], err

    code, out, err = cli(capsys, "evaluate", tiny_run / "run", "--samples", "4", "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["split"] == "test" and ev["windows"] > 0 and ev["nelbo_bpp"] > 0 and ev["iwae"] <= ev["nelbo"] + 1

    for path, kind in ((tiny_run / "data", "dataset"), (tiny_run / "run", "run")):
        code, out, _ = cli(capsys, "info", path, "--json")
        assert code == 0 and json.loads(out)["kind"] == kind
    code, out, _ = cli(capsys, "info", tiny_run / "run")
    assert "gumbel-vae" in out


def test_resume_continues_with_the_runs_own_settings(tiny_run, tmp_path, capsys):
    import shutil
    from discodance.checkpoint import load_checkpoint
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    code, _, err = cli(capsys, "train", "--data", tiny_run / "data", "--out", run, "--resume", "--steps", "9",
                       "--no-progress")
    assert code == 0, err
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 9 and ckpt["config"]["train"]["batch_size"] == 8  # not the default 64


def test_every_subcommand_has_help(capsys):
    for command in ("demo", "synth", "prepare", "train", "generate", "evaluate", "compare", "info"):
        code, out, _ = cli(capsys, command, "--help")
        assert code == 0 and "usage: discodance " + command in out


BAD = [
    (["demo", "--minutes", "0"], "must be > 0"),
    (["synth", "--out", "{tmp}/s", "--size", "0", "64"], "must be >= 1"),
    (["synth", "--out", "{run}/data"], "already exists"),
    (["train", "--data", "{tmp}/missing", "--out", "{tmp}/r"], "does not exist"),
    (["train", "--data", "{run}/data", "--out", "{tmp}/r", "--set", "classes=1"], "classes (K) must be >= 2"),
    (["train", "--data", "{run}/data", "--out", "{tmp}/r", "--set", "tau0=0"], "temperatures must be > 0"),
    (["train", "--data", "{run}/data", "--out", "{tmp}/r", "--set", "colour=red"], "unknown GumbelVAEConfig"),
    (["train", "--data", "{run}/data", "--out", "{tmp}/r", "--steps", "0"], "must be >= 1"),
    (["train", "--data", "{run}/data", "--out", "{run}/run"], "already exists"),
    (["train", "--data", "{run}/data", "--out", "{tmp}/r", "--model", "nope"], "invalid choice"),
    (["train", "--data", "{run}/data", "--out", "{run}/run", "--resume", "--set", "latents=3"], "cannot change on --resume"),
    (["train", "--data", "{tmp}/big", "--out", "{run}/run", "--resume"], "checkpoint frames are [32, 32]"),
    (["generate", "{tmp}/nothing", "--out", "{tmp}/g"], "no checkpoint"),
    (["generate", "{run}/run", "--out", "{tmp}/g", "--temperature", "-1"], "temperature"),
    (["generate", "{run}/run", "--out", "{tmp}/g", "--data", "{tmp}/big"], "trained on [32, 32]"),
    (["evaluate", "{run}/data"], "no checkpoint"),
    (["evaluate", "{run}/run", "--data", "{tmp}/big"], "trained on [32, 32]"),
    (["info", "{tmp}/missing"], "does not exist"),
    (["info", "{tmp}/junk.txt"], "not a readable discodance checkpoint"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a[:1] + [m]) for a, m in BAD])
def test_malformed_input_gives_one_line_error(tiny_run, tmp_path, capsys, args, message):
    (tmp_path / "junk.txt").write_text("hello")
    assert main(["synth", "--out", str(tmp_path / "big"), "--frames", "30", "--size", "40", "40"]) == 0
    capsys.readouterr()
    code, out, err = cli(capsys, *[a.format(tmp=tmp_path, run=tiny_run) for a in args])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "g").exists()


def test_installed_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "discodance.cli", "info", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "does not exist" in proc.stderr


def test_prepare_video_and_mocap_from_the_command_line(tmp_path, capsys):
    from test_mocap import bvh_text
    from test_video import dark_on_bright, figure_masks, write_video
    video = write_video(tmp_path / "dance.mp4", dark_on_bright(figure_masks(n=20)))
    code, out, err = cli(capsys, "prepare", video, "--out", tmp_path / "v", "--method", "threshold",
                         "--size", "32", "24")
    assert code == 0, err
    assert "20 frames of 32x24" in out
    bvh = tmp_path / "move.bvh"
    bvh.write_text(bvh_text([[0, 0, 0, 0, 0, 0, 10 * t, 0, 0] for t in range(12)]))
    code, out, err = cli(capsys, "prepare", bvh, "--out", tmp_path / "m", "--fps", "10", "--size", "32", "32")
    assert code == 0, err
    code, out, _ = cli(capsys, "info", tmp_path / "m", "--json")
    assert json.loads(out)["poses"][0] == 12
    code, _, err = cli(capsys, "prepare", bvh, video, "--out", tmp_path / "x")
    assert code == 2 and "separate datasets" in err and not (tmp_path / "x").exists()
    code, _, err = cli(capsys, "prepare", tmp_path / "nope.mp4", "--out", tmp_path / "x")
    assert code == 2 and "does not exist" in err


def test_compare_splits_shared_and_per_model_loop_settings():
    from discodance.cli_args import split_train_sets as _split_train_sets
    shared, own = _split_train_sets(["lr=1e-3", "code-prior:batch_size=32", "gumbel-vae:eval_every=50"])
    assert shared == {"lr": "1e-3"} and own == {"code-prior": {"batch_size": "32"}, "gumbel-vae": {"eval_every": "50"}}


def test_demo_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    """The whole demo (dancer, gumbel-vae, transformer prior, evaluation, both dances) in seconds."""
    out = tmp_path / "demo"
    code, stdout, err = cli(capsys, "demo", "--out", out, "--minutes", "0.03", "--frames", "500")
    assert code == 0, err
    for name in ("samples.gif", "chain.gif", "real.gif", "strip.png", "chain_strip.png", "checkpoint.pt",
                 "prior/checkpoint.pt", "data/frames.npy"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["prior"]["train_steps"] >= 1 and metrics["rollout"]["samples_motion"]["dancer_area"] > 0
    assert "transformer prior" in stdout and "chain" in stdout
    code, stdout, err = cli(capsys, "generate", out / "prior", "--out", tmp_path / "g", "--steps", "4", "--num", "2")
    assert code == 0, err


def test_generate_and_evaluate_change_only_sampling_settings(tiny_run, tmp_path, capsys):
    """`--set` at generate/evaluate time changes a trained code-prior's sampling (blend here: other
    frames from the same seed, the default's frames again with blend=1), is reported in the JSON,
    and refuses settings that would change what the model learned, in one line."""
    prior = tmp_path / "prior"
    assert main(["train", "--data", str(tiny_run / "data"), "--model", "code-prior", "--out", str(prior),
                 "--set", f"base_run={tiny_run / 'run'}", "--set", "width=16", "--set", "blocks=1", "--set", "heads=2",
                 "--set", "context=8", "--steps", "3", "--batch-size", "4", "--no-progress",
                 "--train-set", "eval_every=3"]) == 0
    capsys.readouterr()
    frames = {}
    for name, sets in (("default", []), ("blend1", ["--set", "blend=1"]), ("blend0", ["--set", "blend=0"])):
        code, out, err = cli(capsys, "generate", prior, "--out", tmp_path / name, "--steps", "12", "--num", "2",
                             "--json", *sets)
        assert code == 0, err
        assert json.loads(out).get("sampling_settings", {}) == ({"blend": int(sets[1][6:])} if sets else {})
        frames[name] = np.load(tmp_path / name / "frames.npy")
    assert np.array_equal(frames["default"], frames["blend1"]) and not np.array_equal(frames["default"], frames["blend0"])
    code, out, err = cli(capsys, "evaluate", prior, "--samples", "2", "--json", "--set", "stay=0.25")
    assert code == 0 and json.loads(out)["sampling_settings"] == {"stay": 0.25}, err
    one_line_error(capsys, ["generate", prior, "--out", tmp_path / "x", "--set", "width=32"],
                   "--set width", "sampling settings", "blend")
    one_line_error(capsys, ["generate", prior, "--out", tmp_path / "x", "--set", "blend=-1"], "blend must be >= 0")
    one_line_error(capsys, ["generate", tiny_run / "run", "--out", tmp_path / "x", "--set", "stay=0.5"],
                   "gumbel-vae can only change its sampling settings (it has none)")

"""Nothing lost, ever: --overwrite never deletes a user's data, one lock per run folder, every bad
setting is one line on stderr with exit code 2, and non-finite numbers never reach metrics.jsonl."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from discodance.cli import main
from discodance.config import TrainConfig
from discodance.checkpoint import load_checkpoint
from discodance.train import train

from conftest import TINY_MODEL, one_line_error

MODEL_SET = [f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY_MODEL.items()]
FAST = dict(batch_size=8, eval_every=4, ckpt_every=4, log_every=2, eval_batches=1, warmup_steps=2)


def snapshot(folder):
    """Every file under `folder` with its bytes: proof that nothing was deleted or changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    assert main(["synth", "--out", str(root / "data"), "--frames", "240", "--size", "32", "32"]) == 0
    return root / "data"


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("safety-run") / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "3", "--batch-size", "8",
                 "--no-progress", *MODEL_SET]) == 0
    return out


# ----------------------------------------------------------------------------- --overwrite
def test_overwrite_of_the_current_folder_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "meta.json").write_text("{}")  # even a folder that half looks like a dataset
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["synth", "--out", ".", "--frames", "20", "--overwrite"], "current folder")
    assert snapshot(tmp_path) == before


def test_prepare_never_deletes_its_source_images(tmp_path, capsys):
    from PIL import Image
    images = tmp_path / "proj" / "imgs"
    images.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(np.full((40, 30), 255 * (i % 2), np.uint8)).save(images / f"{i}.png")
    before = snapshot(tmp_path)
    one_line_error(capsys, ["prepare", images, "--out", tmp_path / "proj", "--masks", "--overwrite"], "holds the input")
    one_line_error(capsys, ["prepare", images, "--out", images / "sub", "--masks", "--overwrite"], "inside the input")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("layout", ["out is the data", "out holds the data"])
def test_train_never_deletes_the_dataset_it_trains_on(data, tmp_path, capsys, layout):
    import shutil
    nest = tmp_path / "nest"
    own = shutil.copytree(data, nest / "sub" / "data")
    before = snapshot(nest)
    out = own if layout == "out is the data" else nest
    one_line_error(capsys, ["train", "--data", own, "--out", out, "--steps", "1", "--overwrite", *MODEL_SET],
                   "the input")
    assert snapshot(nest) == before


@pytest.mark.parametrize("command", ["train", "demo", "synth", "generate", "compare"])
def test_overwrite_refuses_a_folder_that_is_not_discodances(data, run, tmp_path, capsys, command):
    folder = tmp_path / "mine"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "thesis.tex").write_text("years of work")
    before = snapshot(folder)
    argv = {"train": ["train", "--data", data, "--out", folder, "--steps", "1", *MODEL_SET],
            "demo": ["demo", "--out", folder, "--minutes", "0.01"],
            "synth": ["synth", "--out", folder, "--frames", "20"],
            "generate": ["generate", run, "--out", folder, "--steps", "2", "--num", "2"],
            "compare": ["compare", "--data", data, "--models", "gumbel-vae", "--minutes", "0.01", "--out", folder]}
    one_line_error(capsys, [*argv[command], "--overwrite"], "not a discodance", "photos")
    assert snapshot(folder) == before


def test_generate_never_writes_into_a_dataset(data, run, capsys):
    before = snapshot(data)
    one_line_error(capsys, ["generate", run, "--out", data, "--steps", "2", "--num", "2", "--overwrite"], "input")
    assert snapshot(data) == before


def test_overwrite_replaces_a_run_only_when_the_new_one_exists(data, run, tmp_path, capsys, monkeypatch):
    import shutil
    from discodance.models.gumbel_vae import GumbelVAE
    out = shutil.copytree(run, tmp_path / "run")
    before = snapshot(out)

    def broken(self, *args, **kwargs):
        raise RuntimeError("out of memory in the first step")

    with monkeypatch.context() as m:  # the new run fails before its first checkpoint: the old run comes back
        m.setattr(GumbelVAE, "forward", broken)
        with pytest.raises(RuntimeError):
            train(data, out, "gumbel-vae", TINY_MODEL, TrainConfig(steps=2, **FAST), overwrite=True, progress=False)
    assert snapshot(out) == before
    train(data, out, "gumbel-vae", TINY_MODEL, TrainConfig(steps=2, **FAST), overwrite=True, progress=False)
    assert load_checkpoint(out)["step"] == 2 and not [p for p in out.iterdir() if p.name.startswith(".replaced")]


# ----------------------------------------------------------------------------- the lock
def test_a_second_train_into_the_same_folder_is_refused_at_once(data, tmp_path):
    out = tmp_path / "run"
    # the first run trains for 12 s of wall time, however busy the machine: the second surely meets it
    cmd = [sys.executable, "-m", "discodance.cli", "train", "--data", str(data), "--out", str(out), "--minutes", "0.2",
           "--batch-size", "8", "--no-progress", *MODEL_SET, "--train-set", "ckpt_every=10", "--train-set", "log_every=5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (out / "config.json").exists() and time.time() < deadline:  # the first one is training
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "another discodance process" in second.stderr and ".lock" in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    kinds = [(r["step"], "loss" in r) for r in rows]  # one writer: no row written twice
    assert steps == sorted(steps) and len(kinds) == len(set(kinds))
    ckpt = load_checkpoint(out)
    assert ckpt["elapsed"] >= 12 and steps[-1] == ckpt["step"] and json.loads((out / "config.json").read_text())["model"] == "gumbel-vae"


# ----------------------------------------------------------------------------- bad settings
BAD_SETTINGS = [
    (["--seed", "-1"], "--seed"),
    (["--train-set", "betas=2,2"], "betas"),
    (["--train-set", "betas=0.9"], "betas"),
    (["--set", "hidden=-1"], "hidden must be >= 1"),
    (["--set", "hidden=0"], "hidden must be >= 1"),
    (["--set", "channels=100000,100000"], "parameters"),
    (["--set", "latents=100000000"], "parameters"),
    (["--set", "tau0=nan"], "tau0 must be a finite number"),
    (["--lr", "inf"], "finite"),
    (["--train-set", "lr=inf"], "lr must be a finite number"),
    (["--train-set", "weight_decay=-1"], "weight_decay must be >= 0"),
]


@pytest.mark.parametrize("extra, message", BAD_SETTINGS, ids=[" ".join(e) for e, _ in BAD_SETTINGS])
def test_bad_training_settings_are_one_line_errors_and_write_nothing(data, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    argv = ["train", "--data", data, "--out", out, "--steps", "2", "--no-progress",
            *[a for a in MODEL_SET if not any(a.startswith(f"--set={e.split('=')[0]}=") for e in extra[1:2])], *extra]
    one_line_error(capsys, argv, message)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("command", [["synth", "--out", "{tmp}/s"], ["demo", "--out", "{tmp}/d"]])
def test_negative_seed_is_refused_by_every_command(tmp_path, capsys, command):
    one_line_error(capsys, [c.format(tmp=tmp_path) for c in command] + ["--seed", "-1"], "--seed")


def test_temperature_zero_is_accepted_in_every_spelling(run, tmp_path, capsys):
    for text in ("0", "0.00", "0e0"):
        assert main(["generate", str(run), "--out", str(tmp_path / text), "--steps", "2", "--num", "2",
                     "--temperature", text]) == 0
    capsys.readouterr()


def test_generate_refuses_a_rollout_that_cannot_fit_in_memory(run, tmp_path, capsys):
    one_line_error(capsys, ["generate", run, "--out", tmp_path / "g", "--steps", "100000000"], "memory", "available")
    assert not (tmp_path / "g").exists()


def _damaged_checkpoint(run, tmp_path, drop):
    import shutil
    bad = shutil.copytree(run, tmp_path / f"no-{drop}")
    ckpt = torch.load(bad / "checkpoint.pt", weights_only=True)
    del ckpt[drop]
    torch.save(ckpt, bad / "checkpoint.pt")
    return bad


@pytest.mark.parametrize("drop", ["config", "model"])
def test_a_checkpoint_missing_its_config_is_one_line_everywhere(data, run, tmp_path, capsys, drop):
    bad = _damaged_checkpoint(run, tmp_path, drop)
    before = snapshot(bad)
    for argv in (["generate", bad, "--out", tmp_path / "g", "--steps", "2"], ["evaluate", bad, "--samples", "2"],
                 ["info", bad], ["train", "--data", data, "--out", bad, "--resume", "--no-progress"]):
        one_line_error(capsys, argv, "damaged")
    assert snapshot(bad) == before


def test_info_on_a_plain_folder_says_what_is_missing(tmp_path, capsys):
    one_line_error(capsys, ["info", tmp_path], "neither a dataset", "nor a run")


def test_evaluate_with_no_test_windows_is_an_error(tmp_path, capsys, run):
    from discodance.data.writer import write_dataset
    from discodance.data.synthetic import make_dancer
    frames, _, _ = make_dancer(40, 32, 32, seed=1)
    short = write_dataset(tmp_path / "short", frames, fps=24, source="test", fractions=(0.95, 0.05, 0.0))
    one_line_error(capsys, ["evaluate", run, "--data", short, "--samples", "2"], "no run of")


def test_generate_on_a_dataset_with_zero_fps_is_one_line(run, tmp_path, capsys):
    import shutil
    data = shutil.copytree(json.loads((run / "config.json").read_text())["data"], tmp_path / "d")
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "fps": 0}))
    one_line_error(capsys, ["generate", run, "--data", data, "--out", tmp_path / "g", "--steps", "2"], "fps")


def test_compare_checks_every_setting_before_any_work(data, tmp_path, capsys):
    from discodance.evaluation.evalnet import cache_dir
    before = sorted(cache_dir().rglob("*")) if cache_dir().exists() else []
    for bad, message in ((["--set", "gan:hidden=0"], "hidden must be >= 1"),
                         (["--set", "gumbel-vae:latents=-3"], "latents"),
                         (["--train-set", "lr=-1"], "lr must be > 0")):
        one_line_error(capsys, ["compare", "--data", data, "--models", "gan,code-prior", "--minutes", "1",
                                "--out", tmp_path / "r", *bad], message)
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.partial*"))
    assert (sorted(cache_dir().rglob("*")) if cache_dir().exists() else []) == before  # no network trained
    assert sorted(p.name for p in data.iterdir()) == ["frames.npy", "meta.json", "poses.npy"]


# ----------------------------------------------------------------------------- the log
def test_non_finite_steps_stay_out_of_the_log_and_stop_the_run(data, tmp_path, monkeypatch):
    """Steps 2 and 3 of 8 give a NaN loss: they are skipped, counted, and not averaged in; then a run
    whose every loss is NaN stops with a clear message. No NaN/Infinity ever reaches metrics.jsonl."""
    from discodance.errors import DiscodanceError
    from discodance.models.gumbel_vae import GumbelVAE
    real_forward = GumbelVAE.forward

    def flaky(self, batch, step, generator):
        loss, logs = real_forward(self, batch, step=step, generator=generator)
        if step in poisoned:
            loss = loss * float("nan")
            logs = {**logs, "tau": float("inf")}
        return loss, logs

    monkeypatch.setattr(GumbelVAE, "forward", flaky)
    poisoned = {2, 3}
    out = tmp_path / "run"
    train(data, out, "gumbel-vae", TINY_MODEL, TrainConfig(steps=8, **{**FAST, "log_every": 4}), progress=False)
    text = (out / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows[0]["skipped_steps"] == 2 and "skipped_steps" not in train_rows[1]
    assert all(0.5 <= r["tau"] <= 1.0 for r in train_rows)  # the skipped steps' logs are not averaged in
    poisoned = set(range(100))
    with pytest.raises(DiscodanceError, match="not finite for 5 steps in a row"):
        train(data, tmp_path / "nan", "gumbel-vae", TINY_MODEL, TrainConfig(steps=20, **FAST), progress=False)


def test_resume_reproduces_every_log_line_when_checkpoints_fall_between_log_lines(data, tmp_path):
    drop = {"time", "cpu_seconds", "frames_per_s", "max_rss_mb"}
    cfg = TrainConfig(steps=12, **{**FAST, "ckpt_every": 3, "log_every": 2})
    lines = {}
    for name, stop in (("full", None), ("killed", 7)):
        train(data, tmp_path / name, "gumbel-vae", TINY_MODEL, cfg, stop_at=stop, progress=False)
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "loss": 0.1')  # the line the kill cut off
    train(data, tmp_path / "killed", cfg=cfg, resume=True, progress=False)
    for name in ("full", "killed"):
        rows = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        lines[name] = [{k: v for k, v in json.loads(r).items() if k not in drop} for r in rows]
    assert lines["full"] == lines["killed"] and len(lines["full"]) >= 6


def test_resume_after_kill_9_reproduces_the_uninterrupted_run(data, tmp_path):
    """A real SIGKILL at an unknown moment (mid-step, mid-write): the resumed run ends with the same
    weights and the same metrics.jsonl rows (timings aside) as a run that was never interrupted."""
    import signal
    drop = {"time", "cpu_seconds", "frames_per_s", "max_rss_mb"}
    sets = ["--train-set=ckpt_every=3", "--train-set=log_every=2", "--train-set=eval_every=5",
            "--train-set=eval_batches=1", "--train-set=warmup_steps=2"]
    cmd = lambda out: [sys.executable, "-m", "discodance.cli", "train", "--data", str(data), "--out", str(out),  # noqa: E731
                       "--steps", "40", "--batch-size", "8", "--no-progress", *MODEL_SET, *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd(tmp_path / "full"), check=True, env=env, capture_output=True)
    victim = subprocess.Popen(cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 8):
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert load_checkpoint(tmp_path / "killed")["step"] < 40  # it really was cut short
    resume = [sys.executable, "-m", "discodance.cli", "train", "--data", str(data), "--out", str(tmp_path / "killed"),
              "--resume", "--no-progress"]  # the run's own settings come from its checkpoint
    subprocess.run(resume, check=True, env=env, capture_output=True)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "killed")
    assert a["step"] == b["step"] == 40
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rows = {n: [{k: v for k, v in json.loads(r).items() if k not in drop}
                for r in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in ("full", "killed")}
    assert rows["full"] == rows["killed"]
    assert not (tmp_path / "killed" / ".lock").exists()


def test_every_models_default_settings_pass_the_shared_number_rules():
    """A setting whose default is 0 must be listed as one that may be 0, or no run of that model starts."""
    import dataclasses
    from discodance.models import MAY_BE_ZERO, REGISTRY
    for name, cls in REGISTRY.items():
        for f in dataclasses.fields(cls.config_class):
            value = getattr(cls.config_class(), f.name)
            if isinstance(value, int) and not isinstance(value, bool):
                assert value >= 1 or f.name in MAY_BE_ZERO, (name, f.name, value)

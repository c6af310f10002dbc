"""`discodance compare` end to end on tiny models, the report's numbers and files, and the page
opened in a real (headless) Chromium: every image loads and the table has a row per model."""
import csv
import importlib.util
import json
import os
import shutil
import tempfile

import pytest
import torch

from discodance.checkpoint import read_log
from discodance.cli import main
from discodance.compare import CompareConfig, run_compare
from discodance.errors import DiscodanceError
from discodance.evaluation.evalnet import EvalNetConfig
from discodance.evaluation.full import FullEvalConfig

from conftest import TINY_MODEL

MODELS = ("gumbel-vae", "code-prior", "gan")
TINY_SETS = {"gumbel-vae": TINY_MODEL, "code-prior": {"context": 4, "width": 16, "blocks": 1, "heads": 2, "prompt": 2},
             "gan": {"channels": (8, 16), "d_channels": (8, 16), "hidden": 32, "code": 16, "noise": 4}}
FAST_EVAL = FullEvalConfig(rollouts=4, samples=2, horizons=(16, 64), evalnet=EvalNetConfig(
    steps=60, channels=(8, 16), hidden=32, features=8, reference_frames=100))
CHROMIUM = [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")]
CHROMEDRIVER = shutil.which("chromedriver")


def _text(v):
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


def tiny_compare(data, out, **changes) -> CompareConfig:
    settings = dict(data=str(data), models=MODELS, out=str(out), minutes=1.0, seeds=2, steps=6,
                    model_sets={m: {k: _text(v) for k, v in s.items()} for m, s in TINY_SETS.items()},
                    train_sets={"batch_size": "8", "eval_batches": "1"}, evaluation=FAST_EVAL)
    return CompareConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    torch.set_num_threads(1)
    from discodance.data.synthetic import write_synthetic
    root = tmp_path_factory.mktemp("compare")
    data = write_synthetic(root / "data", 600, 32, 32, seed=2)
    summary = run_compare(tiny_compare(data, root / "report"))
    return root / "report", summary


def test_report_folder_holds_every_number_and_picture(report):
    out, summary = report
    assert summary["report"].endswith("index.html") and not out.with_name(".report.partial").exists()
    for name in ("index.html", "results.json", "results.csv", "summary.csv", "training.png", "horizons.png",
                 "gifs/real.gif", "strips/real.png", *[f"gifs/{m}.gif" for m in MODELS]):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted((r["model"], r["seed"]) for r in rows) == sorted((m, str(s)) for m in MODELS for s in (0, 1))
    data = json.loads((out / "results.json").read_text())
    for m in MODELS:
        s = data["summary"][m]
        assert s["frame_fid"]["n"] == 2 and s["frame_fid"]["mean"] >= 0 and s["frame_fid"]["sd"] >= 0
        assert 0 <= s["implausible@64"]["mean"] <= 1 and s["parameters"]["mean"] > 0
        assert s["train_steps"]["mean"] == 6 and s["train_peak_rss_mb"]["mean"] > 0
    cp = data["results"]["code-prior"][0]["cost"]   # both stages counted
    assert cp["train_seconds_total"] == pytest.approx(cp["train_seconds"] + cp["base_train_seconds"])
    assert "probe_error_px" in data["evalnet"] and data["reference"]["frame_fid_floor"] >= 0
    quality = data["time_to_quality"]   # every run reaches the threshold, code-prior's base counted
    assert 0 < quality["threshold"] <= 1 and all(len(quality["cpu_seconds"][m]) == 2 for m in MODELS)
    assert quality["cpu_seconds"]["code-prior"][0] > max(
        r["cpu_seconds"] for r in read_log(out / "runs" / "code-prior-s0.base") if "cpu_seconds" in r)
    page = (out / "index.html").read_text()
    assert page.count('class="model"') == len(MODELS) and "★" in page and "both stages" in page


def test_an_interrupted_compare_resumes_without_retraining(report, tmp_path):
    out, _ = report
    partial = tmp_path / ".again.partial"
    shutil.copytree(out, partial)                      # as if the compare had died before renaming
    (partial / "index.html").unlink()
    stamp = {p: p.stat().st_mtime_ns for p in partial.glob("runs/*/checkpoint.pt")}
    data = json.loads((out / "results.json").read_text())["settings"]["data"]
    with pytest.raises(DiscodanceError, match="unfinished compare with other settings"):
        run_compare(tiny_compare(data, tmp_path / "again", minutes=2.0))
    run_compare(tiny_compare(data, tmp_path / "again"))
    assert (tmp_path / "again" / "index.html").is_file()
    assert {p.name: t for p, t in stamp.items()} == {p.name: p.stat().st_mtime_ns
                                                     for p in (tmp_path / "again").glob("runs/*/checkpoint.pt")}


@pytest.mark.parametrize("args, message", [
    (["--models", "gumbel-vae,nope"], "unknown model(s) nope"),
    (["--models", "gan,gan"], "lists a model twice"),
    (["--models", "gan", "--set", "vrnn:latent=3"], "not in --models"),
    (["--models", "gan", "--set", "latent=3"], "MODEL:key=value"),
    (["--models", "gan", "--minutes", "0"], "must be > 0"),
    (["--models", "gan", "--train-set", "vrnn:lr=1e-3"], "--train-set names model(s) not in --models"),
    (["--models", "gan", "--horizons", "16,2"], "horizons must be within"),
    (["--models", "gan", "--out", "{existing}"], "already exists"),
])
def test_compare_rejects_bad_input_in_one_line(tmp_path, capsys, args, message):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "index.html").write_text("an old report")
    base = {"--data": str(tmp_path / "data"), "--minutes": "1", "--out": str(tmp_path / "r")}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1].format(existing=tmp_path / "existing")
    argv = ["compare"] + [x for k, v in base.items() for x in (k, v)]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- the browser
def _browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not any(CHROMIUM) or CHROMEDRIVER is None:
        return "headless Chromium is absent: apt-get install chromium chromium-driver"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is absent: pip install -e '.[test]'"
    return None


@pytest.fixture
def browser():
    """Headless Chromium with a fresh profile, started the way CI can run it (no sandbox, no GPU,
    no network of its own); Selenium talks to Debian's chromedriver and never downloads one."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_OFFLINE", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = next(c for c in CHROMIUM if c)
    profile = tempfile.mkdtemp(prefix="discodance-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_report_opens_in_a_real_browser(browser, report):
    out, _ = report
    browser.get((out / "index.html").resolve().as_uri())      # returns after the load event: images done
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) == 2 * (len(MODELS) + 1) + 2            # GIFs and strips (models + real), 2 plots
    assert all(done and width > 0 for _, done, width in images), images
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#results tbody tr.model th')].map(th => th.textContent)")
    assert rows == list(MODELS)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(height + 40, 12000))
    assert browser.save_screenshot(str(out / "screenshot.png"))
    assert (out / "screenshot.png").stat().st_size > 10_000
    keep = os.environ.get("DISCODANCE_SCREENSHOT")               # a path to copy it to, for a human to look at
    if keep:
        shutil.copy(out / "screenshot.png", keep)


def test_compare_and_full_evaluate_have_help(capsys):
    assert main(["compare", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())                     # argparse wraps lines anywhere
    assert "usage: discodance compare" in out and "--minutes" in out and "both stages" in out
    assert main(["evaluate", "--help"]) == 0
    assert "--full" in capsys.readouterr().out


def test_evaluate_full_prints_one_json_object(report, capsys, monkeypatch):
    from discodance.evaluation import evalnet, full as quality
    out, _ = report
    fast = FAST_EVAL.evalnet   # the cache the compare left behind, instead of training the default network
    monkeypatch.setattr(quality, "load_or_train", lambda ds, cfg, device="cpu", log=None:
                        evalnet.load_or_train(ds, fast, device, log))
    capsys.readouterr()
    code = main(["evaluate", str(out / "runs" / "gumbel-vae-s0"), "--full", "--json", "--rollouts", "3",
                 "--samples", "2"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(stdout)
    assert set(result["quality"]["horizons"]) == {"16", "64", "256"}
    assert result["cost"]["parameters"] > 0 and result["likelihood"]["windows"] > 0
    assert 0 <= result["real"]["implausible"] <= 1 and "probe_error_px" in result["evalnet"]


def test_compare_size_presets_sit_under_the_users_settings(tiny_data, tmp_path):
    cfg = CompareConfig(data=str(tiny_data), models=("gan", "code-prior"), out=str(tmp_path / "r"),
                        model_sets={"gan": {"hidden": "64"}}).validate()
    assert cfg.model_sets["gan"] == {"channels": "16,32,64,128", "hidden": "64", "d_channels": "16,32,64,128",
                                     "code": "128"}
    assert cfg.model_sets["gumbel-vae"] == {"channels": "16,32,64,128", "hidden": "256"}   # code-prior's first stage
    assert cfg.first_stage("code-prior") == ("gumbel-vae", {"channels": "16,32,64,128", "hidden": "256"})
    plain = CompareConfig(data=str(tiny_data), models=("gan",), out=str(tmp_path / "r"), size="default").validate()
    assert plain.model_sets == {}
    with pytest.raises(DiscodanceError, match="--size must be one of"):
        CompareConfig(data=str(tiny_data), models=("gan",), out=str(tmp_path / "r"), size="huge").validate()


def test_time_to_quality_is_the_first_cpu_time_at_the_lowest_best_iou(tmp_path):
    """Each run's CPU time to first reach the lowest of all runs' best validation IoUs, a first
    stage's whole CPU time added, and the report's claim as gumbel-vae's time over vae-lstm-mdn's."""
    from discodance.compare import time_to_quality

    def log(name, rows):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log("gumbel-vae-s0", [{"step": 10, "cpu_seconds": 5.0, "val_iou": 0.5}, {"step": 20, "cpu_seconds": 9.0, "val_iou": 0.8},
                          {"step": 30, "cpu_seconds": 14.0, "val_iou": 0.9}])
    log("vae-lstm-mdn-s0.base", [{"step": 5, "cpu_seconds": 30.0}, {"step": 10, "cpu_seconds": 60.0, "val_iou": 0.7}])
    log("vae-lstm-mdn-s0", [{"step": 10, "cpu_seconds": 4.0, "val_iou": 0.6}, {"step": 20, "cpu_seconds": 8.0, "val_iou": 0.85},
                            {"step": 30, "cpu_seconds": 12.0, "val_iou": 0.82}])
    log("gan-s0", [{"step": 10, "cpu_seconds": 3.0, "val_iou": 0.5}, {"step": 20, "cpu_seconds": 6.0, "val_iou": 0.6}])
    cfg = CompareConfig(data=str(tmp_path), models=("gumbel-vae", "vae-lstm-mdn", "gan"), out=str(tmp_path / "r"), seeds=1)
    quality = time_to_quality(cfg, tmp_path)
    assert quality["threshold"] == 0.6                                       # the lowest of the bests 0.9, 0.85, 0.6
    assert quality["cpu_seconds"] == {"gumbel-vae": [9.0], "vae-lstm-mdn": [64.0], "gan": [6.0]}   # 60 s of stage 1 + 4
    assert quality["ratio_threshold"] == 0.85                                # the claim's two models only
    assert quality["ratio_cpu_seconds"] == {"gumbel-vae": 14.0, "vae-lstm-mdn": 68.0}   # 60 s of stage 1 + 8
    assert quality["ratio_gumbel_vae_to_vae_lstm_mdn"] == pytest.approx(14.0 / 68.0)
    log("code-prior-s0", [{"step": 10, "cpu_seconds": 5.0}])                 # no validation IoU (short val blocks)
    cfg = CompareConfig(data=str(tmp_path), models=("gumbel-vae", "vae-lstm-mdn", "code-prior"), out=str(tmp_path / "r"), seeds=1)
    quality = time_to_quality(cfg, tmp_path)
    assert quality["unmeasured"] == ["code-prior"] and "code-prior" not in quality["cpu_seconds"]
    assert quality["ratio_gumbel_vae_to_vae_lstm_mdn"] == pytest.approx(14.0 / 68.0)


def test_a_converged_compare_stops_each_run_on_its_plateau(tmp_path):
    """patience=1 with an unreachable 1000% improvement: every run stops at its second validation
    (step 4 of a 40-step cap), says so in its log, and the report has its time to quality."""
    torch.set_num_threads(1)
    from discodance.data.synthetic import write_synthetic
    data = write_synthetic(tmp_path / "data", 400, 32, 32, seed=3)
    cfg = tiny_compare(data, tmp_path / "report", models=("gumbel-vae",), seeds=1, steps=40,
                       model_sets={"gumbel-vae": {k: _text(v) for k, v in TINY_MODEL.items()}},
                       train_sets={"batch_size": "8", "eval_batches": "1", "eval_every": "2", "patience": "1",
                                   "min_improvement": "10"})
    run_compare(cfg)
    rows = read_log(tmp_path / "report" / "runs" / "gumbel-vae-s0")
    assert max(r["step"] for r in rows) == 4 and rows[-1].get("converged") is True
    quality = json.loads((tmp_path / "report" / "results.json").read_text())["time_to_quality"]
    assert quality["cpu_seconds"]["gumbel-vae"][0] > 0

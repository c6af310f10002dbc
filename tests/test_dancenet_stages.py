"""vae-lstm-mdn in DanceNet's two stages: a stage=vae run trains the conv VAE on single frames; a
stage=lstm run loads it frozen and trains only the LSTM-MDN on each frame's cached latents."""
import pytest
import torch

from discodance.checkpoint import load_checkpoint
from discodance.config import TrainConfig
from discodance.errors import DiscodanceError
from discodance.models import REGISTRY, build_model, load_model, model_config
from discodance.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"latent": 6, "lstm_layers": 1, "lstm_hidden": 16, "mixtures": 3, "seq_len": 4, "seed_len": 2,
         "channels": (8, 16), "hidden": 32}
LOOP = dict(batch_size=8, eval_every=10, ckpt_every=10, log_every=5, eval_batches=1, warmup_steps=2)


def run(data, out, steps, **sets):
    return train(data, out, "vae-lstm-mdn", {**SMALL, **sets}, TrainConfig(steps=steps, **LOOP), progress=False)


@pytest.fixture(scope="module")
def first_stage(tiny_data, tmp_path_factory):
    return run(tiny_data, tmp_path_factory.mktemp("stages") / "vae", 12, stage="vae").parent


def test_the_first_stage_trains_single_frames_and_has_no_dynamics(first_stage, tiny_data):
    model = load_model(load_checkpoint(first_stage / "checkpoint.pt"))
    assert model.window == 1
    groups = model.optimizer_groups()["model"]
    assert {id(p) for p in groups} == {id(p) for m in (model.encoder, model.decoder) for p in m.parameters()}
    out = model.evaluate(torch.rand(3, 1, 32, 32).round(), samples=4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["nelbo"]).all() and (out["iwae"] <= out["nelbo"] + 1e-4).all()
    with pytest.raises(DiscodanceError, match="stage=vae run"):
        model.rollout(torch.zeros(1, 2, 32, 32), 4)


def test_the_second_stage_freezes_the_first_stages_vae_and_trains_the_lstm(first_stage, tiny_data, tmp_path):
    base = load_checkpoint(first_stage / "checkpoint.pt")["model"]
    ckpt = load_checkpoint(run(tiny_data, tmp_path / "lstm", 12, stage="lstm", base_run=str(first_stage),
                               channels=(4, 4), latent=99))   # the VAE's settings come from the base run
    state = ckpt["model"]
    for key, value in base.items():
        if key.split(".")[0] in ("encoder", "decoder"):
            assert torch.equal(state[key], value), key                       # loaded and never trained
    assert any(not torch.equal(state[k], base[k]) for k in state if k.startswith("lstm."))
    config = ckpt["config"]["model_config"]
    assert config["latent"] == 6 and list(config["channels"]) == [8, 16]
    model = load_model(ckpt)
    frames = torch.rand(2, 5, 32, 32, generator=torch.Generator().manual_seed(0)).round()
    out = model.rollout(frames[:, :2], 70, torch.Generator().manual_seed(1))   # decoded in two chunks
    assert out.shape == (2, 71, 32, 32) and torch.equal(out[:, 0], frames[:, 1])
    again = model.rollout(frames[:, :2], 70, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_each_distinct_frame_is_encoded_once_and_latents_match_the_encoder(first_stage):
    sets = {**SMALL, "stage": "lstm", "base_run": str(first_stage)}
    model = build_model("vae-lstm-mdn", model_config("vae-lstm-mdn", (32, 32), sets))
    model.load_pretrained()
    frames = torch.rand(2, 6, 32, 32, generator=torch.Generator().manual_seed(0)).round()
    frames[1] = frames[0]                                                    # two identical windows
    mu, logvar = model.cached_latents(frames)
    ref_mu, ref_logvar = model.encode(frames)
    torch.testing.assert_close(mu, ref_mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logvar, ref_logvar, rtol=1e-5, atol=1e-5)
    assert model.latent_cache.misses == 6 and model.latent_cache.hits == 6
    loss, _ = model(frames[:, :4], generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for m in (model.encoder, model.decoder) for p in m.parameters())
    assert all(p.grad is not None for p in model.lstm.parameters())


def test_the_second_stage_refuses_a_missing_or_wrong_base(tiny_data, tmp_path):
    with pytest.raises(DiscodanceError, match="needs a trained first stage"):
        model_config("vae-lstm-mdn", (32, 32), {**SMALL, "stage": "lstm"})
    gumbel = train(tiny_data, tmp_path / "g", "gumbel-vae", {"channels": (8, 16), "hidden": 32, "latents": 4,
                                                              "classes": 5}, TrainConfig(steps=2, **LOOP), progress=False)
    with pytest.raises(DiscodanceError, match="needs a vae-lstm-mdn stage=vae run"):
        model_config("vae-lstm-mdn", (32, 32), {**SMALL, "stage": "lstm", "base_run": str(gumbel.parent)})


@pytest.mark.parametrize("sets,expected", [
    ({}, ("vae-lstm-mdn", {"stage": "vae"})),                                # the default: DanceNet's two stages
    ({"stage": "joint"}, None),                                              # joint: one stage
    ({"stage": "lstm", "channels": "8,16", "seq_len": "6"}, ("vae-lstm-mdn", {"stage": "vae", "channels": "8,16"})),
    ({"stage": "lstm", "base_run": "runs/vae"}, None),                       # the first stage exists
])
def test_first_stage_settings(sets, expected):
    assert REGISTRY["vae-lstm-mdn"].first_stage(sets) == expected


@pytest.mark.parametrize("name", ["vrnn", "lstm-ae", "gan"])
def test_vrnn_lstm_ae_and_gan_default_to_two_stages(name):
    assert REGISTRY[name].first_stage({}) == ("vae-lstm-mdn", {"stage": "vae"})
    assert REGISTRY[name].first_stage({"two_stage": "false"}) is None
    with pytest.raises(DiscodanceError, match="two_stage=false"):
        model_config(name, (32, 32), {})


def test_compare_trains_the_first_stage_inside_the_budget(tiny_data, tmp_path):
    from discodance.compare import CompareConfig, train_model
    sets = {k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in SMALL.items()}
    cfg = CompareConfig(data=str(tiny_data), models=("vae-lstm-mdn",), out=str(tmp_path / "report"), minutes=1.0,
                        steps=4, prior_share=0.25, model_sets={"vae-lstm-mdn": {**sets, "stage": "lstm"}},
                        train_sets={"batch_size": "8", "eval_batches": "1"}).validate()
    assert cfg.first_stage("vae-lstm-mdn") == ("vae-lstm-mdn", {"stage": "vae", "latent": "6", "channels": "8,16", "hidden": "32"})
    (tmp_path / "logs").mkdir()
    run, info = train_model(cfg, "vae-lstm-mdn", 0, tmp_path, tmp_path / "logs")
    base = load_checkpoint(tmp_path / "vae-lstm-mdn-s0.base" / "checkpoint.pt")
    second = load_checkpoint(run / "checkpoint.pt")
    assert base["config"]["model_config"]["stage"] == "vae" and second["config"]["model_config"]["stage"] == "lstm"
    assert second["config"]["model_config"]["base_run"] == str((tmp_path / "vae-lstm-mdn-s0.base").resolve())
    assert info["stages"]["base"]["minutes"] == pytest.approx(0.75) and info["stages"]["prior"]["minutes"] == pytest.approx(0.25)


LATENT_SETS = {
    "lstm-ae": ({"input_frames": 3, "future_frames": 2, "lstm_hidden": 16, "lstm_layers": 1, "query": 4, "mixtures": 2},
                {"latent_nll", "latent_nll_next", "rec", "iou"}),
    "vrnn": ({"latent": 4, "state": 16, "features": 16, "z_features": 8, "hidden": 32, "seq_len": 5, "seed_len": 3},
             {"latent_nelbo", "latent_iwae", "rec", "kl", "iou"}),
    "gan": ({"context": 3, "unroll": 2, "noise": 4, "hidden": 16, "layers": 2, "mode_seeking": 0.03},
            {"iou", "latent_se"}),
}


@pytest.mark.parametrize("name", sorted(LATENT_SETS))
def test_sequence_models_on_a_first_stage_model_its_latents_and_roll_out_stochastically(name, first_stage, tiny_data,
                                                                                        tmp_path):
    sets, keys = LATENT_SETS[name]
    ckpt = load_checkpoint(train(tiny_data, tmp_path / "run", name, {**sets, "base_run": str(first_stage)},
                                 TrainConfig(steps=6, **LOOP), progress=False))
    base = load_checkpoint(first_stage / "checkpoint.pt")["model"]
    for key, value in base.items():
        if key.split(".")[0] in ("encoder", "decoder"):
            assert torch.equal(ckpt["model"][f"vae.{key}"], value), key        # loaded and frozen
    model = load_model(ckpt)
    assert not any(n.startswith("vae.") for g in model.optimizer_groups().values() for n, p in model.named_parameters()
                   if any(p is q for q in g))
    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).round()
    a = model.rollout(frames, 9, torch.Generator().manual_seed(1))
    b = model.rollout(frames, 9, torch.Generator().manual_seed(1))
    c = model.rollout(frames, 9, torch.Generator().manual_seed(2))
    assert a.shape == (2, 10, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 0], frames[:, -1])
    out = model.evaluate(torch.rand(3, 5, 32, 32).round(), samples=2, generator=torch.Generator().manual_seed(0))
    assert set(out) == keys and all(torch.isfinite(v).all() for v in out.values())


def test_the_latent_gan_unrolls_on_latents_and_its_critic_sees_the_window(first_stage):
    model = build_model("gan", model_config("gan", (32, 32), {**LATENT_SETS["gan"][0], "base_run": str(first_stage)}))
    model.load_pretrained()
    D = model.vae.latent
    assert model.window == 5 and model.critic.net[0].in_features == 5 * D       # context 3 + unroll 2 latents
    frames = torch.rand(4, 5, 32, 32, generator=torch.Generator().manual_seed(0)).round()
    mu = model.sequence(frames)
    torch.testing.assert_close(mu, model.vae.latents(frames)[0])                 # the frozen encoder's means
    fake, first, noise = model.unrolled(mu[:, :3], 2, torch.Generator().manual_seed(0))
    assert fake.shape == (4, 2, D) and torch.equal(fake[:, 0], first)           # latents fed back as they are
    noise = noise.clone().requires_grad_()
    one = model.generate(mu[:, :3], None, noise=noise)
    two = model.generate(torch.stack([mu[:, 1], mu[:, 2], one], 1), torch.Generator().manual_seed(1))
    assert torch.autograd.grad(two.sum(), noise)[0].abs().sum() > 0
    losses, logs = model(frames, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"generator", "discriminator"} and logs["mode_seeking_ratio"] > 0


def test_lstm_ae_in_pixels_is_deterministic():
    sets = {k: v for k, v in LATENT_SETS["lstm-ae"][0].items() if k != "mixtures"}
    pixel = build_model("lstm-ae", model_config("lstm-ae", (32, 32), {**sets, "two_stage": False, "channels": (8, 16),
                                                                      "hidden": 32}))
    frames = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).round()
    assert torch.equal(pixel.rollout(frames, 4, torch.Generator().manual_seed(1)),
                       pixel.rollout(frames, 4, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("name", sorted(LATENT_SETS))
def test_two_stage_asks_compare_for_a_first_stage(name):
    first = REGISTRY[name].first_stage
    assert first({"two_stage": "true", "channels": "8,16", "lstm_hidden": "16"}) == (
        "vae-lstm-mdn", {"stage": "vae", "channels": "8,16"})
    assert first({"two_stage": "false"}) is None and first({"two_stage": "true", "base_run": "runs/vae"}) is None
    with pytest.raises(DiscodanceError, match="two_stage needs a trained first stage"):
        model_config(name, (32, 32), {"two_stage": True})


def _train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--steps", "8", "--batch-size", "8", "--no-progress",
            "--train-set", "eval_batches=1", "--train-set", "warmup_steps=2", *extra]


def test_one_train_command_trains_both_stages(tiny_data, tmp_path, capsys):
    from discodance.cli import main
    tiny = ["--set", "context=4", "--set", "width=16", "--set", "blocks=1", "--set", "heads=2", "--set", "prompt=2"]
    assert main(_train_args(tiny_data, tmp_path / "prior", "--model", "code-prior", "--prior-share", "0.25", *tiny,
                            "--set", "base=autoencoder")) == 0
    base, second = load_checkpoint(tmp_path / "prior.base"), load_checkpoint(tmp_path / "prior")
    assert base["config"]["model"] == "gumbel-vae" and base["step"] == 6 and second["step"] == 2
    assert base["config"]["model_config"]["horizon"] == 0 and base["config"]["model_config"]["context"] == 1  # base=autoencoder
    assert second["config"]["model_config"]["base_run"] == str((tmp_path / "prior.base").resolve())
    assert "first stage: gumbel-vae" in capsys.readouterr().err


def test_a_bad_second_stage_setting_fails_before_the_first_stage_trains(tiny_data, tmp_path, capsys):
    from conftest import one_line_error
    one_line_error(capsys, _train_args(tiny_data, tmp_path / "prior", "--model", "code-prior", "--set", "width=10",
                                       "--set", "heads=4"), "width (10) must be a multiple of heads (4)")
    assert not (tmp_path / "prior.base").exists() and not (tmp_path / "prior").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    one_line_error(capsys, _train_args(tiny_data, tmp_path / "taken", "--model", "vae-lstm-mdn", "--set", "stage=lstm"),
                   "taken")
    assert not (tmp_path / "taken.base").exists() and (tmp_path / "taken" / "notes.txt").read_text() == "mine"

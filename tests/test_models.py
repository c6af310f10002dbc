"""Every registered model: shapes, finite losses, gradients, overfitting, save/load, seeded rollouts,
training through the one loop; and the model-specific pieces (MDN, LSTM state, GAN groups, code prior)."""
import copy
import io
import json
import math
import shutil

import pytest
import torch

from discodance.config import TrainConfig
from discodance.errors import DiscodanceError
from discodance.models import REGISTRY, build_model, model_config

from conftest import TINY_MODEL

CONV = {"channels": (8, 16), "hidden": 32}
TINY = {
    "gumbel-vae": TINY_MODEL,
    "code-prior": {"context": 4, "width": 16, "blocks": 1, "heads": 2, "prompt": 2},   # + base_config, see make()
    "vae-lstm-mdn": {"stage": "joint", "latent": 6, "lstm_layers": 2, "lstm_hidden": 16, "mixtures": 3, "seq_len": 4, "seed_len": 2, **CONV},
    "gan": {"two_stage": False, "unroll": 1, "mode_seeking": 0.0, "noise": 4, "code": 16, "d_channels": (8, 16), **CONV},
    "vrnn": {"two_stage": False, "latent": 4, "state": 16, "features": 16, "z_features": 8, "seq_len": 4, "seed_len": 2, **CONV},
    "lstm-ae": {"two_stage": False, "input_frames": 2, "future_frames": 2, "features": 16, "lstm_hidden": 16, "lstm_layers": 1,
                "query": 4, **CONV},
}
# a little more capacity for memorising a batch; what "the loss" is for a GAN: its reconstruction term
OVERFIT = {"gumbel-vae": dict(latents=8, classes=8, hidden=64), "code-prior": dict(codes="argmax", width=32),
           "vae-lstm-mdn": dict(hidden=64), "gan": dict(hidden=64), "vrnn": dict(hidden=64), "lstm-ae": dict(hidden=64)}
OVERFIT_METRIC = {"gan": "rec"}
FAST = dict(batch_size=8, eval_every=10, ckpt_every=10, log_every=5, eval_batches=1, warmup_steps=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU spinning OpenMP threads
    make LSTM steps ~100x slower: run this module on one thread, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name, frame_size=(32, 32), **extra):
    torch.manual_seed(0)
    overrides = {**TINY.get(name, {}), **extra}
    if name == "code-prior" and "base_run" not in overrides:  # a random frozen VAE stands in for a trained run
        overrides["base_config"] = {**TINY_MODEL, "frame_size": tuple(frame_size)}
    return build_model(name, model_config(name, frame_size, overrides))


def window(model, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, model.window, *model.frame_size, generator=g) > 0.7).float()


def total_loss(loss):
    return sum(loss.values()) if isinstance(loss, dict) else loss


def optimize(model, optimizers, loss):
    """One update; a dict of losses updates each group from its own loss only, like the trainer."""
    if not isinstance(loss, dict):
        loss = {next(iter(optimizers)): loss}
    groups = model.optimizer_groups()
    for i, (name, value) in enumerate(loss.items()):
        optimizers[name].zero_grad()
        value.backward(inputs=groups[name] if len(loss) > 1 else None, retain_graph=i < len(loss) - 1)
    for name in loss:
        optimizers[name].step()


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("frame_size", [(32, 32), (120, 208), (37, 23)])
def test_shapes_and_finite_loss(name, frame_size):
    model = make(name, frame_size)
    batch = window(model)
    loss, logs = model(batch, step=0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(total_loss(loss)) and all(isinstance(v, float) for v in logs.values())
    seed = batch[:, :model.seed_frames]
    out = model.rollout(seed, 3, torch.Generator().manual_seed(0))
    assert out.shape == (4, 4, *frame_size) and out.min() >= 0 and out.max() <= 1
    ev = model.evaluate(batch, 3, torch.Generator().manual_seed(0))
    assert "iou" in ev and all(v.shape == (4,) and torch.isfinite(v).all() for v in ev.values())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_gradients_reach_every_trainable_parameter(name):
    model = make(name)
    loss, _ = model(window(model), step=0, generator=torch.Generator().manual_seed(0))
    total_loss(loss).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient reaches {missing}"
    grouped = {id(p) for params in model.optimizer_groups().values() for p in params}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_overfits_a_tiny_batch(name):
    model = make(name, **OVERFIT.get(name, {}))
    batch = window(model, batch=4)
    opts = {k: torch.optim.Adam(v, 3e-3) for k, v in model.optimizer_groups().items()}
    key = OVERFIT_METRIC.get(name)
    first = None
    for step in range(150):
        loss, logs = model(batch, step=step, generator=torch.Generator().manual_seed(step))
        value = logs[key] if key else total_loss(loss).item()
        first = first if first is not None else value
        optimize(model, opts, loss)
    assert value < 0.35 * first, (first, value)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_save_load_round_trip(name):
    model = make(name).eval()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict()}, buf)
    buf.seek(0)
    clone = make(name)
    clone.load_state_dict(torch.load(buf, weights_only=True)["model"])
    batch = window(model)
    a = model.evaluate(batch, 2, torch.Generator().manual_seed(5))
    b = clone.eval().evaluate(batch, 2, torch.Generator().manual_seed(5))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_seeded_rollouts_are_deterministic(name):
    model = make(name).eval()
    seed = window(model)[:, :model.seed_frames]
    a = model.rollout(seed, 5, torch.Generator().manual_seed(7), feedback="sample")
    b = model.rollout(seed, 5, torch.Generator().manual_seed(7), feedback="sample")
    c = model.rollout(seed, 5, torch.Generator().manual_seed(8), feedback="sample")
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- through the training loop
@pytest.fixture(scope="module")
def base_run(tiny_data, tmp_path_factory):
    """A gumbel-vae run for code-prior to build on."""
    from discodance.train import train
    run = tmp_path_factory.mktemp("base") / "gumbel"
    train(tiny_data, run, "gumbel-vae", TINY_MODEL, TrainConfig(steps=20, **FAST), progress=False)
    return run


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_trains_twenty_steps_through_the_loop_and_generates(name, tiny_data, base_run, tmp_path):
    from discodance.generate import generate_from_run
    from discodance.checkpoint import load_checkpoint
    from discodance.train import train
    overrides = dict(TINY[name])
    if name == "code-prior":  # a private copy of the base run, deleted after training: the run must stand alone
        overrides["base_run"] = str(shutil.copytree(base_run, tmp_path / "base"))
    run = tmp_path / "run"
    train(tiny_data, run, name, overrides, TrainConfig(steps=20, **FAST), progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if "loss" in r]
    assert len(train_lines) == 4 and all(math.isfinite(r["loss"]) for r in train_lines)
    assert any("val_iou" in r for r in records) and load_checkpoint(run)["step"] == 20
    if name == "gan":
        assert all(r["grad_norm_generator"] > 0 and r["grad_norm_discriminator"] > 0 for r in train_lines)
    if name == "code-prior":  # the frozen VAE it trained with is the base run's, weight for weight
        base = load_checkpoint(tmp_path / "base")["model"]
        saved = load_checkpoint(run)["model"]
        assert all(torch.equal(saved[f"vae.{k}"], v) for k, v in base.items())
        shutil.rmtree(tmp_path / "base")
    result = generate_from_run(run, tmp_path / "gen", num=2, steps=3)
    assert result["shape"] == [2, 4, 32, 32]


@pytest.mark.parametrize("extra", [{}, {"unroll": 3, "mode_seeking": 1.0}])
def test_gan_losses_only_move_their_own_group(extra):
    from discodance.train import step_generator, train_step
    model = make("gan", **extra)
    batch = window(model)
    cfg = TrainConfig(grad_clip=1e9)
    reference = copy.deepcopy(model)
    loss, _ = reference(batch, step=0, generator=step_generator(cfg.seed, 0))
    groups = reference.optimizer_groups()
    expected = {g: torch.autograd.grad(loss[g], groups[g], retain_graph=True) for g in groups}
    opts = {k: torch.optim.SGD(v, lr=0.0) for k, v in model.optimizer_groups().items()}
    train_step(model, model, opts, batch, 0, cfg, 0)
    for g, params in model.optimizer_groups().items():
        for p, e in zip(params, expected[g]):
            torch.testing.assert_close(p.grad, e)


def test_an_unrolled_gan_feeds_its_own_frames_back_and_its_critic_sees_the_window():
    model = make("gan", unroll=3, context=2)
    assert model.window == 5 and model.critic.convs[0].weight.shape[1] == 5
    context = window(model)[:, :2]
    g = torch.Generator().manual_seed(0)
    fake, first_logits, noise = model.unrolled(context, 3, g)
    assert fake.shape == (4, 3, 32, 32)
    torch.testing.assert_close(fake[:, 0], torch.sigmoid(first_logits))
    # frame 2 is generated from (real frame 2, generated frame 1): its gradient reaches frame 1's noise
    noise = noise.clone().requires_grad_()
    one = torch.sigmoid(model.generate(context, None, noise=noise))
    two = model.generate(torch.stack([context[:, 1], one], 1), torch.Generator().manual_seed(1))
    assert torch.autograd.grad(two.sum(), noise)[0].abs().sum() > 0
    _, logs = make("gan", unroll=3, mode_seeking=0.0)(window(model), generator=torch.Generator().manual_seed(0))
    assert "mode_seeking_ratio" not in logs
    _, logs = make("gan", unroll=3, mode_seeking=1.0)(window(model), generator=torch.Generator().manual_seed(0))
    assert logs["mode_seeking_ratio"] > 0


def _zero_gan_noise():
    import discodance.models.gan as gan
    gan.gaussian_noise = lambda shape, generator, device=None: torch.zeros(shape, device=device)


def _gan_grads(net, model, batch, rank):
    from discodance.train import train_step
    opts = {k: torch.optim.SGD(v, lr=0.0) for k, v in model.optimizer_groups().items()}
    train_step(net, model, opts, batch, 0, TrainConfig(grad_clip=1e9), rank)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _gan_ddp_worker(rank, world, batch, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    _zero_gan_noise()  # noise-free generator, so both runs see identical samples; DDP's averaging is under test
    # a file store, not rank 0's TCP store: a rank tearing down while rank 0's store server exits
    # aborted the process now and then ("terminate called without an active exception")
    dist.init_process_group("gloo", init_method=f"file://{out.parent / 'store'}", rank=rank, world_size=world)
    model = make("gan")
    per = len(batch) // world
    grads = _gan_grads(torch.nn.parallel.DistributedDataParallel(model), model, batch[rank * per:(rank + 1) * per], rank)
    if rank == 0:
        torch.save(grads, out)
    dist.barrier()  # both ranks done before teardown: gloo aborts a rank whose peer tears down mid-exchange
    dist.destroy_process_group()


def test_gan_groups_under_two_process_ddp_match_one_process(tmp_path, monkeypatch):
    """Two backward passes (one per optimizer group, inputs=...) after one DDP forward reduce correctly."""
    batch = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.6).float()
    torch.multiprocessing.spawn(_gan_ddp_worker, args=(2, batch, tmp_path / "g.pt"), nprocs=2)
    ddp = torch.load(tmp_path / "g.pt", weights_only=True)
    import discodance.models.gan as gan
    monkeypatch.setattr(gan, "gaussian_noise", lambda shape, generator, device=None: torch.zeros(shape))
    model = make("gan")
    single = _gan_grads(model, model, batch, 0)
    assert set(ddp) == set(single) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name, g in single.items():
        torch.testing.assert_close(ddp[name], g, rtol=1e-4, atol=1e-7, msg=name)


# ----------------------------------------------------------------------------- mixture density head
def test_mdn_log_likelihood_matches_torch_distributions():
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal
    from discodance.models.blocks import MDNHead, mdn_log_prob
    torch.manual_seed(0)
    head = MDNHead(7, 3, 4)
    h, x = torch.randn(5, 7), 2 * torch.randn(5, 3)
    logit_pi, mu, log_sigma = head(h)
    mixture = MixtureSameFamily(Categorical(logits=logit_pi), Independent(Normal(mu, log_sigma.exp()), 1))
    torch.testing.assert_close(mdn_log_prob(logit_pi, mu, log_sigma, x), mixture.log_prob(x))


def test_mdn_samples_use_sigma_as_a_standard_deviation_and_temperature_scales_the_variance():
    from discodance.models.blocks import mdn_sample
    n = 40000
    logit_pi = torch.tensor([[0.0, -30.0]]).expand(n, 2)                  # component 0 almost surely
    mu = torch.tensor([[[1.0, -2.0], [50.0, 50.0]]]).expand(n, 2, 2)
    log_sigma = torch.tensor([[[0.5, 2.0], [1.0, 1.0]]]).log().expand(n, 2, 2)
    for tau, factor in ((1.0, 1.0), (0.25, 0.5)):
        x = mdn_sample(logit_pi, mu, log_sigma, torch.Generator().manual_seed(0), tau)
        torch.testing.assert_close(x.mean(0), torch.tensor([1.0, -2.0]), atol=0.05, rtol=0)
        torch.testing.assert_close(x.std(0), factor * torch.tensor([0.5, 2.0]), atol=0, rtol=0.03)
    assert torch.equal(mdn_sample(logit_pi, mu, log_sigma, None, 0.0)[0], torch.tensor([1.0, -2.0]))


def test_vae_lstm_mdn_rollout_steps_carry_the_training_state():
    """Step-by-step prediction with the carried LSTM state equals the whole-window pass training uses."""
    model = make("vae-lstm-mdn").eval()
    z = torch.randn(2, 6, model.config.latent, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model.dynamics(z)
        _, state = model.dynamics(z[:, :3])
        for t in range(3, 6):
            params, state = model.step(z[:, t - 1], state)
            for a, b in zip(params, full):
                torch.testing.assert_close(a, b[:, t])


# ----------------------------------------------------------------------------- transition prior over codes
def test_transition_prior_samples_follow_a_known_table():
    from discodance.models.blocks import sample_one_hot
    model = make("code-prior", arch="mlp", order=1, hidden=64, seq_len=6)
    n_var, k = model.vae.prior_logits.shape
    g = torch.Generator().manual_seed(0)
    table = torch.softmax(2 * torch.randn(n_var, k, k, generator=g), -1)  # table[n, previous, next]

    def chains(batch, length):
        z = [torch.randint(0, k, (batch, n_var), generator=g)]
        for _ in range(length - 1):
            probs = table[torch.arange(n_var), z[-1]]                      # (batch, N, K)
            z.append(torch.multinomial(probs.view(-1, k), 1, generator=g).view(batch, n_var))
        return torch.nn.functional.one_hot(torch.stack(z, 1), k).float()  # (batch, T, N, K)

    opt = torch.optim.Adam(model.transition.parameters(), 3e-3)
    for _ in range(300):
        codes = chains(512, 6)
        loss = model.prior_loss(codes, codes[:, 1:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    counts = torch.zeros(n_var, k, k)
    with torch.no_grad():
        z = chains(4000, 1)[:, 0]                                          # (B, N, K)
        for _ in range(10):
            nxt = sample_one_hot(model.next_logits(z[:, None]), g)
            counts += torch.einsum("bnj,bnk->njk", z, nxt)
            z = nxt
    empirical = counts / counts.sum(-1, keepdim=True)
    assert (empirical - table).abs().max() < 0.05


def test_code_prior_needs_a_gumbel_vae_run(tiny_data, tmp_path):
    from discodance.train import train
    with pytest.raises(DiscodanceError, match="base_run"):
        model_config("code-prior", (32, 32), {})
    with pytest.raises(DiscodanceError, match="no checkpoint"):
        model_config("code-prior", (32, 32), {"base_run": str(tmp_path / "missing")})
    other = tmp_path / "vrnn"
    train(tiny_data, other, "vrnn", TINY["vrnn"], TrainConfig(steps=1, **FAST), progress=False)
    with pytest.raises(DiscodanceError, match="needs a gumbel-vae run"):
        model_config("code-prior", (32, 32), {"base_run": str(other)})
    with pytest.raises(DiscodanceError, match="frames"):
        model_config("code-prior", (48, 32), {"base_config": {**TINY_MODEL, "frame_size": (32, 32)}})


# ----------------------------------------------------------------------------- settings
def test_gumbel_vae_bfloat16_loss_is_finite():
    model = make("gumbel-vae").to(torch.bfloat16)
    loss, _ = model(window(model).to(torch.bfloat16), step=0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss.float())
    assert all(torch.isfinite(p.grad.float()).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("estimator", ["gumbel", "st-gumbel"])
@pytest.mark.parametrize("prior", ["uniform", "learned"])
def test_gumbel_vae_options_and_bounds(estimator, prior):
    model = make("gumbel-vae", estimator=estimator, prior=prior)
    loss, logs = model(window(model), step=0, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert (model.prior_logits.grad is not None) == (prior == "learned")
    ev = model.evaluate(window(model), 64, torch.Generator().manual_seed(0))
    # the importance-weighted bound with many samples is at least as tight as the ELBO
    assert torch.all(ev["iwae"] <= ev["nelbo"] + 1e-3)


@pytest.mark.parametrize("name,extra", [("vae-lstm-mdn", {}), ("vrnn", {}), ("code-prior", {}),
                                        ("code-prior", {"arch": "mlp", "seq_len": 4, "hidden": 32})])
def test_importance_weighted_bound_is_tighter(name, extra):
    model = make(name, **extra).eval()
    ev = model.evaluate(window(model), 64, torch.Generator().manual_seed(0))
    assert torch.all(ev["iwae"] <= ev["nelbo"] + 1e-3)


@pytest.mark.parametrize("bad", [{"classes": 1}, {"tau0": 0.0}, {"tau_min": -1.0}, {"estimator": "rebar"},
                                 {"prior": "gaussian"}, {"latents": 0}])
def test_gumbel_vae_rejects_impossible_settings(bad):
    with pytest.raises(DiscodanceError):
        model_config("gumbel-vae", (32, 32), bad)


@pytest.mark.parametrize("name,bad", [
    ("vae-lstm-mdn", {"mixtures": 0}), ("vae-lstm-mdn", {"seq_len": 1}), ("vae-lstm-mdn", {"kl_weight": -1.0}),
    ("gan", {"context": 0}), ("gan", {"rec_weight": -1.0}), ("gan", {"d_channels": ()}),
    ("vrnn", {"latent": 0}), ("vrnn", {"seq_len": 0}),
    ("lstm-ae", {"future_frames": 0}), ("lstm-ae", {"rec_weight": -0.5}),
    ("code-prior", {"order": 0}), ("code-prior", {"seq_len": 2, "order": 2}), ("code-prior", {"codes": "mode"}),
    ("code-prior", {"arch": "rnn"}), ("code-prior", {"corrupt": 1.0}), ("code-prior", {"width": 30, "heads": 4}),
    ("code-prior", {"top_p": 0.0}), ("code-prior", {"context": 1}), ("code-prior", {"slide": 4}),
    ("code-prior", {"slide": -1}), ("gan", {"layers": 0}),
])
def test_new_models_reject_impossible_settings(name, bad):
    with pytest.raises(DiscodanceError):
        model_config(name, (32, 32), {**TINY[name], **bad, "base_config": {**TINY_MODEL, "frame_size": (32, 32)}}
                     if name == "code-prior" else {**TINY[name], **bad})


def test_training_cost_counts_the_first_stage_after_the_folder_moved(tiny_data, tmp_path):
    """A compare builds in <out>.partial and renames it: the prior's recorded base_run is gone, the
    base run beside it is found, and its time is still counted (both stages)."""
    import shutil
    from discodance.checkpoint import load_checkpoint
    from discodance.evaluation.full import training_cost
    from discodance.models import load_model
    from discodance.train import train
    built = tmp_path / "out.partial"
    train(tiny_data, built / "vae", "gumbel-vae", TINY["gumbel-vae"], TrainConfig(steps=2, **FAST), progress=False)
    train(tiny_data, built / "prior", "code-prior", {**TINY["code-prior"], "base_run": str(built / "vae")},
          TrainConfig(steps=2, **FAST), progress=False)
    done = tmp_path / "out"
    shutil.move(str(built), str(done))
    ckpt = load_checkpoint(done / "prior")
    cost = training_cost(load_model(ckpt), ckpt, done / "prior")
    base = float(load_checkpoint(done / "vae")["elapsed"])
    assert cost["base_train_seconds"] == base > 0
    assert cost["train_seconds_total"] == pytest.approx(float(ckpt["elapsed"]) + base)

"""The discrete VAE's gradient estimators and bounds, checked against exact enumeration.

Models here are tiny (4x4 "images", 2 categorical variables of 3 classes or 3 Bernoulli bits),
so every expectation over the code can be summed exactly: 3^2 = 9 or 2^3 = 8 codes.

- Burda et al. 2016 (Theorem 1): the importance-weighted bound is a tighter lower bound on
  log p(x) than the ELBO and tightens as the number of samples S grows, reaching log p(x).
- Score function with NVIL (Mnih & Gregor 2014): unbiased for any baseline that does not depend
  on the sample; the input-dependent baseline reduces the variance.
- Gumbel-Softmax (Jang et al. 2017, eq. 2): the pathwise gradient of a *relaxed* objective, so it
  is biased at tau > 0 (we show the bias at tau = 1) and approaches the exact gradient as tau -> 0
  (we test at tau = 0.05). Straight-through estimators are biased for a nonlinear decoder even as
  tau -> 0; they are exact in expectation (plain ST) or as tau -> 0 (ST Gumbel) when the
  objective is multilinear in independent one-hot codes, which is what we test them on.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from discodance.config import TrainConfig
from discodance.errors import DiscodanceError
from discodance.models import build_model, model_config
from discodance.models.blocks import gumbel_softmax, kl_categorical
from discodance.models.estimators import (NVILBaseline, binary_concrete, bits_to_code, code_log_prob,
                                          sample_code)

PIXELS = 16  # 4 x 4 frames


def make(estimator="gumbel", latent="categorical", tau=1.0, sharpen=3.0, **extra):
    """A tiny MLP VAE with random weights multiplied by `sharpen` (peaked likelihoods, a loose ELBO)."""
    torch.manual_seed(1)
    overrides = dict(arch="mlp", estimator=estimator, latent=latent, context=1, horizon=0, prior="learned",
                     mlp_hidden=(8,), latents=2 if latent == "categorical" else 3,
                     classes=3 if latent == "categorical" else 2, tau0=tau, tau_min=tau, **extra)
    model = build_model("gumbel-vae", model_config("gumbel-vae", (4, 4), overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(sharpen)
        model.prior_logits.normal_()
    return model


def images(n, seed=5):
    return (torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def all_codes(model) -> torch.Tensor:
    """Every code of the model as (C, N, K) one-hot tensors."""
    n, k = model.prior_logits.shape
    if model.bernoulli:
        return bits_to_code(torch.tensor(list(itertools.product([0.0, 1.0], repeat=n))))
    return F.one_hot(torch.tensor(list(itertools.product(range(k), repeat=n))), k).float()


def exact_terms(model, x):
    """Per example (B,): exact ELBO and exact log p(x), summing over all codes."""
    codes = all_codes(model)                                                      # (C, N, K)
    logits = model.encode(x)                                                      # (B, N, K)
    log_q = torch.stack([code_log_prob(codes, lg.expand(len(codes), -1, -1)) for lg in logits])   # (B, C)
    ll = torch.stack([model.log_likelihood(model.decode(codes), xi[0].expand(len(codes), -1, -1)) for xi in x])
    log_prior = code_log_prob(codes, model.prior_logits.expand(len(codes), -1, -1))   # (C,)
    kl = kl_categorical(logits, model.prior_logits).sum(-1)                       # (B,)
    elbo = (log_q.exp() * ll).sum(1) - kl
    return elbo, torch.logsumexp(ll + log_prior, 1)


def model_grads(model, loss) -> torch.Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, model.optimizer_groups()["model"])])


def encoder_mask(model) -> torch.Tensor:
    enc = {id(p) for p in model.encoder.parameters()}
    return torch.cat([torch.full((p.numel(),), id(p) in enc) for p in model.optimizer_groups()["model"]])


def estimated_grads(model, x, chunks=10, per_chunk=5000, seed=0):
    """Mean and standard error over `chunks` of the model's own training gradient on copies of x.

    NVIL's variance normalisation divides the encoder's gradient by a known scale; it is undone
    here, so what is compared is the direction and size of the underlying unbiased estimator."""
    g, mask, out = torch.Generator().manual_seed(seed), encoder_mask(model), []
    if model.config.estimator == "score-function":
        for _ in range(5):  # warm up the running mean / variance so the scale is not 1
            model(x.expand(100, -1, -1, -1), 0, g)
    for _ in range(chunks):
        scale = float(model.nvil.scale()) if hasattr(model, "nvil") else 1.0
        loss, _ = model(x.expand(per_chunk, -1, -1, -1), 0, g)
        grad = model_grads(model, loss["model"] if isinstance(loss, dict) else loss)
        grad[mask] *= scale
        out.append(grad)
    stacked = torch.stack(out)
    return stacked.mean(0), stacked.std(0) / math.sqrt(chunks)


def exact_grads(model, x) -> torch.Tensor:
    elbo, _ = exact_terms(model, x)
    return model_grads(model, -elbo.mean() / PIXELS)      # the training loss: nats per pixel


# ----------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
def test_importance_weighted_bound_sits_between_elbo_and_log_likelihood(latent):
    model, x = make(latent=latent, sharpen=2.0).eval(), images(64)
    with torch.no_grad():
        elbo, log_px = exact_terms(model, x)
    assert float((log_px - elbo).mean()) > 0.3             # the toy has a real ELBO gap
    bounds = {s: model.evaluate(x, s, torch.Generator().manual_seed(s)) for s in (1, 10, 100, 1000)}
    for s in (100, 1000):  # as log-likelihoods: IW bound >= ELBO (per example up to the ELBO's MC noise)
        assert float(bounds[s]["iwae"].mean()) < float(bounds[s]["nelbo"].mean())
        assert torch.all(bounds[s]["iwae"] <= bounds[s]["nelbo"] + 0.1)
    iwae = [float(bounds[s]["iwae"].mean()) for s in (1, 10, 100, 1000)]
    assert iwae[0] > iwae[1] > iwae[2] >= iwae[3] - 0.01   # tightens as S grows (on average)
    assert iwae[3] >= float(-log_px.mean()) - 0.05         # an upper bound on -log p(x) (up to MC noise)
    assert iwae[3] == pytest.approx(float(-log_px.mean()), abs=0.05)
    # the reported negative ELBO (mean over samples + analytic KL) estimates the exact one
    assert float(bounds[1000]["nelbo"].mean()) == pytest.approx(float(-elbo.mean()), abs=0.05)


# ----------------------------------------------------------------------------- unbiasedness
@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
def test_score_function_gradient_is_unbiased(latent):
    model, x = make("score-function", latent), images(1)
    exact = exact_grads(model, x)
    mean, se = estimated_grads(model, x)
    assert float(model.nvil.scale()) > 1.5                 # normalisation was active, and undone above
    # E||mean - exact||^2 = ||se||^2 for an unbiased estimator; 2x leaves room for noise only
    assert (mean - exact).norm() < 2 * se.norm() + 1e-3 * exact.norm()


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
def test_relaxed_gumbel_gradient_approaches_exact_as_tau_goes_to_zero(latent):
    x = images(1)
    errors = {}
    for tau in (1.0, 0.05):
        model = make("gumbel", latent, tau)
        exact = exact_grads(model, x)
        mean, se = estimated_grads(model, x)
        errors[tau] = float((mean - exact).norm() / exact.norm())
    assert errors[0.05] < 0.05                             # small at a small temperature
    assert errors[1.0] > 4 * errors[0.05]                  # the relaxation's bias at tau = 1


def test_straight_through_is_biased_on_a_nonlinear_decoder():
    """Documents a known property (why the paper's ST rows trail Gumbel-S.): not a bug."""
    x = images(1)
    for estimator, tau in (("st", 1.0), ("st-gumbel", 0.05)):
        model = make(estimator, "categorical", tau)
        exact = exact_grads(model, x)
        mean, se = estimated_grads(model, x)
        assert (mean - exact).norm() > 5 * se.norm() and (mean - exact).norm() > 0.1 * exact.norm()


def multilinear_reward(code: torch.Tensor) -> torch.Tensor:
    """f(z) = sum_{i<j} z_i^T R_ij z_j + sum_i c_i^T z_i: linear in each variable's code separately."""
    g = torch.Generator().manual_seed(11)
    n, k = code.shape[-2:]
    r = torch.randn(n, n, k, k, generator=g) * torch.ones(n, n).triu(1)[:, :, None, None]
    pair = torch.einsum("bik,ijkl,bjl->b", code, r, code)
    return pair + (code * torch.randn(n, k, generator=g)).sum((-2, -1))


@pytest.mark.parametrize("bernoulli", [False, True])
@pytest.mark.parametrize("estimator,tau,tol", [("st", 1.0, 0.02), ("st-gumbel", 0.05, 0.05),
                                               ("gumbel", 0.05, 0.05), ("score-function", 1.0, 0.02)])
def test_estimators_match_exact_gradient_of_a_multilinear_objective(estimator, tau, tol, bernoulli):
    """E_q[f(z)] for f linear in each independent one-hot: all estimators agree with enumeration."""
    n, k = (3, 2) if bernoulli else (2, 3)
    g = torch.Generator().manual_seed(3)
    theta = (torch.randn(n, k, generator=g) * (torch.tensor([1.0, 0.0]) if bernoulli else 1)).requires_grad_()
    codes = (bits_to_code(torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))) if bernoulli else
             F.one_hot(torch.tensor(list(itertools.product(range(k), repeat=n))), k).float())
    q = code_log_prob(codes, theta.expand(len(codes), -1, -1)).exp()
    exact, = torch.autograd.grad((q * multilinear_reward(codes)).sum(), theta)
    logits = theta.expand(200_000, -1, -1)
    z = sample_code(logits, estimator, tau, g, bernoulli)
    f = multilinear_reward(z)
    if estimator == "score-function":
        f = f.detach() * code_log_prob(z, logits)          # the likelihood-ratio surrogate
    est, = torch.autograd.grad(f.mean(), theta)
    assert (est - exact).norm() < tol * exact.norm() + 0.01


# ----------------------------------------------------------------------------- NVIL
def test_nvil_baseline_reduces_variance_and_keeps_the_gradient():
    """Toy: q(z) = Cat(softmax(theta)), K = 4, the same for every input x; the signal is
    f(x, z) = o(x) + r_z with large input-dependent offsets o(x). The exact gradient is
    pi * (r - pi . r); the offsets only add variance, which centring (c) and the input-dependent
    baseline C(x) remove."""
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(16, 8, generator=g)
    offsets = 50 * torch.tanh(xs @ torch.randn(8, generator=g)) - 100              # (16,), nats
    r, theta = torch.tensor([1.0, -2.0, 0.5, 3.0]), torch.tensor([0.3, -0.5, 0.0, 0.8])
    pi = theta.softmax(0)
    exact = pi * (r - (pi * r).sum())

    def draw(n):
        i = torch.randint(0, 16, (n,), generator=g)
        z = torch.multinomial(pi, n, replacement=True, generator=g)
        return xs[i], offsets[i] + r[z], F.one_hot(z, 4).float() - pi            # x, f, grad log q

    nvil = NVILBaseline(8, hidden=32, normalise=True)
    opt = torch.optim.Adam(nvil.parameters(), lr=3e-2)
    for _ in range(400):
        x, f, _ = draw(64)
        _, loss = nvil(x, f)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, f, score = draw(50_000)
    nvil.eval()
    advantage, _ = nvil(x, f)
    estimates = {"plain": f[:, None] * score, "centred": (f - nvil.mean)[:, None] * score,
                 "nvil": advantage[:, None] * score}
    variance = {k: float(v.var(0).sum()) for k, v in estimates.items()}
    for name, e in estimates.items():  # all unbiased: within 5 standard errors of the exact gradient
        se = e.std(0) / math.sqrt(len(e))
        assert torch.all((e.mean(0) - exact).abs() < 5 * se + 1e-3), name
    assert variance["centred"] < variance["plain"] / 2
    assert variance["nvil"] < variance["centred"] / 20
    # variance normalisation tracks the residual's scale (a running average over the last few
    # training batches, while the baseline was still improving: hence the loose tolerance)
    assert float(nvil.scale()) == pytest.approx(float(advantage.pow(2).mean().sqrt()), rel=0.5)


def test_nvil_statistics_do_not_move_in_eval_mode():
    nvil = NVILBaseline(3).eval()
    nvil(torch.randn(5, 3), torch.randn(5))
    assert float(nvil.mean) == 0 and float(nvil.var) == 1 and int(nvil.batches) == 0


# ----------------------------------------------------------------------------- Bernoulli pieces
def test_binary_concrete_has_the_two_class_gumbel_softmax_law():
    log_odds = torch.tensor([-1.5, 0.0, 0.7, 2.5])
    g = torch.Generator().manual_seed(0)
    y = binary_concrete(log_odds.expand(40_000, -1), 0.5, generator=g)
    two = gumbel_softmax(torch.stack([log_odds, torch.zeros(4)], -1).expand(40_000, -1, -1), 0.5, generator=g)[..., 0]
    torch.testing.assert_close((y > 0.5).float().mean(0), torch.sigmoid(log_odds), atol=0.01, rtol=0)
    torch.testing.assert_close(y.mean(0), two.mean(0), atol=0.01, rtol=0)
    hard = binary_concrete(log_odds.expand(8, -1), 0.5, hard=True, generator=g)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("estimator", ["st", "score-function"])
def test_new_estimators_train_bernoulli_codes_through_the_loop(tiny_data, tmp_path, estimator):
    """The library's trainer with the conv nets; score-function brings a second optimizer group."""
    from discodance.train import train
    overrides = {"channels": (8, 16), "hidden": 32, "latents": 6, "classes": 2, "latent": "bernoulli",
                 "estimator": estimator}
    cfg = TrainConfig(steps=3, batch_size=4, eval_every=3, ckpt_every=3, log_every=1, eval_batches=1, warmup_steps=1)
    ckpt = train(tiny_data, tmp_path / "run", "gumbel-vae", overrides, cfg, progress=False)
    state = torch.load(ckpt, weights_only=True)["model"]
    assert ("nvil.mean" in state) == (estimator == "score-function")


@pytest.mark.parametrize("bad", [{"latent": "bernoulli"}, {"latent": "gaussian"}, {"arch": "rnn"},
                                 {"estimator": "reinforce"}, {"mlp_hidden": ()}, {"nvil_alpha": 1.0},
                                 {"baseline_hidden": 0}])
def test_new_settings_are_validated(bad):
    with pytest.raises(DiscodanceError):
        model_config("gumbel-vae", (28, 28), bad)

"""The transformer prior's mixture head: what a mixture of factorised components models that
independent variables cannot, its log-probability and sampling against the mixture they describe,
the fused picked log-softmax, and runs saved before the mixture (one component). Small tensors."""
import json

import pytest
import torch
import torch.nn.functional as F

from discodance.checkpoint import load_checkpoint
from discodance.config import TrainConfig
from discodance.models import build_model, load_model, model_config
from discodance.models.code_transformer import (CodeTransformer, NextCodes, PickedLogSoftmax, mixture_log_prob,
                                                pick_component, sample_codes)
from discodance.train import train

from conftest import TINY_MODEL
from test_code_prior import K, prior

pytestmark = pytest.mark.usefixtures("one_thread")


def together_process(batch, length, generator, variables=4):
    """Codes (batch, length, variables) that move together: at each step, with probability 1/2,
    every variable keeps its class, else every variable moves to its next class (mod K)."""
    z = [torch.randint(0, K, (batch, variables), generator=generator)]
    for _ in range(length - 1):
        move = torch.rand(batch, 1, generator=generator) < 0.5
        z.append((z[-1] + move.long()) % K)
    return torch.stack(z, 1)


def test_a_mixture_moves_variables_together_where_independent_variables_cannot():
    """Each variable of the process keeps its class half the time, but all switch together.
    Independent variables (mixture 1) learn the right rate and switch out of step; a mixture of
    components samples whole steps (all keep or all move)."""
    g = torch.Generator().manual_seed(0)
    split = {}
    for mixture in (1, 4):
        torch.manual_seed(0)
        base = {**TINY_MODEL, "latents": 4, "classes": K, "frame_size": (16, 16)}
        model = build_model("code-prior", model_config("code-prior", (16, 16), {
            "base_config": base, "context": 8, "width": 32, "blocks": 1, "heads": 2, "prompt": 2, "mixture": mixture}))
        opt = torch.optim.Adam(model.gpt.parameters(), 1e-2)
        for _ in range(150):
            codes = together_process(64, 9, g)
            loss = model.prior_loss(codes, F.one_hot(codes[:, 1:], K).float()).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        prompt = together_process(200, 2, g)
        sampled = torch.cat([prompt[:, -1:], model.sample_next(prompt, 30, torch.Generator().manual_seed(1))], 1)
        moved = (sampled[:, 1:] != sampled[:, :-1]).float()                   # (B, T, N)
        split[mixture] = ((moved.sum(-1) > 0) & (moved.sum(-1) < 4)).float().mean().item()
        assert 0.35 < moved.mean().item() < 0.65, (mixture, moved.mean().item())   # both learn the rate
    assert split[4] < 0.05, split     # steps where some variables move and others do not
    assert split[1] > 0.6, split      # independent variables: 1 - 2 / 2**4 = 0.875 expected


def test_picked_log_softmax_has_the_value_and_gradient_of_gathering_from_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 7, dtype=torch.double, generator=g, requires_grad=True)
    index = torch.randint(0, 7, (3, 1, 5, 1), generator=g).expand(3, 4, 5, 1)   # one code, every component
    assert torch.autograd.gradcheck(lambda x: PickedLogSoftmax.apply(x, index), (logits,))
    torch.testing.assert_close(PickedLogSoftmax.apply(logits, index),
                               torch.log_softmax(logits, -1).gather(-1, index).squeeze(-1))


def test_mixture_sampling_and_log_prob_agree_with_the_mixture_they_describe():
    """On 2 variables of 3 classes, 3 components: log-probabilities sum to 1 over all 9 codes, and
    the frequencies of 20,000 samples match them."""
    g = torch.Generator().manual_seed(0)
    dist = NextCodes(torch.randn(3, generator=g) * 2, torch.randn(3, 2, 3, generator=g) * 2)
    codes = torch.cartesian_prod(torch.arange(3), torch.arange(3))           # (9, 2)
    log_p = mixture_log_prob(NextCodes(dist.mix.expand(9, 3), dist.logits.expand(9, 3, 2, 3)), F.one_hot(codes, 3).float())
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    many = NextCodes(dist.mix.expand(20000, 3), dist.logits.expand(20000, 3, 2, 3))
    drawn = sample_codes(pick_component(many, g), g)                          # (20000, 2)
    freq = torch.bincount(drawn[:, 0] * 3 + drawn[:, 1], minlength=9).float() / 20000
    torch.testing.assert_close(freq, log_p.exp(), atol=0.015, rtol=0)
    one = NextCodes(torch.zeros(1), dist.logits[:1])                          # one component: plain product
    expected = F.log_softmax(dist.logits[0], -1)[[0, 1], codes].sum(-1)
    got = mixture_log_prob(NextCodes(one.mix.expand(9, 1), one.logits.expand(9, 1, 2, 3)), F.one_hot(codes, 3).float())
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("mixture", [1, 5])
@pytest.mark.parametrize("batch", [1, 9])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_drawn_logits_are_the_picked_components_of_the_full_head(mixture, batch, temperature):
    """A single rollout computes only its drawn component's logits: the same draw and the same
    logits as computing every component's and picking one, from the same generator state."""
    torch.manual_seed(0)
    net = CodeTransformer(latents=3, classes=K, context=8, width=16, layers=1, heads=2, mixture=mixture).eval()
    for p in net.parameters():                     # untrained heads are near-uniform: make components differ
        p.data.normal_(0, 1)
    h = torch.randn(batch, 16)
    full = pick_component(net.next_codes(h), torch.Generator().manual_seed(3), temperature)   # (B, N, K)
    drawn = net.drawn_logits(h, torch.Generator().manual_seed(3), temperature)
    assert drawn.shape == (batch, 3, K)
    torch.testing.assert_close(drawn, full, rtol=1e-5, atol=1e-5)
    if mixture > 1 and batch == 1:                 # and the draw matters: another seed picks another component
        others = [net.drawn_logits(h, torch.Generator().manual_seed(s), temperature) for s in range(20)]
        assert temperature == 0 or any(not torch.allclose(o, drawn) for o in others)


def test_generate_returns_an_ordinary_tensor():
    """generate() samples in inference mode; its codes must still be usable like any tensor."""
    net = CodeTransformer(latents=3, classes=K, context=8, width=16, layers=1, heads=2, mixture=2).eval()
    codes = net.generate(torch.zeros(2, 3, 3, dtype=torch.long), 5, torch.Generator().manual_seed(0))
    assert not codes.is_inference() and codes.shape == (2, 5, 3)
    codes[:, 0] = 0                                # an in-place edit outside inference mode


def test_a_run_saved_before_the_mixture_head_loads_as_one_component():
    model = prior("transformer", context=6, mixture=1).eval()
    config = {k: v for k, v in vars(model.config).items() if k != "mixture"}   # as an older discodance saved it
    old = load_model({"config": {"model": "code-prior", "model_config": config}, "model": model.state_dict()})
    assert old.config.mixture == 1 and old.gpt.mix_head is None
    seed = (torch.rand(2, model.seed_frames, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.testing.assert_close(old.rollout(seed, 20, torch.Generator().manual_seed(5), feedback="probs"),
                               model.rollout(seed, 20, torch.Generator().manual_seed(5), feedback="probs"))
    mixed = prior("transformer", context=6, mixture=3).eval()
    again = load_model({"config": {"model": "code-prior", "model_config": vars(mixed.config)}, "model": mixed.state_dict()})
    assert again.config.mixture == 3 and again.gpt.mix_head is not None


def test_indices_and_one_hot_targets_give_the_same_log_prob_and_gradient():
    """Training passes class indices (the fused path); one-hot targets go the general way."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(2, 5, 4, generator=g, requires_grad=True)
    logits = torch.randn(2, 5, 4, 3, 6, generator=g, requires_grad=True)
    codes = torch.randint(0, 6, (2, 5, 3), generator=g)
    by_index = mixture_log_prob(NextCodes(mix, logits), codes)
    grads = torch.autograd.grad(by_index.sum(), (mix, logits))
    by_one_hot = mixture_log_prob(NextCodes(mix, logits), F.one_hot(codes, 6).float())
    torch.testing.assert_close(by_index, by_one_hot)
    for a, b in zip(grads, torch.autograd.grad(by_one_hot.sum(), (mix, logits))):
        torch.testing.assert_close(a, b)


def test_a_run_saved_before_the_mixture_head_resumes_training_as_one_component(tiny_data, tmp_path):
    fast = dict(batch_size=4, eval_every=100, ckpt_every=2, log_every=2, eval_batches=1, warmup_steps=1)
    train(tiny_data, tmp_path / "base", "gumbel-vae", TINY_MODEL, TrainConfig(steps=2, **fast), progress=False)
    run = tmp_path / "prior"
    sets = {"base_run": str(tmp_path / "base"), "context": 4, "width": 16, "blocks": 1, "heads": 2, "mixture": 1}
    train(tiny_data, run, "code-prior", sets, TrainConfig(steps=2, **fast), progress=False)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)             # as an older discodance saved it
    del ckpt["config"]["model_config"]["mixture"]
    torch.save(ckpt, run / "checkpoint.pt")
    saved = json.loads((run / "config.json").read_text())
    del saved["model_config"]["mixture"]
    (run / "config.json").write_text(json.dumps(saved))
    train(tiny_data, run, cfg=TrainConfig(steps=4, **fast), resume=True, progress=False)
    resumed = load_checkpoint(run)
    assert resumed["step"] == 4 and load_model(resumed).config.mixture == 1

"""code-prior's fast decoder (models/fast_decoder.py): distillation makes it agree with the base
decoder, it is the only part a training step changes besides the prior, `decoder=base` decodes
exactly as the base does, and runs saved before it existed load and decode with the base."""
import pytest
import torch
import torch.nn.functional as F

from discodance.models import build_model, model_config
from discodance.models.blocks import ConvDecoder
from discodance.models.fast_decoder import FastTop, decode_fast, distillation_loss, pick_positions

from conftest import TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = (16, 16)


def prior(**extra):
    torch.manual_seed(0)
    base = {**TINY_MODEL, "frame_size": SIZE}
    overrides = {"base_config": base, "context": 6, "width": 32, "blocks": 2, "heads": 2, **extra}
    return build_model("code-prior", model_config("code-prior", SIZE, overrides))


def seed_frames(model, batch=2):
    return (torch.rand(batch, model.seed_frames, *SIZE, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def random_codes(model, count, generator):
    v = model.vae.config
    return F.one_hot(torch.randint(0, v.classes, (count, v.latents), generator=generator), v.classes).float()


def test_distillation_makes_the_fast_block_agree_with_the_base_decoder():
    model = prior()
    decoder, g = model.vae.decoder, torch.Generator().manual_seed(0)
    held_out = random_codes(model, 256, g).flatten(1)
    _, before = distillation_loss(decoder, model.fast, held_out)
    opt = torch.optim.Adam(model.fast.parameters(), 1e-2)
    for _ in range(300):
        loss, _ = distillation_loss(decoder, model.fast, random_codes(model, 32, g).flatten(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, after = distillation_loss(decoder, model.fast, held_out)
    assert after["distil_kl"] < 0.1 * before["distil_kl"], (before, after)
    # a random teacher's pixels sit near probability 1/2, so some still fall on the other side
    assert after["distil_flips"] < 0.25 * before["distil_flips"], (before, after)
    assert all(p.grad is None for p in decoder.parameters())                    # the teacher stays as it was


def test_a_training_step_distils_the_fast_block_and_leaves_the_base_frozen():
    model = prior().train()
    batch = (torch.rand(4, model.window, *SIZE, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    loss, logs = model(batch, generator=torch.Generator().manual_seed(2))
    loss.backward()
    assert {"distil_kl", "distil_flips"} <= set(logs) and logs["distil_kl"] >= 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fast.parameters())
    assert all(not p.requires_grad for p in model.vae.parameters())
    grouped = {id(p) for ps in model.optimizer_groups().values() for p in ps}
    assert {id(p) for p in model.fast.parameters()} <= grouped


def test_decoder_base_decodes_exactly_as_a_prior_without_a_fast_block():
    with_fast, without = prior(decoder="base").eval(), prior(fast_channels=0).eval()
    assert without.fast is None and with_fast.fast is not None
    without.load_state_dict({k: v for k, v in with_fast.state_dict().items() if not k.startswith("fast.")})
    seed = seed_frames(with_fast)
    a = with_fast.rollout(seed, 30, torch.Generator().manual_seed(3), feedback="probs")
    b = without.rollout(seed, 30, torch.Generator().manual_seed(3), feedback="probs")
    assert torch.equal(a, b)
    with_fast.config.decoder = "fast"
    c = with_fast.rollout(seed, 30, torch.Generator().manual_seed(3), feedback="probs")
    assert c.shape == a.shape and not torch.equal(a, c)                         # an untrained fast block differs


def test_a_run_saved_before_the_fast_block_loads_and_decodes_with_the_base():
    from discodance.models import load_model
    model = prior().eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fast.")}
    config = {k: v for k, v in vars(model.config).items() if k not in ("fast_channels", "distil_frames", "decoder")}
    old = load_model({"config": {"model": "code-prior", "model_config": config}, "model": state})
    assert old.fast is None and old.config.fast_channels == 0
    seed = seed_frames(model)
    model.config.decoder = "base"
    torch.testing.assert_close(old.rollout(seed, 20, torch.Generator().manual_seed(5), feedback="probs"),
                               model.rollout(seed, 20, torch.Generator().manual_seed(5), feedback="probs"))


@pytest.mark.parametrize("size,channels", [((16, 16), (8, 16)), ((12, 20), (8, 16)), ((24, 40), (4, 8, 16))])
def test_the_fast_block_decodes_any_frame_size_the_base_does(size, channels):
    decoder = ConvDecoder(10, size, channels=channels, hidden=16)
    top = FastTop(decoder.trunk_channels, 4)
    z = torch.randn(3, 10)
    assert decode_fast(decoder, top, z).shape == decoder(z).shape == (3, 1, *size)


@pytest.mark.parametrize("shape,margin", [((3, 10), 1), ((1, 5), 2), ((2, 3), 4)])
def test_picked_positions_keep_the_margin_inside_the_grid(shape, margin):
    rows, steps = pick_positions(shape, 500, margin, torch.Generator().manual_seed(0))
    m = min(margin, (shape[1] - 1) // 2)
    assert rows.min() >= 0 and rows.max() < shape[0]
    assert steps.min() >= m and steps.max() <= shape[1] - 1 - m
    assert len(set(steps.tolist())) == shape[1] - 2 * m                        # every allowed step is drawn


def test_evaluate_reports_how_often_the_fast_block_disagrees_only_when_there_is_one():
    batch = (torch.rand(3, prior().window, *SIZE, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    with_fast = prior().eval().evaluate(batch, samples=2, generator=torch.Generator().manual_seed(0))
    without = prior(fast_channels=0).eval().evaluate(batch, samples=2, generator=torch.Generator().manual_seed(0))
    assert with_fast["fast_flips"].shape == (3,) and ((0 <= with_fast["fast_flips"]) & (with_fast["fast_flips"] <= 1)).all()
    assert "fast_flips" not in without
    torch.testing.assert_close(with_fast["nelbo"], without["nelbo"])             # the bound is the base decoder's

"""Gumbel-Softmax estimator invariants (Jang, Gu & Poole 2017)."""
import math

import pytest
import torch

from discodance.models.blocks import (gumbel_noise, gumbel_softmax, kl_categorical, sample_one_hot,
                                      temperature_at)


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_relaxed_sample_argmax_follows_softmax(tau):
    logits = torch.tensor([1.5, 0.2, -0.7, 0.0, 2.0])
    g = torch.Generator().manual_seed(0)
    y = gumbel_softmax(logits.expand(40000, -1), tau, generator=g)
    freq = torch.bincount(y.argmax(-1), minlength=5).float() / len(y)
    torch.testing.assert_close(freq, logits.softmax(-1), atol=0.01, rtol=0)  # ~4 sigma at n=40000
    torch.testing.assert_close(y.sum(-1), torch.ones(len(y)))


def test_hard_sample_is_one_hot_and_carries_soft_gradient():
    logits = torch.randn(6, 3, 7, requires_grad=True)
    weights = torch.randn(6, 3, 7)
    hard = gumbel_softmax(logits, 0.7, hard=True, generator=torch.Generator().manual_seed(1))
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.all(hard.detach().sum(-1) == 1)
    (hard * weights).sum().backward()
    grad_hard = logits.grad.clone()
    logits.grad = None
    soft = gumbel_softmax(logits, 0.7, hard=False, generator=torch.Generator().manual_seed(1))
    (soft * weights).sum().backward()
    torch.testing.assert_close(grad_hard, logits.grad)
    assert torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))


def test_kl_to_uniform_matches_closed_form():
    logits = torch.randn(4, 10, 6)
    q = logits.softmax(-1)
    expected = (q * q.log()).sum(-1) + math.log(6)  # KL(q || U) = log K - H(q)
    torch.testing.assert_close(kl_categorical(logits, torch.zeros(10, 6)), expected)


def test_kl_is_finite_for_saturated_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    kl = kl_categorical(logits, torch.zeros(1, 3))
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(kl, torch.tensor([math.log(3)]))


def test_noise_never_infinite_even_at_extreme_uniforms(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor([0.0, 1.0, 0.5]))
    g = gumbel_noise((3,), None)
    assert torch.isfinite(g).all()


def test_bfloat16_sample_is_finite_and_keeps_dtype():
    logits = torch.randn(8, 4, 5, dtype=torch.bfloat16, requires_grad=True)
    y = gumbel_softmax(logits, 0.5, hard=True, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.bfloat16
    y.float().pow(2).sum().backward()
    assert torch.isfinite(logits.grad.float()).all()


def test_temperature_schedule():
    assert temperature_at(0, 1.0, 0.5, 1e-4) == 1.0
    assert temperature_at(10**6, 1.0, 0.5, 1e-4) == 0.5
    assert temperature_at(999, 1.0, 0.5, 1e-3, every=500) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError):
        gumbel_softmax(torch.zeros(2, 3), 0.0)


def test_sample_one_hot_temperature_zero_is_argmax_and_seeded():
    logits = torch.randn(16, 4, 9)
    assert torch.equal(sample_one_hot(logits, temperature=0).argmax(-1), logits.argmax(-1))
    a = sample_one_hot(logits, torch.Generator().manual_seed(3))
    b = sample_one_hot(logits, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(7, 2), (5, 3, 10), (4, 20, 10), (2, 3, 15), (3, 16), (2, 4, 33)])
def test_class_axis_softmax_equals_torch_and_has_its_gradient(shape):
    from discodance.models.blocks import log_softmax_classes, softmax_classes
    x = (torch.randn(shape) * 5).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    w = torch.randn(shape)
    got, want = log_softmax_classes(x), y.log_softmax(-1)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(softmax_classes(x), y.softmax(-1), atol=1e-7)
    (got * w).sum().backward()
    (want * w).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-6)


@pytest.mark.parametrize("out_channels", [1, 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pixel_head_is_the_3x3_convolution_with_its_gradients(out_channels, layout):
    """The decoder's last layer computed as a depthwise convolution summed over channels: the same
    values and gradients as F.conv2d with its own weights (the state dict is a Conv2d's)."""
    import torch.nn.functional as F
    from discodance.models.blocks import PixelHead
    torch.manual_seed(0)
    head = PixelHead(5, out_channels)
    assert set(head.state_dict()) == {"weight", "bias"} and head.weight.shape == (out_channels, 5, 3, 3)
    x = torch.randn(3, 5, 7, 6).contiguous(memory_format=layout).requires_grad_(True)
    w, b = head.weight.detach().clone().requires_grad_(True), head.bias.detach().clone().requires_grad_(True)
    g = torch.randn(3, out_channels, 7, 6)
    head(x).backward(g)
    got = (x.grad.clone(), head.weight.grad, head.bias.grad)
    x.grad = None
    want_y = F.conv2d(x, w, b, padding=1)
    want_y.backward(g)
    assert torch.allclose(head(x), want_y, atol=1e-5)
    for a, c in zip(got, (x.grad, w.grad, b.grad)):
        assert torch.allclose(a, c, atol=1e-4, rtol=1e-5)

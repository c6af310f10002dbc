"""The code prior's transformer: what it can model that an order-2 MLP cannot, its causal mask, the
key/value cache against full recomputation, sliding-window rollouts, sampling filters, seeded
determinism, and the frame-content cache of the frozen encoder. Small tensors, one thread."""
import pytest
import torch
import torch.nn.functional as F

from discodance.models import build_model, model_config
from discodance.models.code_transformer import CodeTransformer, NextCodes, corrupt_codes, filter_logits, sample_codes

from conftest import TINY_MODEL

N_VAR, K, LAG = 2, 4, 5
TABLE = torch.tensor([[1, 2, 3, 0], [2, 0, 3, 1]])   # z_t,n = TABLE[n, z_t-5,n]


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster and steadier


def prior(arch, base_extra=None, **extra):
    torch.manual_seed(0)
    base = {**TINY_MODEL, "latents": N_VAR, "classes": K, "frame_size": (16, 16), **(base_extra or {})}
    overrides = {"arch": arch, "base_config": base, "context": 16, "width": 32, "blocks": 2, "heads": 2,
                 "prompt": LAG, "order": 2, "seq_len": 16, "hidden": 64, **extra}
    return build_model("code-prior", model_config("code-prior", (16, 16), overrides))


def lag_process(batch, length, generator):
    """Codes (batch, length, N) whose first LAG steps are uniform and then follow TABLE at lag LAG:
    z_t-1 and z_t-2 say nothing about z_t, so an order-2 prior can only guess."""
    z = list(torch.randint(0, K, (batch, LAG, N_VAR), generator=generator).unbind(1))
    for _ in range(length - LAG):
        z.append(TABLE[torch.arange(N_VAR), z[-LAG]])
    return torch.stack(z, 1)


def follows_table(codes):
    """Share of steps t >= LAG whose codes are TABLE of the codes LAG steps before."""
    expected = TABLE[torch.arange(N_VAR), codes[:, :-LAG]]
    return (codes[:, LAG:] == expected).float().mean().item()


def test_the_transformer_learns_a_lag_5_process_that_an_order_2_prior_cannot():
    g = torch.Generator().manual_seed(0)
    results = {}
    for arch in ("transformer", "mlp"):
        model = prior(arch)
        net = model.gpt if arch == "transformer" else model.transition
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(150):
            codes = lag_process(32, 17, g)
            loss = model.prior_loss(codes, F.one_hot(codes[:, model.first:], K).float()).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        prompt = lag_process(200, LAG, g)
        sampled = torch.cat([prompt, model.sample_next(prompt, 40, torch.Generator().manual_seed(1))], 1)
        results[arch] = follows_table(sampled)   # 40 steps: the transformer's window slides twice
    assert results["transformer"] > 0.95, results
    assert results["mlp"] < 0.5, results       # chance is 1/K = 0.25


@pytest.mark.parametrize("mixture", [1, 3])
def test_changing_a_later_code_never_changes_earlier_logits(mixture):
    net = CodeTransformer(N_VAR, K, context=12, width=32, layers=2, heads=4, mixture=mixture).eval()
    codes = torch.randint(0, K, (3, 12, N_VAR), generator=torch.Generator().manual_seed(0))
    changed = codes.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % K
    a, b = net(codes), net(changed)
    assert a.logits.shape == (3, 12, mixture, N_VAR, K) and a.mix.shape == (3, 12, mixture)
    torch.testing.assert_close(a.at(slice(None), slice(0, 7)), b.at(slice(None), slice(0, 7)), rtol=0, atol=0)
    assert not torch.allclose(a.logits[:, 7:], b.logits[:, 7:])


def cat(dists, dim=1):
    return NextCodes(torch.cat([d.mix for d in dists], dim), torch.cat([d.logits for d in dists], dim))


@pytest.mark.parametrize("mixture", [1, 3])
def test_key_value_cache_gives_the_logits_of_full_recomputation(mixture):
    net = CodeTransformer(N_VAR, K, context=12, width=32, layers=3, heads=4, mixture=mixture).eval()
    codes = torch.randint(0, K, (3, 12, N_VAR), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = net(codes)
        cache = net.new_cache(3)
        steps = [net(codes[:, :4], cache)]                      # a prompt of 4 steps, then one at a time
        steps += [net(codes[:, t:t + 1], cache) for t in range(4, 12)]
        assert cache.length == 12
        cache = net.new_cache(3)                                # generation's one-position step
        stepped = [net(codes[:, :4], cache)]
        stepped += [NextCodes(*(x[:, None] for x in net.step(codes[:, t], cache))) for t in range(4, 12)]
        cache = net.new_cache(3)
        net(codes[:, :6], cache)
        two = net(codes[:, 6:8], cache)                         # several new steps at once
    torch.testing.assert_close(cat(steps), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cat(stepped), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two, full.at(slice(None), slice(6, 8)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("slide,keep", [(0, 4), (2, 6), (7, 1)])   # slide 0: context // 2
def test_sliding_window_rollout_matches_recomputing_each_window(slide, keep):
    """generate() re-encodes the last context - slide codes whenever the cache is full; a reference
    that recomputes its whole window at every step picks the same (greedy) codes."""
    C = 8
    net = CodeTransformer(N_VAR, K, context=C, width=32, layers=2, heads=4).eval()
    prompt = torch.randint(0, K, (2, 5, N_VAR), generator=torch.Generator().manual_seed(0))
    fast = net.generate(prompt, 30, temperature=0, slide=slide)
    codes, start = prompt, 0
    with torch.no_grad():
        for _ in range(30):
            if codes.shape[1] - start > C:                      # the window would overflow: slide
                start = codes.shape[1] - keep
            logits = net(codes[:, start:]).logits[:, -1, 0]
            codes = torch.cat([codes, logits.argmax(-1)[:, None]], 1)
    assert torch.equal(fast, codes[:, 5:])
    assert net.generate(prompt, 1000, torch.Generator().manual_seed(0)).shape == (2, 1000, N_VAR)


@pytest.mark.parametrize("arch,base,mixture", [("transformer", {}, 1), ("mlp", {}, 1), ("transformer", {}, 3),
                                               ("transformer", {"context": 1, "horizon": 0}, 1)])   # the default first stage
def test_seeded_rollouts_are_deterministic_and_any_length(arch, base, mixture):
    model = prior(arch, base, context=6, mixture=mixture).eval()
    seed = (torch.rand(2, model.seed_frames, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    a = model.rollout(seed, 40, torch.Generator().manual_seed(3), top_k=3)
    b = model.rollout(seed, 40, torch.Generator().manual_seed(3), top_k=3)
    c = model.rollout(seed, 40, torch.Generator().manual_seed(4), top_k=3)
    assert a.shape == (2, 41, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 0], seed[:, -1])


def test_the_first_stage_is_the_chains_vae_or_a_single_frame_autoencoder_unless_a_base_run_is_given():
    from discodance.models import REGISTRY
    first = REGISTRY["code-prior"].first_stage
    assert first({}) == ("gumbel-vae", {}) and first({"base": "next-frame"}) == ("gumbel-vae", {})
    assert first({"base": "autoencoder"}) == ("gumbel-vae", {"context": "1", "horizon": "0"})
    assert first({"base_run": "runs/vae"}) is None


def test_top_k_and_top_p_keep_the_likeliest_classes_per_variable():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    kept = lambda **kw: torch.isfinite(filter_logits(logits, **kw))
    assert kept(top_k=2).tolist() == [[True, True, False, False], [False, False, True, True]]
    assert kept(top_p=0.7).tolist() == [[True, True, False, False], [False, False, True, True]]
    assert kept(top_p=0.5).tolist() == [[True, False, False, False], [False, False, False, True]]
    g = torch.Generator().manual_seed(0)
    draws = sample_codes(logits.expand(2000, 2, 4), g, top_k=2)
    assert set(draws[:, 0].tolist()) == {0, 1} and set(draws[:, 1].tolist()) == {2, 3}
    assert torch.equal(sample_codes(logits, g, temperature=0), torch.tensor([0, 3]))


def test_corruption_replaces_about_the_given_share_of_codes():
    codes = torch.zeros(200, 50, 4, dtype=torch.long)
    out = corrupt_codes(codes, 0.4, 8, torch.Generator().manual_seed(0))
    assert abs((out != 0).float().mean().item() - 0.4 * 7 / 8) < 0.02   # 1 in 8 replacements draws class 0
    assert torch.equal(corrupt_codes(codes, 0.0, 8, None), codes)


def test_the_frame_cache_returns_the_encoders_codes_and_encodes_each_context_once():
    model = prior("transformer", context=6)
    frames = (torch.rand(3, model.window, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    frames[1] = frames[0]                                       # a repeated window: no new contexts
    cached = model.cached_log_q(frames)
    direct = model.code_logits(frames).float().log_softmax(-1)
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)
    P = frames.shape[1] - model.vae.config.context + 1
    assert len(model.code_cache) == 2 * P and model.code_cache.misses == 2 * P
    model.cached_log_q(frames)
    assert model.code_cache.misses == 2 * P and model.code_cache.hits == 4 * P
    model.load_state_dict(model.state_dict())                   # new weights: the cache is dropped
    assert len(model.code_cache) == 0


def test_smooth_codes_drop_brief_flips_and_keep_real_changes():
    from discodance.models.code_smoothing import smooth_codes
    p = torch.tensor([[0.6, 0.4], [0.45, 0.55], [0.6, 0.4], [0.1, 0.9], [0.1, 0.9], [0.2, 0.8]])
    log_q = p.log()[None, :, None]                                       # (1, T=6, N=1, K=2)
    assert smooth_codes(log_q, 0.0)[0, :, 0].tolist() == [0, 1, 0, 1, 1, 1]   # cost 0: the argmax
    assert smooth_codes(log_q, 0.5)[0, :, 0].tolist() == [0, 0, 0, 1, 1, 1]   # the A-B-A flip is gone
    assert smooth_codes(log_q, 1.0)[0, :, 0].tolist() == [1] * 6              # one switch costs too much
    brute = max(((a, b, c, d, e, f) for a in (0, 1) for b in (0, 1) for c in (0, 1) for d in (0, 1)
                 for e in (0, 1) for f in (0, 1)),
                key=lambda z: sum(log_q[0, t, 0, z[t]] for t in range(6)) - 0.5 * sum(z[t] != z[t - 1] for t in range(1, 6)))
    assert tuple(smooth_codes(log_q, 0.5)[0, :, 0].tolist()) == brute


def test_the_configs_sampling_temperature_scales_the_callers():
    """temperature=0 in the config makes every rollout the prior's most likely codes, whatever
    the caller's temperature and generator; the config's 0.8 times the caller's 1.25 is 1."""
    cold = prior("transformer", context=6, temperature=0.0).eval()
    seed = (torch.rand(2, cold.seed_frames, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    a = cold.rollout(seed, 20, torch.Generator().manual_seed(3))
    b = cold.rollout(seed, 20, torch.Generator().manual_seed(4), temperature=2.0)
    assert torch.equal(a, b)
    warm = prior("transformer", context=6, temperature=0.8).eval()
    one = prior("transformer", context=6, temperature=1.0).eval()
    assert torch.equal(warm.rollout(seed, 20, torch.Generator().manual_seed(3), temperature=1.25),
                       one.rollout(seed, 20, torch.Generator().manual_seed(3)))


def test_remove_blips_sets_one_step_excursions_back_and_keeps_lasting_changes():
    from discodance.models.code_smoothing import remove_blips
    z = torch.tensor([0, 1, 0, 0, 2, 2, 0, 3, 0, 3, 3])[None, :, None]          # (B=1, T, N=1)
    assert remove_blips(z)[0, :, 0].tolist() == [0, 0, 0, 0, 2, 2, 0, 0, 0, 3, 3]
    codes = torch.randint(0, 3, (4, 50, 5), generator=torch.Generator().manual_seed(0))
    out = remove_blips(codes)
    blips = (out[:, :-2] == out[:, 2:]) & (out[:, 1:-1] != out[:, :-2])
    assert not blips.any() and out.shape == codes.shape
    assert torch.equal(out[:, [0, -1]], codes[:, [0, -1]])                    # the ends have no two neighbours


def test_deblip_changes_only_the_decoded_codes_of_a_rollout(monkeypatch):
    """With deblip the prior samples exactly the same codes (same generator) and decodes them without
    one-step blips; without it the decoded codes are the samples."""
    from discodance.models.code_smoothing import remove_blips
    seen = {}
    for flag in (False, True):
        model = prior("transformer", context=6, deblip=flag, blend=0).eval()
        monkeypatch.setattr(model, "decode_codes", lambda codes, *a, flag=flag, **k: seen.setdefault(flag, codes)
                            .new_zeros(*codes.shape[:2], 16, 16).float())
        seed = (torch.rand(2, model.seed_frames, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        model.rollout(seed, 60, torch.Generator().manual_seed(3))
    raw, kept = seen[False], seen[True]
    changed = raw != kept
    assert changed.any() and changed.float().mean() < 0.2
    assert torch.equal(kept[:, 1:][changed[:, 1:]], kept[:, :-1][changed[:, 1:]])   # a changed code copies its predecessor
    assert torch.equal(remove_blips(kept)[:, 1:], kept[:, 1:])                     # and no blip is left


@pytest.mark.parametrize("width", [0, 1, 3])
def test_blend_codes_mixes_only_across_a_switch(width):
    """Blended codes are distributions over the classes; a code whose neighbours within +-width all
    agree stays one-hot; across a switch A -> B the weight moves monotonically from A to B, and the
    mixture is symmetric about the switch."""
    from discodance.models.code_smoothing import blend_codes
    codes = torch.tensor([[[0]] * 10 + [[2]] * 10])                              # (1, 20, 1): one switch at t=10
    z = blend_codes(codes, 3, width)                                             # (1, 20, 1, 3)
    assert z.shape == (1, 20, 1, 3) and torch.allclose(z.sum(-1), torch.ones(1, 20, 1))
    far = torch.cat([torch.arange(0, 10 - width), torch.arange(10 + width, 20)])
    assert torch.equal(z[0, far, 0], F.one_hot(codes[0, far, 0], 3).float())
    a = z[0, :, 0, 0]
    assert (a[1:] <= a[:-1] + 1e-6).all() and (z[0, :, 0, 1] == 0).all()
    assert torch.allclose(a[10 - width:10 + width], 1 - a[10 - width:10 + width].flip(0))
    assert width == 0 or 0 < a[10] < 1


def test_blend_changes_only_how_a_rollout_is_decoded(monkeypatch):
    """The same generator samples the same codes with and without blend; with it the decoder gets
    soft codes whose argmax is the sampled class wherever the neighbours agree."""
    seen = {}
    for width in (0, 2):
        model = prior("transformer", context=6, blend=width).eval()
        monkeypatch.setattr(model, "decode_codes", lambda codes, *a, w=width, **k: seen.setdefault(w, codes)
                            .new_zeros(*codes.shape[:2], 16, 16).float())
        seed = (torch.rand(2, model.seed_frames, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        model.rollout(seed, 40, torch.Generator().manual_seed(3))
    hard, soft = seen[0], seen[2]
    assert not hard.is_floating_point() and soft.shape == (*hard.shape, K)
    assert torch.allclose(soft.sum(-1), torch.ones(hard.shape))
    steady = (hard[:, 2:-2] == hard[:, :-4]) & (hard[:, 2:-2] == hard[:, 4:]) & (hard[:, 2:-2] == hard[:, 1:-3]) \
        & (hard[:, 2:-2] == hard[:, 3:-1])                                      # (B, T-4, N) all +-2 neighbours agree
    assert steady.any() and torch.equal(soft[:, 2:-2].argmax(-1)[steady], hard[:, 2:-2][steady])
    assert torch.equal(soft[:, 2:-2].max(-1).values == 1, steady)                # mixed exactly where a neighbour differs
    assert (soft.max(-1).values < 1).any()                                       # some switch was blended


def test_a_blended_rollout_is_a_prefix_of_a_longer_one():
    """The last frames are blended with codes after them too, so a short rollout's frames are the
    first frames of a longer one from the same generator."""
    model = prior("transformer", context=6, blend=2).eval()
    seed = (torch.rand(2, model.seed_frames, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    short = model.rollout(seed, 20, torch.Generator().manual_seed(3), feedback="probs")
    long = model.rollout(seed, 30, torch.Generator().manual_seed(3), feedback="probs")
    assert torch.allclose(short, long[:, :21], atol=1e-6)


def test_stay_shifts_each_variable_towards_keeping_its_class():
    """stay=0 samples exactly as before; a large stay keeps every code; a moderate one changes
    codes less often than none (a random net: changes are frequent without it)."""
    net = CodeTransformer(N_VAR, K, context=12, width=32, layers=2, heads=4).eval()
    prompt = torch.randint(0, K, (8, 3, N_VAR), generator=torch.Generator().manual_seed(0))
    sample = lambda stay: net.generate(prompt, 40, torch.Generator().manual_seed(1), stay=stay)
    assert torch.equal(sample(0.0), net.generate(prompt, 40, torch.Generator().manual_seed(1)))
    assert torch.equal(sample(50.0), prompt[:, -1:].expand(-1, 40, -1))
    changes = lambda z: (z[:, 1:] != z[:, :-1]).float().mean().item()
    assert changes(sample(1.5)) < 0.8 * changes(sample(0.0))


@pytest.mark.parametrize("codes", ["smooth", "argmax"])
def test_evaluates_xent_is_the_training_loss_without_corruption(codes):
    model = prior("transformer", corrupt=0.0, codes=codes, context=6).eval()
    frames = (torch.rand(3, model.window, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    _, stats = model(frames)
    xent = model.code_xent(model.code_logits(frames)[:, :model.train_codes].float())
    assert xent.shape == (3,) and xent.mean().item() == pytest.approx(stats["xent_nats"], rel=1e-4)
    assert "xent" in model.evaluate(frames)


def test_self_feed_replaces_whole_later_steps_by_the_priors_own_samples():
    model = prior("transformer", self_feed=0.5, context=12, mixture=1)
    head = model.gpt.head
    with torch.no_grad():                       # a prior certain of class 3 for every variable
        head.weight.zero_()
        head.bias.copy_(torch.where(torch.arange(N_VAR * K) % K == 3, 50.0, 0.0))
    codes = torch.zeros(64, 13, N_VAR, dtype=torch.long)
    fed = model.feed_own_samples(codes, torch.Generator().manual_seed(0))
    assert torch.equal(fed[:, 0], codes[:, 0])                          # the first step has no prediction
    own = (fed[:, 1:] == 3).all(-1)                                     # (B, T-1) steps replaced whole
    assert torch.equal(own, (fed[:, 1:] != 0).any(-1))
    assert 0.4 < own.float().mean().item() < 0.6
    model.config.self_feed = 0.0
    assert torch.equal(model.feed_own_samples(codes), codes)

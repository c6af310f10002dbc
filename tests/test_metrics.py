"""Metrics with known answers: Fréchet distance, diversity, freeze rate, jitter, kinetic and
geometric features, rollout collapse; the evaluation network (pose probe) and its cache."""
import json
import math

import numpy as np
import pytest
import torch

from discodance.evaluation import motion as ft
from discodance.evaluation import stats as mt


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster and steadier


# ----------------------------------------------------------------------------- Fréchet distance
def test_frechet_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert mt.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_from_stats_matches_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert mt.frechet_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-10)


def test_frechet_from_stats_matches_scipy_for_full_covariances():
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert mt.frechet_from_stats(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-8)


def test_frechet_of_two_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(2)
    a = rng.normal([0, 0], [1, 2], size=(200_000, 2))
    b = rng.normal([3, -1], [2, 2], size=(200_000, 2))
    closed = 9 + 1 + (1 - 2) ** 2 + 0
    assert mt.frechet_distance(a, b) == pytest.approx(closed, rel=0.01)


def test_frechet_needs_two_vectors():
    with pytest.raises(ValueError):
        mt.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_diversity_is_the_mean_pairwise_distance():
    triangle = np.array([[0, 0], [1, 0], [0.5, math.sqrt(3) / 2]])
    assert mt.mean_pairwise_distance(triangle) == pytest.approx(1.0)
    assert mt.mean_pairwise_distance(np.array([[0, 0], [3, 4]])) == pytest.approx(5.0)
    assert math.isnan(mt.mean_pairwise_distance(np.zeros((1, 2))))


def test_spread_is_reported_for_test_and_training_segments_in_the_training_scale():
    from discodance.evaluation.full import compare_motion
    from discodance.evaluation.report import table_html
    rng = np.random.default_rng(0)
    train = {"kinetic": rng.normal(0, 2, (300, 6)), "geometric": rng.normal(0, 1, (300, 4))}
    test = {"kinetic": rng.normal(0, 1, (200, 6)), "geometric": rng.normal(0, 1, (200, 4))}
    out = compare_motion(train, test, train)
    # standardised by the training segments: the narrower test block has about half their spread
    assert out["real_dist_k"] / out["real_train_dist_k"] == pytest.approx(0.5, abs=0.05)
    assert out["real_dist_g"] / out["real_train_dist_g"] == pytest.approx(1.0, abs=0.05)
    assert out["dist_k"] == pytest.approx(out["real_train_dist_k"])      # generated = training segments here
    assert "real_train_dist_k" not in compare_motion(train, test, None)
    assert "real_train_dist_k" not in compare_motion(train, test, train, floor=False)
    page = table_html({"m": {"dist_k": (1.0, 0.1, 2)}}, {"real_dist_k": 0.5, "real_train_dist_k": 0.9})
    assert "real training segments" in page and "0.9" in page
    assert "real training segments" not in table_html({"m": {"dist_k": (1.0, 0.1, 2)}}, {"real_dist_k": 0.5})


def test_normalize_like_uses_the_reference_statistics():
    ref = np.array([[0.0, 10.0], [2.0, 10.0]])
    r, other = mt.normalize_like(ref, np.array([[1.0, 11.0]]))
    assert np.allclose(r, [[-1, 0], [1, 0]]) and np.allclose(other, [[0, 1]])  # constant column: std 1


# ----------------------------------------------------------------------------- motion statistics
def test_a_static_sequence_has_freeze_rate_one_and_no_jitter():
    poses = np.tile(np.random.default_rng(0).normal(size=(1, 5, 2)), (20, 1, 1))
    assert mt.freeze_rate(poses, 0.01) == 1.0
    assert mt.jitter(poses) == 0.0


def test_a_moving_sequence_has_freeze_rate_zero():
    t = np.arange(20)[:, None, None]
    poses = np.zeros((20, 3, 2)) + t * np.array([1.0, 0.0])
    assert mt.freeze_rate(poses, 0.5) == 0.0


def test_jitter_of_smooth_and_of_flickering_motion():
    t = np.arange(30, dtype=float)[:, None, None]
    accelerating = np.concatenate([0.5 * 0.3 * t ** 2, 2 * t], -1)     # constant acceleration: jerk 0
    assert mt.jitter(accelerating) == pytest.approx(0.0, abs=1e-9)
    a = 0.7
    flicker = np.concatenate([a * (-1.0) ** t, np.zeros_like(t)], -1)  # +-a every frame
    assert mt.jitter(flicker) == pytest.approx(8 * a)


def _disc(cx, cy, r=6, size=32):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8) * 255


def test_collapse_detects_a_static_pose_a_loop_and_real_motion():
    still = np.stack([_disc(16, 16)] * 20)
    assert mt.collapse(still) == "static"
    cycle = [_disc(10 + 3 * k, 16) for k in range(4)]                 # a 4-frame cycle, repeated
    assert mt.collapse(np.stack(cycle * 6)) == "loop"
    travel = np.stack([_disc(6 + k, 8 + k // 2) for k in range(20)])  # a slow walk: similar lags, no loop
    assert mt.collapse(travel) == "ok"
    assert mt.pixel_change(still).max() == 0


# ----------------------------------------------------------------------------- kinetic features
def test_kinetic_features_of_a_joint_at_constant_speed():
    fps, vx, vy = 24.0, 3.0, -2.0        # units per second
    t = np.arange(40)[:, None] / fps
    poses = np.stack([np.concatenate([vx * t, vy * t], 1), np.zeros((40, 2))], 1)   # joint 0 moves, joint 1 rests
    k = ft.kinetic_features(poses, fps).reshape(2, 3)
    assert k[0] == pytest.approx([vx ** 2, vy ** 2, 0.0], abs=1e-9)   # horizontal v^2, vertical v^2, |a|
    assert k[1] == pytest.approx([0, 0, 0], abs=1e-12)


def test_kinetic_features_of_uniform_circular_motion():
    fps, r, omega = 240.0, 2.0, 2 * np.pi  # |v| = r omega, |a| = r omega^2; 5 whole turns below
    t = np.arange(5 * 240 + 1) / fps
    circle = np.stack([r * np.cos(omega * t), r * np.sin(omega * t)], -1)[:, None]
    horiz, vert, acc = ft.kinetic_features(circle, fps)
    # averaging the +-2-step window of a turning velocity shortens it by O((5 omega dt)^2 / 24) ~ 0.1%
    assert horiz + vert == pytest.approx((r * omega) ** 2, rel=3e-3)
    assert horiz == pytest.approx(vert, rel=0.02)          # a circle splits its energy evenly
    assert acc == pytest.approx(r * omega ** 2, rel=1e-2)


# ----------------------------------------------------------------------------- geometric features
def _figure(frames=10, arms_up=False):
    from discodance.data.synthetic import JOINTS, REST, forward_kinematics
    par = {k: np.full(frames, v, float) for k, v in REST.items()}
    if arms_up:
        par["l_arm"][:], par["r_arm"][:] = 3.0, -3.0
    xy = forward_kinematics(par) * np.array([1.0, -1.0])     # image axes: y down
    return xy, ft.resolve_skeleton(JOINTS)


def test_geometric_features_know_where_the_hands_are():
    names = list(ft.GEOMETRIC_NAMES)
    rest, joints = _figure()
    up, _ = _figure(arms_up=True)
    g_rest, g_up = ft.geometric_features(rest, joints, 24.0), ft.geometric_features(up, joints, 24.0)
    for key in ("l_hand_above_head", "r_hand_above_head", "l_hand_above_shoulder", "r_hand_above_shoulder"):
        assert g_rest[names.index(key)] == 0 and g_up[names.index(key)] == 1
    assert g_rest[names.index("body_moving")] == 0 and g_rest.shape == (len(names),)


def test_skeletons_resolve_by_name():
    from discodance.data.render import COCO17
    from discodance.data.synthetic import JOINTS
    assert ft.resolve_skeleton(JOINTS)["l_wrist"] == JOINTS.index("l_wrist")
    coco = ft.resolve_skeleton(COCO17)
    assert coco["neck"] == (5, 6) and coco["r_ankle"] == 16
    cmu = ["hip", "abdomen", "chest", "neck", "head", "rCollar", "rShldr", "rForeArm", "rHand", "rThumb1",
           "lCollar", "lShldr", "lForeArm", "lHand", "rButtock", "rThigh", "rShin", "rFoot", "lButtock",
           "lThigh", "lShin", "lFoot"]
    got = {k: cmu[v] for k, v in ft.resolve_skeleton(cmu).items()}
    assert got["pelvis"] == "hip" and got["l_elbow"] == "lForeArm" and got["r_wrist"] == "rHand"
    assert ft.resolve_skeleton(["a", "b"]) is None


# ----------------------------------------------------------------------------- evaluation network
FAST_NET = dict(steps=400, channels=(8, 16, 32), hidden=64, features=16, reference_frames=200)


def test_pose_probe_on_the_built_in_dancer_is_accurate_and_cached(tmp_path):
    from discodance.data.dataset import load_dataset
    from discodance.data.synthetic import write_synthetic
    from discodance.evaluation.evalnet import EvalNetConfig, cache_paths, load_or_train
    data = load_dataset(write_synthetic(tmp_path / "d", 800, 32, 32, seed=5))
    cfg = EvalNetConfig(**FAST_NET)
    net, stats = load_or_train(data, cfg)
    # held-out test frames, 32x32: a few hundred steps already put joints within ~1 px
    # (the full-size probe, 64x64 and 1,500 steps, reaches 0.33 px: docs/evaluation.md)
    assert stats["mode"] == "pose" and stats["probe_error_px"] < 1.5
    assert stats["fid_floor"] >= 0 and stats["nn_threshold"] > 0
    pt, js = cache_paths(data, cfg)
    assert not (data.path / ".eval").exists() and sorted(p.name for p in data.path.iterdir()) == [
        "frames.npy", "meta.json", "poses.npy"]  # nothing is written into the user's dataset
    assert pt.is_file() and json.loads(js.read_text())["probe_error_px"] == pytest.approx(stats["probe_error_px"])
    mtime = pt.stat().st_mtime_ns
    again, stats2 = load_or_train(data, cfg)                              # from the cache: no retraining
    assert pt.stat().st_mtime_ns == mtime and stats2["fingerprint"] == stats["fingerprint"]
    x = torch.from_numpy(np.array(data.frames[:4])).float() / 255
    assert torch.allclose(net.features(x), again.features(x))
    _, stats3 = load_or_train(data, EvalNetConfig(**{**FAST_NET, "features": 12}))   # new settings: retrained
    assert stats3["fingerprint"] != stats["fingerprint"]


def test_without_poses_the_evaluation_network_is_an_autoencoder(tmp_path):
    from discodance.data.dataset import load_dataset
    from discodance.data.writer import write_dataset
    from discodance.data.synthetic import make_dancer
    from discodance.evaluation.evalnet import EvalNetConfig, load_or_train
    frames, _, _ = make_dancer(300, 32, 32, seed=1)
    data = load_dataset(write_dataset(tmp_path / "np", frames, fps=24, source="test"))
    net, stats = load_or_train(data, EvalNetConfig(**{**FAST_NET, "steps": 60}))
    assert stats["mode"] == "encoder" and "probe_error_px" not in stats
    emb = net.embed(data.frames[:5])
    assert emb["features"].shape == (5, 16) and emb["confidence"].shape == (5,) and "poses" not in emb


def test_flicker_counts_pixels_that_flip_and_flip_straight_back():
    T, H, W = 6, 4, 5
    still = np.zeros((T, H, W), np.uint8)
    assert mt.flicker(still) == 0.0
    sweep = np.zeros((T, H, W), bool)                  # an edge moving one column per frame: motion, no flicker
    for t in range(T):
        sweep[t, :, :t] = True
    assert mt.flicker(sweep) == 0.0
    blink = np.zeros((T, H, W), np.uint8)              # one pixel on every other frame: flips back at each t
    blink[::2, 0, 0] = 255
    assert mt.flicker(blink) == pytest.approx(1 / (H * W))
    once = np.zeros((T, H, W), np.float32)             # two pixels on in frame 2 only: flicker at t = 1 of 4
    once[2, 1, :2] = 1.0
    assert mt.flicker(once) == pytest.approx(2 / (4 * H * W))
    assert mt.flicker(np.stack([blink, still])) == pytest.approx(0.5 / (H * W))   # batched: the mean
    assert np.isnan(mt.flicker(still[:2]))


def test_implausible_flags_far_or_unsure_frames_never_sure_ones():
    from discodance.evaluation.full import implausible_flags
    ref = {"reference_features": np.zeros((3, 2), np.float32), "nn_threshold": 1.0, "confidence_max": 0.5}
    emb = {"features": np.array([[0.1, 0], [2, 0], [0, 0.2], [0, 0]], np.float32),
           "confidence": np.array([0.2, 0.2, 0.9, 1e-6])}
    # near and sure; far; unsure; near and surer than any real frame (version 1 flagged this one)
    assert implausible_flags(emb, ref).tolist() == [False, True, True, False]


def test_implausible_thresholds_come_from_every_held_out_frame(tmp_path):
    from discodance.data.dataset import load_dataset
    from discodance.data.synthetic import write_synthetic
    from discodance.evaluation.evalnet import EvalNetConfig, held_out_indices, load_or_train
    from discodance.evaluation.full import implausible_flags
    data = load_dataset(write_synthetic(tmp_path / "d", 800, 32, 32, seed=5))
    net, stats = load_or_train(data, EvalNetConfig(**FAST_NET))
    held = held_out_indices(data)
    assert len(held) == len(data.indices("val")) + len(data.indices("test")) == stats["held_out_frames"]
    # quantiles of the held-out frames: at most 1 % + 0.5 % of them are flagged, whichever block they are in
    assert implausible_flags(net.embed(data.frames[held]), stats).mean() <= 0.015 + 1e-9

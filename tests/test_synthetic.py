"""The built-in dancer: deterministic, articulated, grounded, varied, and fast."""
import numpy as np

from discodance.data.synthetic import JOINTS, MOVES, Choreography, forward_kinematics, make_dancer


def test_same_seed_same_frames_other_seed_other_dance():
    a, pa, _ = make_dancer(200, 48, 40, seed=5)
    b, pb, _ = make_dancer(200, 48, 40, seed=5)
    c, _, _ = make_dancer(200, 48, 40, seed=6)
    assert np.array_equal(a, b) and np.array_equal(pa, pb) and not np.array_equal(a, c)
    assert a.shape == (200, 48, 40) and pa.shape == (200, len(JOINTS), 2)
    assert set(np.unique(a)) == {0, 255}


def test_figure_is_inside_the_frame_and_poses_match_pixels():
    frames, poses, _ = make_dancer(600, 64, 64, seed=0)
    assert poses[..., 0].min() >= 0 and poses[..., 0].max() < 64
    assert poses[..., 1].min() >= 0 and poses[..., 1].max() < 64
    head = np.round(poses[:, JOINTS.index("head")]).astype(int)
    assert (frames[np.arange(600), head[:, 1].clip(0, 63), head[:, 0].clip(0, 63)] == 255).mean() > 0.99
    area = (frames > 0).mean((1, 2))
    assert area.min() > 0.03 and area.max() < 0.4


def test_bones_keep_their_length_and_feet_touch_the_floor():
    par = Choreography(seed=2).params(2000)
    pos = forward_kinematics(par)
    thigh = np.linalg.norm(pos[:, JOINTS.index("l_knee")] - pos[:, JOINTS.index("l_hip")], axis=-1)
    assert np.ptp(thigh) < 1e-9
    feet = pos[:, [JOINTS.index(j) for j in ("l_ankle", "r_ankle", "l_toe", "r_toe")], 1].min(1)
    grounded = np.isclose(feet, par["lift"])
    assert grounded.all() and (par["lift"] > 0.05).any()  # jumps leave the floor, nothing else does


def test_choreography_uses_many_moves_and_never_loops_exactly():
    frames, _, _ = make_dancer(3000, 32, 32, seed=1)
    flat = frames.reshape(len(frames), -1)
    period_matches = [(flat[p:] == flat[:-p]).all(1).mean() for p in range(24, 400, 12)]
    assert max(period_matches) < 0.5  # no lag at which the dance repeats itself
    motion = (flat[1:] != flat[:-1]).mean(1)
    assert (motion > 0).mean() > 0.95  # the dancer is almost always moving
    assert len(MOVES) >= 8

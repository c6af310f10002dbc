"""Silhouette rendering: the capsule primitive, body layouts, clip-wide framing."""
import numpy as np
import pytest

from discodance.data.render import (COCO17, RADIUS, Body, body_from_skeleton, default_body,
                                    plan_silhouettes, render_capsules, render_silhouettes)
from discodance.errors import DiscodanceError


def brute_force(seg, radii, H, W):
    """Pixel (i, j) is on when its centre (j + .5, i + .5) is within radius of the segment."""
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    out = np.zeros((len(seg), H, W), dtype=bool)
    for t in range(len(seg)):
        for s in range(seg.shape[1]):
            a, b = seg[t, s]
            if not np.isfinite(seg[t, s]).all():
                continue
            d = b - a
            u = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
            out[t] |= (xs - a[0] - u * d[0]) ** 2 + (ys - a[1] - u * d[1]) ** 2 <= radii[s] ** 2
    return out.astype(np.uint8) * 255


# ----------------------------------------------------------------------------- capsules
def test_horizontal_capsule_covers_expected_pixels():
    seg = np.array([[[[10.5, 20.5], [30.5, 20.5]]]])  # row 20, pixel centres of columns 10..30
    img = render_capsules(seg, np.array([3.0]), 40, 40)[0]
    assert img.dtype == np.uint8 and set(np.unique(img)) == {0, 255}
    assert img[20, 7:34].all() and not img[20, 6] and not img[20, 34]   # caps reach exactly r = 3
    assert img[17:24, 20].all() and not img[16, 20] and not img[24, 20]
    assert img.sum() // 255 == 21 * 7 + 2 * 11  # 21x7 body + caps: (29-pixel r=3 disc - 7) / 2


def test_capsules_match_brute_force_including_edges_and_nan():
    rng = np.random.default_rng(0)
    seg = rng.uniform(-10, 58, size=(6, 5, 2, 2))   # some ends outside a 32x48 image
    seg[:, 0, 1] = seg[:, 0, 0]                       # a zero-length capsule: a disc
    seg[2, 3] = np.nan                                # not drawn
    seg[4, 4] = [[-40, -40], [-30, -35]]              # entirely outside
    radii = np.array([4.0, 1.5, 2.5, 6.0, 3.0])
    expected = brute_force(seg, radii, 32, 48)
    assert np.array_equal(render_capsules(seg, radii, 32, 48), expected)
    assert np.array_equal(render_capsules(seg, radii, 32, 48, max_elements=50), expected)  # chunked


def test_capsule_argument_checks():
    with pytest.raises(DiscodanceError, match=r"\(T, S, 2, 2\)"):
        render_capsules(np.zeros((3, 2, 2)), np.ones(2), 8, 8)
    with pytest.raises(DiscodanceError, match=r"radii \(S,\)"):
        render_capsules(np.zeros((3, 2, 2, 2)), np.ones(3), 8, 8)


# ----------------------------------------------------------------------------- bodies
CMU_LIKE = ["hip", "abdomen", "chest", "neck", "head", "leftEye", "leftEye_end", "rightEye",
            "rightEye_end", "rCollar", "rShldr", "rForeArm", "rHand", "rThumb1", "rThumb1_end",
            "rIndex1", "rIndex1_end", "rThigh", "rShin", "rFoot", "rFoot_end"]
CMU_PARENTS = [-1, 0, 1, 2, 3, 4, 5, 4, 7, 2, 9, 10, 11, 12, 13, 12, 15, 0, 17, 18, 19]


def test_named_skeleton_gets_body_parts():
    body = body_from_skeleton(CMU_LIKE, CMU_PARENTS)
    pairs = {(int(a), int(b)): r for (a, b), r in zip(body.segments, body.radii)}
    i = CMU_LIKE.index
    assert pairs[(i("hip"), i("abdomen"))] == RADIUS["torso"]
    assert pairs[(i("rShldr"), i("rForeArm"))] == RADIUS["upper_arm"]
    assert pairs[(i("rForeArm"), i("rHand"))] == RADIUS["forearm"]
    assert pairs[(i("rShin"), i("rFoot"))] == RADIUS["shin"]
    assert pairs[(i("rFoot"), i("rFoot_end"))] == RADIUS["foot"]
    assert not any(a in (i("leftEye"), i("rThumb1"), i("rIndex1")) for a, _ in pairs)  # small bones
    head, hand = i("head"), i("rHand")
    grouped = {a: b for a, b in pairs if a in (head, hand)}  # one capsule to the children's mean
    assert body.weights[grouped[head], [i("leftEye"), i("rightEye")]].tolist() == [0.5, 0.5]
    assert body.weights[grouped[hand], [i("rThumb1"), i("rIndex1")]].tolist() == [0.5, 0.5]
    assert len(pairs) == len(body.segments)


def test_default_bodies():
    coco = default_body(None, None, 17)
    assert coco.weights.shape == (20, 17) and np.allclose(coco.weights.sum(axis=1), 1)
    assert default_body(COCO17, None, 17).segments.tolist() == coco.segments.tolist()
    chain = default_body(None, None, 5)
    assert chain.segments.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert default_body(None, None, 1).segments.tolist() == [[0, 0]]


# ----------------------------------------------------------------------------- framing
def stick_figure(T=30, travel=0.0, arms_up=False):
    """Points: foot, hip, head, hand; 2 m tall, optionally walking along x and raising a hand."""
    base = np.array([[0, 0], [0, 1.0], [0, 1.8], [0.4, 1.1]])
    pts = np.repeat(base[None], T, axis=0).astype(np.float64)
    pts[..., 0] += np.linspace(0, travel, T)[:, None]
    if arms_up:
        pts[1::2, 3] = pts[1::2, 1] + [0.2, 1.2]   # odd frames: hand high above the head
    body = Body(np.eye(4), np.array([[0, 1], [1, 2], [1, 3], [2, 2]]), np.array([0.05, 0.08, 0.03, 0.06]))
    return pts, body


def test_one_scale_and_floor_for_the_clip():
    pts, body = stick_figure(arms_up=True)
    frames = np.concatenate(list(render_silhouettes(pts, body, 64, 64, center="clip", chunk=7)))
    assert frames.shape == (30, 64, 64) and set(np.unique(frames)) == {0, 255}
    below_hip = frames[:, 40:]
    assert (below_hip == below_hip[0]).all()  # a raised hand never shrinks the legs: no zoom pumping
    rows = np.flatnonzero(frames.any(axis=(0, 2)))
    assert (rows[0], rows[-1]) == (5, 58)  # y from 4.8 to 59.2: 85% of 64 rows, floor at 59.2
    lowest = [np.flatnonzero(f.any(axis=1))[-1] for f in frames]
    assert len(set(lowest)) == 1                                        # the floor stays put


def test_clip_framing_is_centred_and_fixed_while_follow_pans():
    pts, body = stick_figure(travel=3.0)
    clip = np.concatenate(list(render_silhouettes(pts, body, 64, 64, center="clip")))
    cols = np.flatnonzero(clip.any(axis=(0, 1)))
    assert abs((cols[0] + cols[-1] + 1) / 2 - 32) <= 1                  # union centred
    assert np.flatnonzero(clip[0].any(axis=0))[0] < np.flatnonzero(clip[-1].any(axis=0))[0]
    seg, radii, fr = plan_silhouettes(pts, body, 64, 64, center="follow", smooth=1)
    assert np.isscalar(fr.scale) and np.ptp(seg[:, 0, :, 0]) < 1e-9    # body stays on the midline
    follow = render_capsules(seg, radii, 64, 64)
    assert (follow == follow[0]).all()
    assert follow.sum() > clip.sum()  # following lets the dancer be drawn larger


def test_bad_center_is_refused():
    pts, body = stick_figure()
    with pytest.raises(DiscodanceError, match="bad center"):
        plan_silhouettes(pts, body, 32, 32, center="middle")

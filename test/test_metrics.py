"""Tests of fmdepth_ros.metrics on hand-computed values."""

import math
import os

from fmdepth_ros.metrics import (chain_poses, compute_ate, compute_depth_errors, DEPTH_METRICS,
                                 DepthMetricAccumulator, disparity_to_eval_depth,
                                 evaluate_depth, garg_crop_mask,
                                 kitti_segment_errors, load_poses_kitti, mean_errors,
                                 save_poses_kitti, snippet_ate, umeyama_alignment)
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

KITTI_GT = '/work/shared/data/kitti_raw_0001_gt_depth'


def test_depth_errors_hand_computed():
    """Gt (1, 2, 4) vs pred (2, 2, 2), every error worked out by hand."""
    e = compute_depth_errors([1.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    assert e['abs_rel'] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert e['sq_rel'] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert e['rmse'] == pytest.approx(math.sqrt(5.0 / 3))
    assert e['rmse_log'] == pytest.approx(math.log(2) * math.sqrt(2.0 / 3))
    # Ratios 2, 1, 2: only the exact pixel is within 1.25, 1.5625 and 1.953125.
    assert (e['a1'], e['a2'], e['a3']) == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_delta_thresholds():
    """Ratios 1, 1.3, 1.6, 1.9 in both directions fall in 1.25 / 1.25^2 / 1.25^3 as expected."""
    pred = np.array([1.0, 1.3, 1.6, 1.9])
    for gt, p in ((np.ones(4), pred), (pred, np.ones(4))):
        e = compute_depth_errors(gt, p)
        assert (e['a1'], e['a2'], e['a3']) == pytest.approx((0.25, 0.5, 1.0))
    with pytest.raises(ValueError):
        compute_depth_errors([1.0], [1.0, 2.0])


def test_garg_crop_mask_bounds():
    """Rows int(0.408h)..int(0.992h), columns int(0.036w)..int(0.964w)."""
    m = garg_crop_mask(100, 200)
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max()) == (40, 98)
    assert (cols.min(), cols.max()) == (7, 191)


def test_median_scaling_crop_and_cap():
    """Median scaling removes a global scale; pixels outside crop / over 80 m are ignored."""
    gt = np.full((10, 10), 10.0)
    gt[9, 5] = 20.0
    pred = gt / 4.0
    pred[0, 0] = 100.0             # outside the Garg crop (row 0)
    gt[5, 5], pred[5, 5] = 90.0, 1.0   # beyond the 80 m cap: excluded
    errors, ratio = evaluate_depth(gt, pred)
    assert ratio == pytest.approx(4.0)
    assert errors['abs_rel'] == pytest.approx(0.0, abs=1e-12)
    assert errors['a1'] == 1.0
    # Without the crop, the bad pixel counts: pred 100*4 clamped to 80 vs gt 10.
    errors, _ = evaluate_depth(gt, pred, garg_crop=False)
    n_valid = 99
    assert errors['abs_rel'] == pytest.approx((80.0 - 10.0) / 10.0 / n_valid)


def test_fixed_scale_and_no_valid_pixel():
    """A fixed scale multiplies the prediction; an empty GT image gives (None, None)."""
    gt = np.full((10, 10), 6.0)
    errors, ratio = evaluate_depth(gt, np.full((10, 10), 2.0), median_scaling=False, scale=2.0)
    assert ratio == 2.0
    assert errors['abs_rel'] == pytest.approx(2.0 / 6.0)
    assert evaluate_depth(np.zeros((10, 10)), np.ones((10, 10))) == (None, None)
    assert mean_errors([{'x': 1.0}, None, {'x': 3.0}]) == {'x': 2.0}
    with pytest.raises(ValueError, match='resize'):
        evaluate_depth(gt, np.ones((5, 5)))


def test_depth_metric_accumulator():
    """Per-image errors averaged over images; counts; scale ratios' median and spread."""
    acc = DepthMetricAccumulator(garg_crop=False)
    gt = np.full((8, 8), 10.0)
    gt[0, 0] = 0.0                             # no measurement
    gt[1, 1] = np.nan                          # no measurement either
    first = acc.add(gt, np.full((8, 8), 5.0))  # exact after median scaling, ratio 2
    assert first['abs_rel'] == pytest.approx(0.0) and first['a1'] == 1.0
    pred = np.full((8, 8), 20.0)
    pred[:4] = 40.0                            # half the image off by 2x after scaling
    second = acc.add(gt, pred)
    assert acc.add(np.zeros((8, 8)), np.ones((8, 8))) is None    # no valid GT: skipped
    acc.skip()                                                    # no GT at all
    result = acc.result()
    assert result['num_images'] == 2 and result['num_skipped'] == 2
    for key in DEPTH_METRICS:
        assert result[key] == pytest.approx((first[key] + second[key]) / 2)
    ratios = np.array([2.0, 10.0 / np.median(pred[np.isfinite(gt) & (gt > 0)])])
    assert result['scale_ratio_median'] == pytest.approx(np.median(ratios))
    assert result['scale_ratio_std'] == pytest.approx(np.std(ratios / np.median(ratios)))
    # the per-call crop override and the fixed-scale protocol
    fixed = DepthMetricAccumulator(median_scaling=False, scale=2.0, garg_crop=True)
    fixed.add(np.full((20, 20), 6.0), np.full((20, 20), 3.0), garg_crop=False)
    assert fixed.result()['abs_rel'] == pytest.approx(0.0)
    assert fixed.result()['scale_ratio_median'] == 2.0 and fixed.result()['scale_ratio_std'] == 0
    with pytest.raises(ValueError, match='no image had valid ground truth .1 skipped'):
        empty = DepthMetricAccumulator()
        empty.skip()
        empty.result()


def test_disparity_to_eval_depth():
    """Scaled disparity 0.01 + 9.99 * 0.5, resized to the GT shape, then inverted."""
    depth = disparity_to_eval_depth(np.full((4, 8), 0.5, np.float32), (12, 30))
    assert depth.shape == (12, 30)
    np.testing.assert_allclose(depth, 1.0 / (0.01 + 9.99 * 0.5), rtol=1e-6)


def test_ate_scale_alignment_hand_computed():
    """Positions z = (0, 1, 2) vs (0, 1, 1): s = 3/2, errors (0, .5, .5)."""
    gt = np.tile(np.eye(4), (3, 1, 1))
    gt[:, 2, 3] = [0.0, 1.0, 2.0]
    pred = np.tile(np.eye(4), (3, 1, 1))
    pred[:, 2, 3] = [0.0, 1.0, 1.0]
    r = compute_ate(gt, pred)
    assert r['scale'] == pytest.approx(1.5)
    assert r['ate'] == pytest.approx(math.sqrt(0.5 / 3))
    assert r['ate_mean'] == pytest.approx(1.0 / 3)
    assert compute_ate(gt, pred, alignment='none')['ate'] == pytest.approx(math.sqrt(1 / 3))


def test_ate_invariant_to_world_frame_and_scale():
    """A prediction in another world frame and at 1/3 scale aligns to zero error."""
    rng = np.random.default_rng(0)
    gt = np.tile(np.eye(4), (6, 1, 1))
    gt[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.1, (6, 3))).as_matrix()
    gt[:, :3, 3] = np.cumsum(rng.normal(0, 1, (6, 3)), axis=0)
    pred = gt.copy()
    pred[:, :3, 3] /= 3.0
    world = np.eye(4)
    world[:3, :3] = Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix()
    world[:3, 3] = [5.0, 1.0, -2.0]
    pred = world[None] @ pred
    for alignment in ('scale', 'sim3'):
        r = compute_ate(gt, pred, alignment)
        assert r['ate'] < 1e-9
        assert r['scale'] == pytest.approx(3.0)
    assert compute_ate(gt, pred, 'se3')['ate'] > 0.1
    mean, std = snippet_ate(gt, pred, length=3)
    assert mean < 1e-9 and std < 1e-9


def test_umeyama_recovers_similarity():
    """Known s, R, t are recovered from exact correspondences."""
    rng = np.random.default_rng(1)
    src = rng.normal(size=(20, 3))
    R = Rotation.from_rotvec([0.1, 0.5, -0.3]).as_matrix()
    dst = 2.5 * src @ R.T + np.array([1.0, 2.0, 3.0])
    s, R_est, t = umeyama_alignment(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(R_est, R, atol=1e-9)
    np.testing.assert_allclose(t, [1.0, 2.0, 3.0], atol=1e-9)


def test_chain_and_pose_file_io(tmp_path):
    """Chaining relative steps composes them; KITTI pose files round-trip."""
    step = np.eye(4)
    step[:3, :3] = Rotation.from_euler('y', 90, degrees=True).as_matrix()
    step[2, 3] = 1.0
    poses = chain_poses([step, step])
    np.testing.assert_allclose(poses[0], np.eye(4))
    # Second step moves 1 m along the first step's rotated z axis (world +x).
    np.testing.assert_allclose(poses[2][:3, 3], [1.0, 0.0, 1.0], atol=1e-12)
    save_poses_kitti(tmp_path / 'p.txt', poses)
    np.testing.assert_allclose(load_poses_kitti(tmp_path / 'p.txt'), poses, atol=1e-9)


@pytest.mark.skipif(not os.path.isdir(KITTI_GT), reason='real KITTI sample absent')
def test_real_kitti_gt_png():
    """KITTI benchmark GT png (uint16 / 256): the GT against itself x0.5 scores perfectly."""
    from PIL import Image

    gt = np.asarray(Image.open(os.path.join(KITTI_GT, 'depth', '0000000050.png')),
                    dtype=np.float64) / 256.0
    assert gt.shape == (375, 1242)
    pred = np.where(gt > 0, gt * 0.5, 1.0)
    errors, ratio = evaluate_depth(gt, pred)
    assert ratio == pytest.approx(2.0)
    assert errors['abs_rel'] < 1e-9 and errors['a1'] == 1.0
    noisy = pred * np.random.default_rng(0).uniform(0.9, 1.1, pred.shape)
    errors, _ = evaluate_depth(gt, noisy)
    assert 0.01 < errors['abs_rel'] < 0.1


def test_kitti_segment_errors_hand_computed():
    """Straight 1 m steps vs 1.1 m steps: 10 % translation error, no rotation error."""
    gt = np.tile(np.eye(4), (251, 1, 1))
    gt[:, 2, 3] = np.arange(251.0)
    pred = gt.copy()
    pred[:, 2, 3] *= 1.1
    r = kitti_segment_errors(gt, pred, lengths=(100, 200))
    assert r['t_err'] == pytest.approx(10.0)
    assert r['r_err'] == pytest.approx(0.0, abs=1e-6)
    # Starts 0, 10, ..., 150 reach 100 m (16) and starts 0..50 reach 200 m (6).
    assert r['num_segments'] == 16 + 6
    # A 1 degree yaw in the predicted orientation of every frame after the first.
    turned = gt.copy()
    turned[1:, :3, :3] = Rotation.from_euler('y', 1.0, degrees=True).as_matrix()
    r = kitti_segment_errors(gt, turned, lengths=(100,))
    # Segments starting at frame 0 see the 1 degree; the others see none.
    assert r['r_err'] == pytest.approx(1.0 / r['num_segments'], rel=1e-6)
    assert np.isnan(kitti_segment_errors(gt[:5], pred[:5])['t_err'])

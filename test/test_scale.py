"""Tests for fmdepth_ros.runtime.scale (ground-plane camera-height scale, fixed scale)."""

from fmdepth_ros.runtime.scale import camera_height_from_depth, DepthScaler, fit_plane_ransac
import numpy as np
import pytest

K = np.array([[100.0, 0, 96], [0, 100.0, 32], [0, 0, 1]])


def ground_depth(height_m, h=64, w=192, K=K, wall=20.0):
    """Depth of a flat ground ``height_m`` below a level camera, a wall above the horizon."""
    v = np.arange(h)[:, None].repeat(w, axis=1).astype(np.float64)
    ray_y = (v - K[1, 2]) / K[1, 1]
    depth = np.full((h, w), wall)
    below = ray_y > 1e-6
    depth[below] = np.minimum(height_m / ray_y[below], wall)
    return depth.astype(np.float32)


def test_plane_fit_recovers_camera_height_with_outliers():
    """Plane fit recovers camera height with outliers."""
    depth = ground_depth(1.6)
    rng = np.random.default_rng(0)
    mask = rng.random(depth.shape) < 0.1
    depth[mask] *= rng.uniform(0.3, 0.9, mask.sum())   # 10 % outliers
    depth[0, 0] = np.nan
    assert camera_height_from_depth(depth, K) == pytest.approx(1.6, rel=0.03)


def test_plane_fit_rejects_degenerate_points():
    """Plane fit rejects degenerate points."""
    assert fit_plane_ransac(np.zeros((2, 3)), 0.1) is None
    # a vertical wall in front of the camera is not a ground plane
    assert camera_height_from_depth(np.full((64, 192), 5.0, np.float32), K) is None


def test_camera_height_scaler_converges_to_metric():
    """Camera height scaler converges to metric."""
    scaler = DepthScaler('camera_height', camera_height=1.6, smoothing=0.5)
    depth = ground_depth(1.6) / 4.0          # network predicts 4x too small
    for _ in range(10):
        scaled, scale = scaler.apply(depth, K)
    assert scale == pytest.approx(4.0, rel=0.03)
    assert scaler.last_fit_ok
    assert np.nanmedian(scaled / ground_depth(1.6)) == pytest.approx(1.0, rel=0.03)


def test_fixed_and_none_modes_and_validation():
    """Fixed and none modes and validation."""
    depth = np.ones((4, 4), np.float32)
    assert DepthScaler('none').apply(depth, K)[1] == 1.0
    scaled, scale = DepthScaler('fixed', factor=36.0).apply(depth, K)
    assert scale == 36.0 and scaled[0, 0] == 36.0
    scaler = DepthScaler()
    with pytest.raises(ValueError, match='scale_mode'):
        scaler.configure(mode='lidar')
    with pytest.raises(ValueError, match='factor'):
        scaler.configure(mode='fixed', factor=-1.0)
    assert scaler.mode == 'none'


@pytest.mark.parametrize('scale', [1.0, 2.5, 0.01])
def test_scale_and_mask_equals_the_straightforward_version(scale):
    """In-place scale + NaN mask gives the values of multiply-then-boolean-index."""
    from fmdepth_ros.runtime.scale import scale_and_mask
    rng = np.random.default_rng(5)
    depth = (rng.random((37, 53)) * 150).astype(np.float32)
    depth.ravel()[::11] = np.nan
    depth[0, :4] = [np.inf, -np.inf, 0.1, 100.0]      # the bounds themselves stay valid
    expected = depth * np.float32(scale)
    expected[~((expected >= 0.1) & (expected <= 100.0))] = np.nan
    out = depth.copy()
    assert scale_and_mask(out, scale, 0.1, 100.0) is out
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32

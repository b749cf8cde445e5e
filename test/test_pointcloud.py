"""depth -> point cloud (fmdepth_ros.pointcloud), ROS-free: every point against depth and K."""

from fmdepth_ros.pointcloud import cloud_fields, depth_to_cloud, pack_rgb, unpack_rgb
import numpy as np
import pytest

K = np.array([[50.0, 0.0, 31.5], [0.0, 40.0, 11.0], [0.0, 0.0, 1.0]])


def _depth(h=24, w=64, seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 30.0, (h, w)).astype(np.float32)
    depth[3, 5] = np.nan
    depth[7, 8] = 0.0
    depth[9, 10] = np.inf
    return depth


def expected_points(depth, K, stride, lo, hi):
    """Per-pixel loop (the independent reference): {(v, u): (x, y, z)} of the valid pixels."""
    out = {}
    for v in range(0, depth.shape[0], stride):
        for u in range(0, depth.shape[1], stride):
            z = float(depth[v, u])
            if not np.isfinite(z) or z <= 0:
                continue
            x, y = (u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1]
            if lo <= np.sqrt(x * x + y * y + z * z) <= hi:
                out[(v, u)] = (x, y, z)
    return out


@pytest.mark.parametrize('stride', [1, 3])
def test_organized_cloud_matches_each_pixel(stride):
    """Organised: [ceil(H/s), ceil(W/s)] points, NaN exactly where invalid / out of range."""
    depth = _depth()
    cloud = depth_to_cloud(depth, K, stride=stride, min_range=1.0, max_range=20.0,
                           organized=True)
    assert cloud.shape == (-(-24 // stride), -(-64 // stride))
    want = expected_points(depth, K, stride, 1.0, 20.0)
    for i in range(cloud.shape[0]):
        for j in range(cloud.shape[1]):
            point = cloud[i, j]
            ref = want.get((i * stride, j * stride))
            got = (float(point['x']), float(point['y']), float(point['z']))
            if ref is None:
                assert np.isnan(got).all(), (i, j, got)
            else:
                np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_unorganized_cloud_keeps_valid_points_in_row_order():
    """Unorganised: only the valid points, in row order, all finite."""
    depth = _depth(seed=1)
    cloud = depth_to_cloud(depth, K, stride=2, min_range=2.0, max_range=15.0)
    want = expected_points(depth, K, 2, 2.0, 15.0)
    assert cloud.ndim == 1 and len(cloud) == len(want) > 0
    got = np.stack([cloud['x'], cloud['y'], cloud['z']], -1)
    np.testing.assert_allclose(got, np.array(list(want.values())), rtol=1e-5, atol=1e-5)
    assert np.isfinite(got).all()


def test_rgb_is_packed_from_the_image_pixels():
    """The rgb field holds 0x00RRGGBB of the pixel each point came from."""
    depth = np.full((4, 6), 2.0, np.float32)
    depth[1, 2] = np.nan
    rgb = np.random.default_rng(2).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    cloud = depth_to_cloud(depth, K, rgb=rgb)
    keep = np.isfinite(depth)
    np.testing.assert_array_equal(unpack_rgb(cloud['rgb']), rgb[keep])
    bits = pack_rgb(rgb[:1, :1]).view(np.uint32)
    r, g, b = (int(c) for c in rgb[0, 0])
    assert int(bits[0, 0]) == (r << 16) | (g << 8) | b
    assert [f[0] for f in cloud_fields(True)] == ['x', 'y', 'z', 'rgb']
    assert cloud.dtype.itemsize == 16 and depth_to_cloud(depth, K).dtype.itemsize == 12


@pytest.mark.parametrize('kwargs, match', [
    ({'stride': 0}, 'stride must be >= 1'),
    ({'rgb': np.zeros((2, 2, 3), np.uint8)}, 'rgb must be'),
])
def test_bad_arguments_raise_one_line(kwargs, match):
    """Bad stride / rgb shape: ValueError naming the problem."""
    with pytest.raises(ValueError, match=match):
        depth_to_cloud(np.ones((4, 6), np.float32), K, **kwargs)

"""Tests of the camera geometry and differentiable warping (fmdepth_ros.geometry)."""

import math

from fmdepth_ros import geometry
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
import torch


def _K(batch=1, fx=50.0, fy=48.0, cx=20.0, cy=12.0, dtype=torch.float32):
    K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=dtype)
    return K.expand(batch, 3, 3).clone()


def _translation(t, batch=1, dtype=torch.float32):
    T = torch.eye(4, dtype=dtype).repeat(batch, 1, 1)
    T[:, :3, 3] = torch.tensor(t, dtype=dtype)
    return T


@pytest.mark.parametrize('batch', [1, 3])
def test_zero_motion_warps_image_onto_itself(batch):
    """Identity pose + arbitrary depth reproduces the source exactly, all pixels valid."""
    torch.manual_seed(0)
    img = torch.rand(batch, 3, 24, 40)
    depth = 0.5 + 20 * torch.rand(batch, 1, 24, 40)    # any positive depth
    warped, valid = geometry.warp(img, depth, torch.eye(4).repeat(batch, 1, 1), _K(batch))
    assert warped.shape == img.shape and valid.shape == (batch, 1, 24, 40)
    assert torch.allclose(warped, img, atol=1e-5)
    assert bool(valid.all())


def test_known_translation_on_plane_shifts_by_f_tx_over_z():
    """A fronto-parallel plane under x-translation shifts every pixel by fx*tx/Z."""
    h, w, fx, Z, tx = 24, 40, 50.0, 8.0, 0.4           # shift = fx*tx/Z = 2.5 px
    shift = fx * tx / Z
    K = _K(fx=fx)
    depth = torch.full((1, 1, h, w), Z)
    T = _translation([tx, 0.0, 0.0])
    points = geometry.backproject(depth, torch.linalg.inv(K))
    pix, z = geometry.project(points, K, T)
    grid = geometry.pixel_grid(h, w)[:2].T                # [HW, 2] target pixels
    assert torch.allclose(pix[0, :, 0] - grid[:, 0], torch.full((h * w,), shift), atol=1e-4)
    assert torch.allclose(pix[0, :, 1], grid[:, 1], atol=1e-4)
    assert torch.allclose(z, torch.full_like(z, Z))
    # A horizontal ramp is reproduced exactly by bilinear sampling: warped(u) = src(u + shift).
    ramp = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 2, h, w)
    warped, valid = geometry.warp(ramp, depth, T, K)
    cols = torch.arange(w, dtype=torch.float32)
    inside = cols + shift <= w - 1
    assert torch.allclose(warped[0, 0, 5, inside], cols[inside] + shift, atol=1e-4)
    assert bool((valid[0, 0, :, inside] == 1).all()) and bool((valid[0, 0, :, ~inside] == 0).all())
    # border padding: out-of-image samples take the border value
    assert torch.allclose(warped[0, 0, 5, ~inside], torch.full((int((~inside).sum()),), w - 1.0))


def test_points_behind_source_camera_are_invalid():
    """Projections with non-positive depth are masked out and stay finite."""
    depth = torch.full((1, 1, 6, 8), 2.0)
    warped, valid = geometry.warp(torch.rand(1, 1, 6, 8), depth, _translation([0, 0, -3.0]),
                                  _K(fx=5, fy=5, cx=4, cy=3))
    assert bool((valid == 0).all()) and bool(torch.isfinite(warped).all())


def test_backproject_project_roundtrip_any_size():
    """Back-projection followed by projection with identity returns the pixel grid."""
    depth = 1 + torch.rand(2, 1, 5, 7)
    K = _K(2)
    pix, z = geometry.project(geometry.backproject(depth, torch.linalg.inv(K)), K,
                              torch.eye(4).expand(2, 4, 4))
    grid = geometry.pixel_grid(5, 7)[:2].T
    assert torch.allclose(pix, grid.expand(2, -1, -1), atol=1e-4)
    assert torch.allclose(z, depth.view(2, -1), atol=1e-5)


def test_axis_angle_matches_scipy():
    """Axis-angle to matrix agrees with scipy Rotation.from_rotvec."""
    rng = np.random.default_rng(1)
    rotvec = rng.normal(size=(5, 3)) * 0.7
    R = geometry.axis_angle_to_matrix(torch.tensor(rotvec))
    assert np.allclose(R.numpy(), Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-6)
    assert torch.allclose(geometry.axis_angle_to_matrix(torch.zeros(1, 3)), torch.eye(3))


def test_pose_inversion_and_composition_roundtrip():
    """Pose inversion/composition round-trip to identity; T = [t] R."""
    torch.manual_seed(2)
    aa, t = 0.5 * torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    T = geometry.pose_from_axisangle(aa, t)
    T_inv = geometry.pose_from_axisangle(aa, t, invert=True)
    eye = torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    assert torch.allclose(T @ T_inv, eye, atol=1e-12)
    assert torch.allclose(geometry.invert_pose(T), T_inv, atol=1e-12)
    assert torch.allclose(geometry.invert_pose(geometry.invert_pose(T)), T, atol=1e-12)
    assert torch.allclose(torch.linalg.inv(T), T_inv, atol=1e-10)
    # T = [t] R: rotation first, then translation
    p = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    R = geometry.axis_angle_to_matrix(aa)
    assert torch.allclose((T[:, :3, :3] @ p) + T[:, :3, 3], R @ p + t, atol=1e-12)
    # composing a->b->a through warp geometry returns the original pixels
    K = _K(4, dtype=torch.float64)
    depth = 3 + torch.rand(4, 1, 4, 6, dtype=torch.float64)
    pts = geometry.backproject(depth, torch.linalg.inv(K))
    pix, _ = geometry.project(pts, K, T_inv @ T)
    assert torch.allclose(pix, geometry.pixel_grid(4, 6, dtype=torch.float64)[:2].T, atol=1e-9)


class TestScaleIntrinsics:
    """``geometry.scale_intrinsics`` on tensors and numpy arrays (per-function, kornia style)."""

    expected = [[25.0, 0, 10.0], [0, 12.0, 3.0], [0, 0, 1]]

    def test_smoke_tensor_and_numpy(self):
        K = _K(1)[0]
        assert torch.allclose(geometry.scale_intrinsics(K, 0.5, 0.25), torch.tensor(self.expected))
        out = geometry.scale_intrinsics(K.numpy(), 0.5, 0.25)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(out, self.expected)
        # nested lists and integer arrays become float64
        out = geometry.scale_intrinsics([[50, 0, 20], [0, 48, 12], [0, 0, 1]], 0.5, 0.25)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, self.expected)

    @pytest.mark.parametrize('shape', [(3, 3), (1, 3, 3), (4, 3, 3), (2, 5, 3, 3)])
    def test_batch_shapes(self, shape):
        K = torch.rand(shape, dtype=torch.float64)
        out_t = geometry.scale_intrinsics(K, 2.0, 0.5)
        out_n = geometry.scale_intrinsics(K.numpy(), 2.0, 0.5)
        assert out_t.shape == shape and out_n.shape == shape
        np.testing.assert_allclose(out_t.numpy(), out_n, rtol=0, atol=0)
        assert torch.equal(out_t[..., 0, :], 2.0 * K[..., 0, :])
        assert torch.equal(out_t[..., 1, :], 0.5 * K[..., 1, :])
        assert torch.equal(out_t[..., 2, :], K[..., 2, :])

    def test_projection_matrix_rows(self):
        """A [3, 4] P scales like K: the baseline term -fx*B follows fx."""
        P = np.array([[50.0, 0, 20, -50.0 * 0.5], [0, 48, 12, 0], [0, 0, 1, 0]])
        out = geometry.scale_intrinsics(P, 0.5, 2.0)
        np.testing.assert_allclose(out, [[25, 0, 10, -12.5], [0, 96, 24, 0], [0, 0, 1, 0]])

    def test_input_unchanged(self):
        K_t, K_n = _K(2), _K(1)[0].numpy().copy()
        before_t, before_n = K_t.clone(), K_n.copy()
        geometry.scale_intrinsics(K_t, 3.0, 3.0)
        geometry.scale_intrinsics(K_n, 3.0, 3.0)
        assert torch.equal(K_t, before_t) and np.array_equal(K_n, before_n)

    def test_projection_follows_the_resize(self):
        """A point projects to (sx*u, sy*v) with the scaled intrinsics."""
        K = _K(1, dtype=torch.float64)
        pts = torch.tensor([[[1.0], [-0.5], [4.0], [1.0]]], dtype=torch.float64)
        pix, _ = geometry.project(pts, K, torch.eye(4, dtype=torch.float64)[None])
        pix_s, _ = geometry.project(pts, geometry.scale_intrinsics(K, 0.3, 1.7),
                                    torch.eye(4, dtype=torch.float64)[None])
        factors = torch.tensor([0.3, 1.7], dtype=torch.float64)
        assert torch.allclose(pix_s[0, 0], pix[0, 0] * factors)

    @pytest.mark.parametrize('dtype', [torch.float16, torch.float32, torch.float64])
    def test_dtype_and_device_kept(self, dtype):
        K = _K(2, dtype=dtype)
        out = geometry.scale_intrinsics(K, 0.5, 0.5)
        assert out.dtype == dtype and out.device == K.device

    def test_gradcheck(self):
        K = _K(2, dtype=torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(lambda k: geometry.scale_intrinsics(k, 0.7, 1.3), (K,))

    @pytest.mark.parametrize('bad', [np.zeros(3), np.zeros((2, 3)), torch.zeros(4, 4)])
    def test_bad_shape_one_line_error(self, bad):
        with pytest.raises(ValueError, match='intrinsics must be'):
            geometry.scale_intrinsics(bad, 1.0, 1.0)


def test_intrinsics_pyramid():
    """The pyramid halves the intrinsics per level."""
    K = _K(2)
    pyr = geometry.intrinsics_pyramid(K[0], 4)
    assert len(pyr) == 4 and math.isclose(float(pyr[3][0, 0]), 50.0 / 8)
    assert math.isclose(float(pyr[3][1, 2]), 12.0 / 8) and float(pyr[3][2, 2]) == 1.0


def test_warp_gradcheck_float64():
    """The warp is differentiable w.r.t. source, depth and pose (finite differences)."""
    torch.manual_seed(3)
    src = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    depth = (2 + torch.rand(1, 1, 4, 5, dtype=torch.float64)).requires_grad_()
    aa = (0.02 * torch.randn(1, 3, dtype=torch.float64)).requires_grad_()
    t = (0.05 * torch.randn(1, 3, dtype=torch.float64)).requires_grad_()
    K = _K(1, fx=4.0, fy=4.0, cx=2.0, cy=1.5, dtype=torch.float64)

    def fn(src, depth, aa, t):
        return geometry.warp(src, depth, geometry.pose_from_axisangle(aa, t), K)[0]

    assert torch.autograd.gradcheck(fn, (src, depth, aa, t), eps=1e-6, atol=1e-5)


def test_warp_rejects_mismatched_sizes():
    """Mismatched source/depth sizes raise a clear ValueError."""
    with pytest.raises(ValueError, match='share batch size'):
        geometry.warp(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 4, 4), torch.eye(4)[None], _K())


def test_warp_half_precision_inputs_use_float32_geometry():
    """Half-precision depth (autocast) must not quantise pixel coordinates."""
    torch.manual_seed(4)
    img = torch.rand(1, 3, 16, 600)
    depth = torch.full((1, 1, 16, 600), 7.0)
    T = _translation([0.05, 0.0, 0.0])
    K = _K(fx=300.0, cx=300.0, cy=8.0)
    ref, _ = geometry.warp(img, depth, T, K)
    half, valid = geometry.warp(img.bfloat16(), depth.bfloat16(), T, K)
    assert half.dtype == torch.float32 and valid.dtype == torch.float32
    assert torch.allclose(half, ref, atol=2e-2)

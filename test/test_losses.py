"""Tests of the FeatDepth losses (fmdepth_ros.losses), including the paper's key claim."""

from fmdepth_ros import geometry, losses
from fmdepth_ros.config import LossConfig
import numpy as np
import pytest
from scipy import ndimage
import torch


def test_ssim_zero_for_identical_and_positive_otherwise():
    """SSIM loss is ~0 for identical images, symmetric, in [0, 1] and larger for worse matches."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 20)
    assert float(losses.ssim_loss(x, x).max()) < 1e-4
    noisy = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    a, b = losses.ssim_loss(x, noisy), losses.ssim_loss(noisy, x)
    assert a.shape == x.shape and torch.allclose(a, b, atol=1e-6)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert float(losses.ssim_loss(x, 1 - x).mean()) > float(a.mean()) > 0.001
    # one interior pixel against the textbook formula on its 3x3 window (population stats)
    px, py = x[0, 1, 4:7, 5:8].double().numpy(), noisy[0, 1, 4:7, 5:8].double().numpy()
    mx, my = px.mean(), py.mean()
    vx, vy, cxy = px.var(), py.var(), ((px - mx) * (py - my)).mean()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert float(a[0, 1, 5, 6]) == pytest.approx((1 - ssim) / 2, abs=1e-5)


def test_photometric_error_formula():
    """The photometric error is 0.85 SSIM + 0.15 robust L1, channel-averaged."""
    torch.manual_seed(1)
    x, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    expected = (0.85 * losses.ssim_loss(x, y).mean(1, keepdim=True)
                + 0.15 * torch.sqrt((x - y) ** 2 + 1e-6).mean(1, keepdim=True))
    assert torch.allclose(losses.photometric_error(x, y), expected)
    same = losses.photometric_error(x, x)
    assert same.shape == (1, 1, 8, 8) and torch.allclose(same, torch.full_like(same, 0.15e-3),
                                                         atol=1e-5)


def test_min_reprojection_and_automask():
    """Per-pixel min picks the best source; an unmoving source makes the identity term win."""
    torch.manual_seed(2)
    target = torch.rand(1, 3, 10, 12)
    good, bad = target.clone(), torch.rand(1, 3, 10, 12)
    errors = [losses.photometric_error(bad, target), losses.photometric_error(good, target)]
    value, index = losses.min_reprojection(errors)
    assert bool((index == 1).all()) and torch.allclose(value, errors[1])
    # a static source (equal to the target) -> identity error ~0 beats a poor warp
    identity = losses.identity_errors([target.clone(), bad], target)
    value, index = losses.min_reprojection(errors[:1], identity)
    assert bool((index == 0).all()) and float(value.max()) < 1e-3


def _textureless_scene(width=64, height=40, flat=(8, 32, 20, 44), seed=0):
    """Random-texture canvas with one constant square (rows y0:y1, cols x0:x1)."""
    rng = np.random.default_rng(seed)
    canvas = rng.uniform(0, 1, size=(3, height, width)).astype(np.float32)
    y0, y1, x0, x1 = flat
    canvas[:, y0:y1, x0:x1] = 0.5
    return canvas


def _distance_features(image):
    """Hand-made stand-in for learned features: distance to the nearest textured pixel.

    Computed from the image alone: a pixel is flat when its 3x3 neighbourhood is constant;
    inside flat regions the Euclidean distance transform grows linearly (|gradient| = 1), i.e.
    the features have large first-order gradients exactly where the image has none.
    """
    img = image[0].numpy()                                    # [3, H, W]
    local_range = (ndimage.maximum_filter(img, size=(1, 3, 3))
                   - ndimage.minimum_filter(img, size=(1, 3, 3))).max(0)
    flat = local_range < 1e-6
    edt = ndimage.distance_transform_edt(flat).astype(np.float32)
    return torch.from_numpy(edt)[None, None]                  # [1, 1, H, W]


def test_feature_metric_gradient_nonzero_where_photometric_gradient_vanishes():
    """Key claim: in a textureless region dL_ph/d(depth) ~ 0 but dL_fm/d(depth) != 0."""
    h, w, shift_true, Z = 40, 48, 3, 10.0
    canvas = torch.from_numpy(_textureless_scene(width=w + 8))
    target = canvas[None, :, :, 4:4 + w]
    source = canvas[None, :, :, 4 + shift_true:4 + shift_true + w]
    fx = 40.0
    K = torch.tensor([[[fx, 0, w / 2], [0, fx, h / 2], [0, 0, 1]]])
    # source pixel u_s = u_t + fx*tx/Z must equal u_t - shift_true
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = -shift_true * Z / fx
    depth = torch.full((1, 1, h, w), Z * 1.3, requires_grad=True)   # wrong depth

    warped, _ = geometry.warp(source, depth, T, K)
    photo = losses.photometric_error(warped, target).mean()
    (g_photo,) = torch.autograd.grad(photo, depth)

    f_t, f_s = _distance_features(target), _distance_features(source)
    assert float(f_t.max()) > 5                                  # large-gradient feature field
    warped_f, _ = geometry.warp(f_s, depth, T, K)
    fm = losses.feature_metric_loss(f_t, [warped_f])
    (g_fm,) = torch.autograd.grad(fm, depth)

    interior = torch.zeros(h, w, dtype=torch.bool)             # flat square minus a margin
    interior[8 + 5:32 - 5, 20 - 4 + 5:44 - 4 - 5] = True
    photo_mag = float(g_photo[0, 0][interior].abs().max())
    fm_mag = float(g_fm[0, 0][interior].abs().sum())
    assert photo_mag < 1e-9
    assert fm_mag > 1e-4
    # sanity: the photometric gradient is alive in the textured part
    assert float(g_photo[0, 0][:, :8].abs().sum()) > 1e-4


def test_feature_metric_loss_min_over_sources():
    """The feature-metric loss takes the per-pixel minimum over sources of the channel-mean rho."""
    torch.manual_seed(3)
    f = torch.rand(2, 4, 6, 7)
    assert float(losses.feature_metric_loss(f, [torch.rand_like(f), f])) == pytest.approx(1e-3)
    far = losses.feature_metric_loss(f, [f + 1.0])
    assert float(far) == pytest.approx(np.sqrt(1 + 1e-6), rel=1e-5)


def test_discriminative_and_convergent_rank_feature_maps():
    """Discriminative loss prefers large 1st-order gradients; convergent penalises 2nd order."""
    torch.manual_seed(4)
    image = torch.full((1, 3, 16, 16), 0.5)                    # flat image: weights are 1
    xs = torch.arange(16, dtype=torch.float32).view(1, 1, 1, 16).expand(1, 8, 16, 16)
    constant = torch.zeros(1, 8, 16, 16)
    gentle, steep = 0.1 * xs, 1.0 * xs
    bumpy = torch.rand(1, 8, 16, 16) * 2.0
    dis = {k: float(losses.discriminative_loss(v, image))
           for k, v in {'constant': constant, 'gentle': gentle, 'steep': steep}.items()}
    assert dis['steep'] < dis['gentle'] < dis['constant'] == 0.0
    assert dis['steep'] == pytest.approx(-1.0)                # |dx| = 1 everywhere, dy = 0
    cvt_ramp = float(losses.convergent_loss(steep, image))
    cvt_quad = float(losses.convergent_loss(0.1 * xs ** 2, image))
    cvt_bumpy = float(losses.convergent_loss(bumpy, image))
    assert cvt_ramp == pytest.approx(0.0, abs=1e-6)
    assert 0 < cvt_quad < cvt_bumpy
    # edge-awareness: the same feature gradient counts less on an image edge
    edge_img = (xs[:, :3] > 7.5).float()
    step = (xs[:, :1] > 7.5).float().expand(1, 8, 16, 16)
    assert float(losses.discriminative_loss(step, edge_img)) > float(
        losses.discriminative_loss(step, image))


def test_smoothness_invariant_to_disparity_scale():
    """Mean-normalised smoothness does not change when the disparity is scaled."""
    torch.manual_seed(5)
    disp = torch.rand(2, 1, 12, 20) * 0.3 + 0.05
    image = torch.rand(2, 3, 24, 40)                           # resized (area) to disp size
    base = losses.smoothness_loss(disp, image)
    for k in (0.1, 7.0):
        assert torch.allclose(losses.smoothness_loss(disp * k, image), base, rtol=1e-5)
    raw = losses.smoothness_loss(disp, image, mean_normalise=False)
    assert torch.allclose(losses.smoothness_loss(7 * disp, image, mean_normalise=False), 7 * raw,
                          rtol=1e-5)


def test_smoothness_is_edge_aware():
    """A disparity step on an image edge costs less than the same step in a flat region."""
    xs = torch.arange(20, dtype=torch.float32).view(1, 1, 1, 20).expand(1, 1, 12, 20)
    image = (xs > 9.5).float().expand(1, 3, 12, 20)
    aligned = 0.2 + 0.3 * (xs > 9.5).float()
    misaligned = 0.2 + 0.3 * (xs > 4.5).float()
    assert float(losses.smoothness_loss(aligned, image)) < float(
        losses.smoothness_loss(misaligned, image))


def test_total_depth_loss_weights():
    """Total = sum_s ph_s/S + w_sm sm_s/2^s/S + w_fm fm, with weights from LossConfig."""
    cfg = LossConfig(smoothness_weight=0.1, feature_metric_weight=0.5)
    ph = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]
    sm = [torch.tensor(v) for v in (8.0, 8.0, 8.0, 8.0)]
    total, logs = losses.total_depth_loss(ph, sm, torch.tensor(2.0), cfg)
    expected = 10 / 4 + 0.1 * 8 * (1 + 0.5 + 0.25 + 0.125) / 4 + 0.5 * 2.0
    assert float(total) == pytest.approx(expected)
    assert logs['feature_metric'] == pytest.approx(1.0)
    cfg.use_feature_metric = False
    total, logs = losses.total_depth_loss(ph, sm, torch.tensor(2.0), cfg)
    assert float(total) == pytest.approx(expected - 1.0) and 'feature_metric' not in logs
    with pytest.raises(ValueError):
        losses.total_depth_loss(ph, sm[:2], None, cfg)


def test_feature_net_loss_assembles_reconstruction_and_regulariser():
    """Stage-1 total = reconstruction + (-dis L1st + cvt L2nd) / 2^i / n over levels."""
    torch.manual_seed(6)
    image = torch.rand(1, 3, 32, 32)
    recons = {s: torch.nn.functional.interpolate(image, scale_factor=0.5 ** s, mode='bilinear',
                                                 align_corners=False) for s in range(4)}
    feats = [torch.rand(1, 4, 16 // 2 ** i, 16 // 2 ** i) for i in range(3)]
    cfg = LossConfig(discriminative_weight=0.2, convergent_weight=0.3)
    total, logs = losses.feature_net_loss(image, feats, recons, cfg)
    rec = losses.reconstruction_loss(recons, image)
    reg = sum((-0.2 * losses.first_order_edge_aware(f, image)
               + 0.3 * losses.second_order_edge_aware(f, image)) / 2 ** i / 3
              for i, f in enumerate(feats))
    assert float(total) == pytest.approx(float(rec + reg), rel=1e-5)
    assert float(rec) < 0.01 and logs['discriminative'] < 0 < logs['convergent']


def test_synthetic_experiment_feature_metric_converges_closer():
    """Fast version of the synthetic experiment: FM + photometric beats photometric alone."""
    from fmdepth_ros.experiments import feature_metric_synthetic as exp
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scene = exp.render_scene(48, 144, seed=0)
        masks = {'flat': scene.flat, 'all': torch.ones_like(scene.flat)}
        photo = exp.optimise(scene, fm_weight=0.0, iterations=200)
        fm = exp.optimise(scene, fm_weight=0.05, iterations=200)
    finally:
        torch.set_num_threads(threads)
    err_photo = exp.depth_errors(photo['depth'], scene.depth, masks)
    err_fm = exp.depth_errors(fm['depth'], scene.depth, masks)
    assert err_fm['absrel_flat'] < 0.7 * err_photo['absrel_flat']
    assert err_fm['absrel_all'] < err_photo['absrel_all']

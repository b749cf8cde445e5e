"""Tests of the optimised inference path (fmdepth_ros.runtime.inference) on the CPU."""

import os
import threading

from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.geometry import invert_pose, pose_from_axisangle
from fmdepth_ros.networks.depth_net import DepthNet, disp_to_depth
from fmdepth_ros.runtime.inference import (cpu_has_native_bf16, DepthPredictor, fast_options,
                                           PoseEstimator, PRECISIONS, select_device,
                                           set_cpu_threads, usable_cpu_count)
import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope='module')
def cfg():
    """Return the tiny config (64x192) so every forward is fast on 2 cores."""
    torch.set_num_threads(1)
    return small_cpu_config()


@pytest.fixture(scope='module')
def depth_net(cfg):
    """Build a randomly initialised ResNet-18 DepthNet (featdepth decoder, half-res output)."""
    torch.manual_seed(0)
    return DepthNet(18, min_depth=cfg.model.min_depth, max_depth=cfg.model.max_depth).eval()


def _image(height, width, seed=0):
    """Smooth random RGB image [H, W, 3] uint8 (smooth so resizing is well conditioned)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    big = F.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None], size=(height, width),
                        mode='bilinear', align_corners=False)
    return big[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _reference_depth(net, cfg, image):
    """Plain eager fp32 pipeline written independently: CPU resize, forward, resize back.

    The CPU resize is antialiased bilinear on the uint8 pixels (as torchvision's ``Resize`` on
    a uint8 tensor), then ``/ 255``.
    """
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    if x.shape[-2:] != (cfg.model.height, cfg.model.width):
        x = F.interpolate(x.contiguous(memory_format=torch.channels_last),
                          size=(cfg.model.height, cfg.model.width), mode='bilinear',
                          align_corners=False, antialias=True)
    x = x.float() / 255.0
    with torch.no_grad():
        disp = net(x)[0]
    scaled, _ = disp_to_depth(disp, cfg.model.min_depth, cfg.model.max_depth)
    scaled = F.interpolate(scaled, size=image.shape[:2], mode='bilinear', align_corners=False)
    return (1.0 / scaled)[0, 0].numpy(), disp[0, 0].numpy()


def _max_rel(a, b):
    """Max relative difference of ``a`` to ``b``."""
    return float(np.max(np.abs(a - b) / np.abs(b)))


def test_eager_matches_independent_reference_and_shapes(depth_net, cfg):
    """Eager fp32 path equals an independent plain pipeline; shapes, dtype and range."""
    image = _image(100, 300)
    predictor = DepthPredictor(depth_net, cfg)
    depth = predictor.predict(image)
    ref_depth, ref_disp = _reference_depth(depth_net, cfg, image)
    assert depth.shape == (100, 300) and depth.dtype == np.float32
    assert np.isfinite(depth).all()
    assert depth.min() >= cfg.model.min_depth * 0.999
    assert depth.max() <= cfg.model.max_depth * 1.001
    assert _max_rel(depth, ref_depth) < 1e-5
    disp = predictor.predict_disparity(image)
    assert disp.shape == (cfg.model.height // 2, cfg.model.width // 2)
    np.testing.assert_allclose(disp, ref_disp, rtol=1e-5, atol=1e-6)


def test_disparity_and_depth_are_consistent(depth_net, cfg):
    """Depth is the resized disp_to_depth of the returned disparity."""
    image = _image(cfg.model.height, cfg.model.width, seed=3)
    predictor = DepthPredictor(depth_net, cfg)
    disp = torch.from_numpy(predictor.predict_disparity(image))[None, None]
    scaled, _ = disp_to_depth(disp, cfg.model.min_depth, cfg.model.max_depth)
    scaled = F.interpolate(scaled, size=image.shape[:2], mode='bilinear', align_corners=False)
    np.testing.assert_allclose(predictor.predict(image), (1.0 / scaled)[0, 0].numpy(),
                               rtol=1e-5)


@pytest.mark.parametrize('options, tolerance', [
    ({'channels_last': True}, 1e-4),
    ({'precision': 'bf16'}, 3e-2),
    ({'precision': 'bf16', 'channels_last': True}, 3e-2),
    ({'precision': 'bf16', 'channels_last': True, 'cast_weights': True}, 3e-2),
    ({'cuda_graphs': True}, 1e-6),   # CPU: ignored with a note, must still be exact
])
def test_optimisation_toggles_give_the_same_depth(depth_net, cfg, options, tolerance):
    """Check channels_last / bf16 / graph toggles agree with eager fp32."""
    image = _image(96, 320, seed=1)
    eager = DepthPredictor(depth_net, cfg).predict(image)
    optimised = DepthPredictor(depth_net, cfg, **options)
    try:
        depth = optimised.predict(image)
    except RuntimeError as exc:   # bf16 autocast kernels missing on this CPU
        pytest.skip(f'{options} not supported on this CPU: {exc}')
    assert np.isfinite(depth).all()
    assert _max_rel(depth, eager) < tolerance
    if options.get('cuda_graphs'):
        assert any('CUDA graphs' in note for note in optimised.notes)
    if options.get('cast_weights'):
        assert all(p.dtype == torch.bfloat16 for p in optimised.net.parameters())


def test_weight_swap_into_low_precision_weights(depth_net, cfg):
    """fp32 refined weights are cast while copied into a bf16-weight predictor."""
    torch.manual_seed(4)
    other = DepthNet(18).eval()
    image = _image(64, 192, seed=7)
    options = {'precision': 'bf16', 'cast_weights': True}
    predictor = DepthPredictor(depth_net, cfg, **options)
    predictor.load_depth_state({'depth_net': other.state_dict()})
    np.testing.assert_array_equal(predictor.predict(image),
                                  DepthPredictor(other, cfg, **options).predict(image))


@pytest.mark.skipif(os.environ.get('FMDEPTH_TEST_COMPILE') != '1',
                    reason='torch.compile takes over a minute on 2 CPU cores; '
                           'set FMDEPTH_TEST_COMPILE=1 to run it')
def test_compile_gives_the_same_depth(depth_net, cfg):
    """Check torch.compile agrees with eager."""
    image = _image(64, 192, seed=2)
    eager = DepthPredictor(depth_net, cfg).predict(image)
    compiled = DepthPredictor(depth_net, cfg, compile=True)
    assert _max_rel(compiled.predict(image), eager) < 1e-4


def test_buffers_are_reused_and_reallocated_on_size_change(depth_net, cfg):
    """Same-size frames reuse every buffer; a new size re-allocates the sized ones."""
    predictor = DepthPredictor(depth_net, cfg)

    def pointers():
        return (predictor._uploader.host.data_ptr(), predictor._net_in.data_ptr(),
                predictor._depth.data_ptr(), predictor._disp.data_ptr(),
                predictor._depth_host.data_ptr())

    first = predictor.predict(_image(80, 240, seed=0))
    before = pointers()
    second = predictor.predict(_image(80, 240, seed=1))
    assert pointers() == before
    assert not np.array_equal(first, second)   # a fresh result, not a stale buffer
    assert first.base is None or first.base is not second.base

    out = np.empty((80, 240), np.float32)
    assert predictor.predict(_image(80, 240, seed=1), out=out) is out
    np.testing.assert_array_equal(out, second)

    resized = predictor.predict(_image(50, 130, seed=1))
    assert resized.shape == (50, 130)
    assert predictor._uploader.host.shape == (50, 130, 3)
    assert predictor._depth.shape == (1, 1, 50, 130)
    assert predictor._net_in.data_ptr() == before[1]   # network input size never changes


def test_caller_network_is_not_modified(depth_net, cfg):
    """The predictor works on its own copy of the network."""
    params = [p.detach().clone() for p in depth_net.parameters()]
    DepthPredictor(depth_net, cfg, channels_last=True).predict(_image(64, 192))
    assert all(torch.equal(a, b) for a, b in zip(params, depth_net.parameters()))
    assert all(p.is_contiguous() for p in depth_net.parameters())


def test_load_depth_state_swaps_weights_in_place(depth_net, cfg):
    """Weight swap changes the output, keeps storage, rejects bad state dicts."""
    torch.manual_seed(1)
    other = DepthNet(18).eval()
    image = _image(64, 192, seed=4)
    predictor = DepthPredictor(depth_net, cfg)
    before = predictor.predict(image)
    ptrs = [p.data_ptr() for p in predictor.net.parameters()]
    predictor.load_depth_state({'depth_net.' + k: v for k, v in other.state_dict().items()})
    after = predictor.predict(image)
    assert [p.data_ptr() for p in predictor.net.parameters()] == ptrs
    np.testing.assert_allclose(after, DepthPredictor(other, cfg).predict(image), rtol=1e-5)
    assert not np.allclose(before, after)
    with pytest.raises(ValueError, match='missing'):
        predictor.load_depth_state({'encoder.conv1.weight': torch.zeros(64, 3, 7, 7)})
    bad = dict(other.state_dict())
    bad['encoder.conv1.weight'] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(ValueError, match='shape'):
        predictor.load_depth_state(bad)


def test_weight_swap_is_thread_safe(depth_net, cfg):
    """Every frame predicted while weights are swapped equals one of the two networks' outputs."""
    torch.manual_seed(2)
    other = DepthNet(18).eval()
    image = _image(64, 192, seed=5)
    expected = [DepthPredictor(net, cfg).predict(image) for net in (depth_net, other)]
    states = [depth_net.state_dict(), other.state_dict()]
    predictor = DepthPredictor(depth_net, cfg)
    stop = threading.Event()

    def swapper():
        i = 0
        while not stop.is_set():
            i += 1
            predictor.load_depth_state({'depth_net': states[i % 2]})   # OnlineRefiner form

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        results = [predictor.predict(image) for _ in range(6)]
    finally:
        stop.set()
        thread.join()
    for depth in results:
        assert min(_max_rel(depth, e) for e in expected) < 1e-5


def test_input_validation(depth_net, cfg):
    """Bad images and precisions raise clear ValueErrors."""
    predictor = DepthPredictor(depth_net, cfg)
    image = _image(64, 192, seed=8)
    read_only = np.frombuffer(image.tobytes(), np.uint8).reshape(image.shape)   # like a ROS msg
    assert not read_only.flags.writeable
    np.testing.assert_array_equal(predictor.predict(read_only), predictor.predict(image))
    flipped = np.ascontiguousarray(image[:, :, ::-1])[:, :, ::-1]   # non-contiguous view
    np.testing.assert_array_equal(predictor.predict(flipped), predictor.predict(image))
    with pytest.raises(ValueError, match='uint8'):
        predictor.predict(np.zeros((64, 192, 3), np.float32))
    with pytest.raises(ValueError, match='uint8'):
        predictor.predict(np.zeros((64, 192), np.uint8))
    with pytest.raises(ValueError, match='precision'):
        DepthPredictor(depth_net, cfg, precision='int8')


def test_select_device():
    """Device resolution and the CPU fallback warning."""
    assert select_device('cpu') == ('cpu', None)
    with pytest.raises(ValueError, match='unknown device'):
        select_device('tpu')
    if torch.cuda.is_available():
        assert select_device('auto') == ('cuda', None)
    else:
        device, warning = select_device('cuda')
        assert device == 'cpu' and 'CUDA' in warning and 'CPU' in warning
        device, warning = select_device('auto')
        assert device == 'cpu' and 'CUDA' in warning


def test_set_cpu_threads_auto_is_half_the_usable_cores():
    """0 = half the usable cores (at least 1), explicit counts are applied, < 0 rejected."""
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(0) == max(1, usable_cpu_count() // 2) == torch.get_num_threads()
        assert set_cpu_threads(3) == 3 == torch.get_num_threads()
        with pytest.raises(ValueError, match='cpu_threads must be >= 0'):
            set_cpu_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_fall_back_to_cpu_keeps_predicting(depth_net, cfg):
    """The OOM fallback path switches to CPU fp32 and keeps working."""
    image = _image(64, 192, seed=6)
    predictor = DepthPredictor(depth_net, cfg, precision='bf16')
    predictor.fall_back_to_cpu('CUDA out of memory during inference')
    assert predictor.precision == 'fp32' and predictor.device.type == 'cpu'
    assert any('out of memory' in note for note in predictor.notes)
    np.testing.assert_allclose(predictor.predict(image),
                               DepthPredictor(depth_net, cfg).predict(image), rtol=1e-5)


class _FixedPoseNet(torch.nn.Module):
    """PoseNet stand-in with a known output; records the order of its inputs."""

    def __init__(self, axisangle, translation):
        """Store the fixed output as parameters (so state dicts work)."""
        super().__init__()
        self.axisangle = torch.nn.Parameter(torch.tensor([axisangle]))
        self.translation = torch.nn.Parameter(torch.tensor([translation]))

    def forward(self, frame_a, frame_b):
        """Return the fixed output, negated when the earlier frame is the brighter one."""
        # the sign depends on which frame is brighter: proves the time order is kept
        sign = torch.sign(frame_b.mean() - frame_a.mean())
        return self.axisangle * sign, self.translation * sign


def test_pose_direction_is_earlier_from_later(cfg):
    """estimate() returns the inverse of PoseNet's T_later_earlier."""
    aa, t = [0.0, 0.1, 0.0], [0.2, 0.0, 1.0]
    estimator = PoseEstimator(_FixedPoseNet(aa, t), cfg)
    dark, bright = np.full((64, 192, 3), 50, np.uint8), np.full((64, 192, 3), 200, np.uint8)
    T = estimator.estimate(dark, bright)
    T_later_earlier = pose_from_axisangle(torch.tensor([aa]), torch.tensor([t]))[0].double()
    assert T.shape == (4, 4) and T.dtype == np.float64
    np.testing.assert_allclose(T, invert_pose(T_later_earlier).numpy(), atol=1e-6)
    np.testing.assert_allclose(T @ T_later_earlier.numpy(), np.eye(4), atol=1e-6)
    # a point 1 m ahead of the later camera, seen from the earlier camera
    p_later = np.array([0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(T @ p_later, np.linalg.solve(T_later_earlier.numpy(), p_later),
                               atol=1e-6)
    # swapped frames: the stand-in negates its output, the estimator still inverts it
    T_swapped = pose_from_axisangle(-torch.tensor([aa]), -torch.tensor([t]), invert=True)[0]
    np.testing.assert_allclose(estimator.estimate(bright, dark), T_swapped.numpy(), atol=1e-6)


def test_pose_matches_training_convention(cfg):
    """estimate(I_-1, I_0) is the T_src_tgt training uses for source -1; +1 is its inverse."""
    from fmdepth_ros.checkpoint import build_model
    torch.manual_seed(3)
    model = build_model(cfg).eval()
    images = [_image(64, 192, seed=s) for s in (10, 11, 12)]   # frames -1, 0, +1
    estimator = PoseEstimator(model, cfg)
    by_id = dict(zip((-1, 0, 1), images))
    batch = torch.stack([torch.from_numpy(by_id[fid]).permute(2, 0, 1).float() / 255
                         for fid in cfg.model.frame_ids])[None]
    with torch.no_grad():
        poses = model.predict_poses(batch)
    np.testing.assert_allclose(estimator.estimate(by_id[-1], by_id[0]), poses[-1][0].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.inv(estimator.estimate(by_id[0], by_id[1])),
                               poses[1][0].numpy(), atol=1e-5)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_pose_with_low_precision_weights_matches_fp32(cfg, precision):
    """cast_weights stores PoseNet in bf16/fp16 (no autocast); poses stay close to fp32 ones."""
    from fmdepth_ros.checkpoint import build_model
    if precision == 'fp16' and not torch.cuda.is_available():
        pytest.skip('fp16 convolutions are a CUDA path')
    torch.manual_seed(4)
    model = build_model(cfg).eval()
    earlier, later = _image(64, 192, seed=20), _image(64, 192, seed=21)
    reference = PoseEstimator(model, cfg).estimate_axisangle(earlier, later)
    device = 'cuda' if precision == 'fp16' else 'cpu'
    fast = PoseEstimator(model, cfg, device=device, precision=precision, cast_weights=True)
    assert fast.cast_weights and next(fast.net.parameters()).dtype == PRECISIONS[precision]
    for got, want in zip(fast.estimate_axisangle(earlier, later), reference):
        np.testing.assert_allclose(got, want, rtol=0.05, atol=2e-4)
    assert not PoseEstimator(model, cfg, precision='fp32', cast_weights=True).cast_weights


def test_load_pose_state(cfg):
    """A pose weight swap changes the estimate (translation of the inverse)."""
    estimator = PoseEstimator(_FixedPoseNet([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), cfg)
    new = _FixedPoseNet([0.0, 0.0, 0.0], [0.0, 0.0, 0.5])
    estimator.load_pose_state({'pose_net.' + k: v for k, v in new.state_dict().items()})
    T = estimator.estimate(np.full((40, 40, 3), 10, np.uint8), np.full((40, 40, 3), 90, np.uint8))
    np.testing.assert_allclose(T[:3, 3], [0.0, 0.0, -0.5], atol=1e-6)


def test_fast_options():
    """Recommended optimisations: CPU never gets CUDA graphs; explicit precision is kept."""
    opts = fast_options('cpu')
    assert opts['channels_last'] and not opts['cuda_graphs'] and not opts['compile']
    assert opts['precision'] == ('bf16' if cpu_has_native_bf16() else 'fp32')
    assert opts['cast_weights'] == (opts['precision'] != 'fp32')
    assert fast_options('cpu', 'fp16')['precision'] == 'fp16'
    with pytest.raises(ValueError, match='precision'):
        fast_options('cpu', 'fp8')


def test_nan_disparity_gives_nan_depth(cfg):
    """A network that outputs NaN gives NaN depth and disparity, never a valid max_depth."""
    torch.manual_seed(3)
    net = DepthNet(18, min_depth=cfg.model.min_depth, max_depth=cfg.model.max_depth).eval()
    predictor = DepthPredictor(net, cfg)
    state = {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v
             for k, v in net.state_dict().items()}
    predictor.load_depth_state(state)
    image = _image(64, 192, seed=1)
    assert np.isnan(predictor.predict(image)).all()
    assert np.isnan(predictor.predict_disparity(image)).all()


def test_pose_fallback_to_cpu_never_loses_a_concurrent_weight_swap(cfg):
    """Weight swaps racing a CPU fall-back: the last swapped weights are the ones that serve."""
    estimator = PoseEstimator(_FixedPoseNet([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), cfg,
                              precision='bf16', cast_weights=True)
    states = [_FixedPoseNet([0.0, 0.0, 0.0], [0.0, 0.0, 0.01 * (i + 1)]).state_dict()
              for i in range(200)]
    started = threading.Event()

    def swapper():
        for i, state in enumerate(states):
            estimator.load_pose_state({'pose_net': state})   # OnlineRefiner form
            if i == 5:
                started.set()

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        assert started.wait(60.0)
        estimator.fall_back_to_cpu('test fall-back')
    finally:
        thread.join()
    assert estimator.precision == 'fp32' and not estimator.cast_weights
    assert all(p.dtype == torch.float32 for p in estimator.net.parameters())
    assert 'test fall-back' in estimator.notes[-1]
    dark, bright = np.full((40, 40, 3), 10, np.uint8), np.full((40, 40, 3), 90, np.uint8)
    T = estimator.estimate(dark, bright)
    np.testing.assert_allclose(T[:3, 3], [0.0, 0.0, -2.0], atol=1e-6)


@pytest.mark.parametrize('size', [(375, 1242), (50, 90), (100, 90), (7, 5)])
def test_cpu_preprocessing_is_within_one_grey_level_of_a_float_resize(size):
    """The uint8 resize of the CPU path: at most 1/255 from resizing the same frame in float."""
    from fmdepth_ros.runtime.inference import _to_network_input
    image = torch.from_numpy(_image(*size, seed=5))
    for memory_format in (torch.contiguous_format, torch.channels_last):
        out = torch.empty(1, 3, 64, 192).contiguous(memory_format=memory_format)
        _to_network_input(image, out)
        x = image.permute(2, 0, 1)[None].float() / 255.0
        shrink = size[0] > 64 or size[1] > 192
        ref = F.interpolate(x, size=(64, 192), mode='bilinear', align_corners=False,
                            antialias=shrink)
        assert float((out - ref).abs().max()) <= 1.0 / 255 + 1e-6
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize('size', [(192, 640), (375, 1242), (31, 97), (7, 9)])
def test_cpu_disparity_resize_matches_torch_bilinear(size):
    """The CPU resize (OpenCV) of the scaled disparity is torch's align_corners=False bilinear."""
    from fmdepth_ros.runtime.inference import _resize_disparity

    coarse = torch.rand(1, 1, 14, 42, generator=torch.Generator().manual_seed(1))
    # smooth like a network disparity (OpenCV quantises the weights to 1/2048 pixel)
    scaled = F.interpolate(coarse, size=(96, 320), mode='bicubic', align_corners=False)
    scaled = scaled.clamp_min(0.0) + 0.01
    out = torch.empty((1, 1) + size)
    result = _resize_disparity(scaled, out)
    assert result.data_ptr() == out.data_ptr()       # written into the static buffer
    want = F.interpolate(scaled, size=size, mode='bilinear', align_corners=False)
    assert _max_rel(out.numpy(), want.numpy()) < (1e-6 if size == (192, 640) else 1e-4)

"""Online refinement: guard, revert on NaN / worse loss, bounded queue, weight hand-over."""

import math

from fmdepth_ros.checkpoint import build_model
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.runtime.inference import DepthPredictor
from fmdepth_ros.runtime.refinement import OnlineRefiner, refine_on_batch, window_to_batch
import numpy as np
import pytest
import torch


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """One intra-op thread (the refiner thread and the test share 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def cfg():
    """Small config (64x192 ResNet-18; 32x96 PoseNet input)."""
    c = small_cpu_config()
    c.model.pose_height, c.model.pose_width = 32, 96
    return c


@pytest.fixture(scope='module')
def window():
    """One refinement window in frame_ids order (0, -1, 1) as uint8 frames + K."""
    seq = render_sequence(3, seed=5)
    return {'images': seq.images[[1, 0, 2]], 'K': seq.K}


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.freeze_feature_net(True)
    return model.eval()


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_decoder_refinement_changes_only_the_decoder(cfg, window):
    """target='decoder' updates the depth decoder only; grad flags and mode are restored."""
    model = _model(cfg)
    encoder, pose, feature = (_state(model.depth_net.encoder), _state(model.pose_net),
                              _state(model.feature_net))
    decoder = _state(model.depth_net.decoder)
    flags = [p.requires_grad for p in model.parameters()]
    result = refine_on_batch(model, window_to_batch(window), iterations=2, lr=1e-4,
                             target='decoder', guard=False)
    assert result['iterations'] == 2 and not result['reverted']
    assert math.isfinite(result['loss_before']) and math.isfinite(result['loss_after'])
    assert not _same(decoder, _state(model.depth_net.decoder))
    assert _same(encoder, _state(model.depth_net.encoder))
    assert _same(pose, _state(model.pose_net)) and _same(feature, _state(model.feature_net))
    assert flags == [p.requires_grad for p in model.parameters()]
    assert not model.training


@pytest.mark.parametrize('lr', [1e-4, 5e-2])
def test_guard_never_keeps_a_worse_loss(cfg, window, lr):
    """With the guard, the kept weights never have a higher loss than the initial ones.

    Either the steps improved the loss and are kept, or every weight is restored exactly.
    """
    model = _model(cfg)
    before = _state(model)
    result = refine_on_batch(model, window_to_batch(window), iterations=2, lr=lr,
                             target='all', guard=True)
    assert result['loss_after'] <= result['loss_before']
    if result['reverted']:
        assert _same(before, _state(model))
        assert result['loss_after'] == pytest.approx(result['loss_before'])
    else:
        assert not _same(before, _state(model))


def test_guard_reverts_non_finite_losses(cfg, window):
    """A window whose loss is NaN never changes the weights."""
    model = _model(cfg)
    before = _state(model)
    batch = window_to_batch(window)
    batch['images'][0, 0, :, :4, :4] = float('nan')
    result = refine_on_batch(model, batch, iterations=2, lr=1e-4, target='decoder')
    assert result['reverted'] and result['iterations'] == 0
    assert _same(before, _state(model))


def _running_stats(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()
            if k.endswith(('running_mean', 'running_var'))}


@pytest.mark.parametrize('batchnorm', ['eval', 'train'])
def test_batchnorm_mode_decides_whether_running_statistics_adapt(cfg, window, batchnorm):
    """'train' moves the refined networks' BatchNorm running statistics; 'eval' keeps them.

    The FeatureNet's statistics never move, and the model is back in eval mode afterwards.
    """
    model = _model(cfg)
    depth, feature = _running_stats(model.depth_net), _running_stats(model.feature_net)
    assert depth, 'the DepthNet encoder has BatchNorm layers'
    result = refine_on_batch(model, window_to_batch(window), iterations=2, lr=1e-4,
                             target='all', guard=False, batchnorm=batchnorm)
    assert result['iterations'] == 2 and math.isfinite(result['loss_after'])
    assert _same(depth, _running_stats(model.depth_net)) == (batchnorm == 'eval')
    assert _same(feature, _running_stats(model.feature_net))
    assert not model.training
    assert not any(m.training for m in model.modules())


def test_guard_revert_restores_running_statistics(cfg, window):
    """A reverted train-mode window leaves the BatchNorm statistics as they were."""
    model = _model(cfg)
    before = _state(model)
    batch = window_to_batch(window)
    batch['images'][0, 0, :, :4, :4] = float('nan')
    result = refine_on_batch(model, batch, iterations=2, lr=1e-4, target='all',
                             batchnorm='train')
    assert result['reverted']
    assert _same(before, _state(model))


def test_refine_on_batch_rejects_bad_settings(cfg, window):
    """Unknown target or a non-positive learning rate is a ValueError."""
    model = _model(cfg)
    with pytest.raises(ValueError, match='target'):
        refine_on_batch(model, window_to_batch(window), target='encoder')
    with pytest.raises(ValueError, match='lr'):
        refine_on_batch(model, window_to_batch(window), lr=0.0)
    with pytest.raises(ValueError, match='batchnorm'):
        refine_on_batch(model, window_to_batch(window), batchnorm='frozen')


def test_online_refiner_bounded_queue_guard_and_weight_swap(cfg, window):
    """Queue drops the oldest; a NaN window is reverted; improvements reach the predictor."""
    model = _model(cfg)
    predictor = DepthPredictor(model.depth_net, cfg)
    original = _state(model.depth_net)
    swaps = []

    def on_weights(states):
        swaps.append(sorted(states))
        predictor.load_depth_state(states['depth_net'])

    refiner = OnlineRefiner(model, cfg, on_weights=on_weights, queue_size=2)
    refiner.configure(iterations=1, lr=1e-4)
    nan_window = {'images': window['images'].astype(np.float32).transpose(0, 3, 1, 2) / 255.0,
                  'K': window['K']}
    nan_window['images'][0, :, :2, :2] = np.nan
    for w in (window, window, nan_window, window):       # the first two are dropped
        refiner.submit(w)
    stats = refiner.stats()
    assert stats['queue'] == 2 and stats['dropped'] == 2 and stats['submitted'] == 4
    refiner.start()
    try:
        assert refiner.wait_idle(600.0)
        stats = refiner.stats()
    finally:
        refiner.stop()
    assert stats['processed'] == 2 and stats['errors'] == 0
    assert stats['reverted'] >= 1                        # the NaN window
    assert stats['swaps'] == stats['improved'] == len(swaps)
    assert all(keys == ['depth_net', 'pose_net'] for keys in swaps)   # default target 'all'
    assert _same(original, _state(model.depth_net))      # the caller's model is never touched
    if swaps:
        assert not _same(original, {k: v.cpu() for k, v in predictor.state_dict().items()})
    assert not refiner.stats()['running']


def test_online_refiner_configure_validates(cfg):
    """Invalid runtime settings are refused with a ValueError."""
    refiner = OnlineRefiner(_model(cfg), cfg)
    with pytest.raises(ValueError):
        refiner.configure(target='encoder')
    with pytest.raises(ValueError):
        refiner.configure(lr=-1.0)
    with pytest.raises(ValueError):
        refiner.configure(bogus=1)
    refiner.configure(enabled=False)
    refiner.submit({'images': np.zeros((3, 64, 192, 3), np.uint8), 'K': np.eye(3)})
    assert refiner.stats()['submitted'] == 0


def test_window_motion_is_the_largest_difference_to_the_target():
    """window_motion: the largest mean |source - target|; the target may be anywhere."""
    from fmdepth_ros.runtime.refinement import window_motion
    target = torch.full((3, 4, 6), 0.5)
    images = torch.stack([target, target + 0.02, target - 0.05])        # ids (0, -1, 1)
    assert window_motion(images, (0, -1, 1)) == pytest.approx(0.05)
    assert window_motion(images[[1, 0, 2]], (-1, 0, 1)) == pytest.approx(0.05)
    assert window_motion(torch.stack([target] * 3), (0, -1, 1)) == 0.0


def test_online_refiner_skips_windows_of_a_camera_standing_still(cfg, window):
    """Under min_motion a window is counted as static, not refined; NaN reaches the guard."""
    model = _model(cfg)
    refiner = OnlineRefiner(model, cfg, queue_size=4)
    refiner.configure(iterations=1, min_motion=0.01)
    still = {'images': np.repeat(window['images'][:1], 3, axis=0), 'K': window['K']}
    nan_window = {'images': window['images'].astype(np.float32).transpose(0, 3, 1, 2) / 255.0,
                  'K': window['K']}
    nan_window['images'][:, :, :2, :2] = np.nan
    refiner.start()
    try:
        for w in (still, window, nan_window):
            refiner.submit(w)
            assert refiner.wait_idle(600.0)
        stats = refiner.stats()
    finally:
        refiner.stop()
    assert stats['static'] == 1 and stats['processed'] == 2 and stats['errors'] == 0
    assert stats['reverted'] >= 1                        # the NaN window
    assert stats['min_motion'] == 0.01
    assert math.isnan(stats['last_motion'])            # the NaN window came last
    with pytest.raises(ValueError):
        refiner.configure(min_motion=-0.1)

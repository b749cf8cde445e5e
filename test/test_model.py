"""Tests of FeatDepthModel: both training stages run, are finite and backpropagate."""

from fmdepth_ros import geometry
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.model import FeatDepthModel
import pytest
import torch


def _batch(cfg, batch_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.model.height, cfg.model.width
    images = torch.rand(batch_size, len(cfg.model.frame_ids), 3, h, w, generator=g)
    K = torch.tensor([[0.58 * w, 0, 0.5 * w], [0, 1.92 * h, 0.5 * h], [0, 0, 1]])
    return {'images': images, 'images_aug': images.clone(), 'K': K.expand(batch_size, 3, 3)}


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize('decoder', ['featdepth', 'monodepth2'])
def test_depth_losses_finite_and_backprop(decoder):
    """Stage 2 runs on a tiny batch, is finite, and trains depth + pose but not the FeatureNet."""
    torch.manual_seed(0)
    cfg = small_cpu_config().merged({'model': {'depth_decoder': decoder}})
    model = FeatDepthModel(cfg)
    model.freeze_feature_net()
    model.train()
    assert not model.feature_net.training and model.depth_net.training
    batch_size = 2 if decoder == 'featdepth' else 1            # keep the suite fast
    total, logs, outputs = model.depth_losses(_batch(cfg, batch_size))
    assert total.dim() == 0 and torch.isfinite(total)
    for key in ('photometric', 'smoothness', 'feature_metric', 'total'):
        assert key in logs and logs[key] == logs[key]          # present and not NaN
    assert logs['feature_metric'] > 0
    h, w = cfg.model.height, cfg.model.width
    assert outputs[('depth', 0)].shape == (batch_size, 1, h, w)
    assert outputs[('warped', -1)].shape == (batch_size, 3, h, w)
    stride = 2 if decoder == 'featdepth' else 1
    assert outputs[('disp', 0)].shape == (batch_size, 1, h // stride, w // stride)
    assert outputs[('T', 1)].shape == (batch_size, 4, 4)
    total.backward()
    assert _grad_norm(model.depth_net) > 0 and _grad_norm(model.pose_net) > 0
    assert all(p.grad is None for p in model.feature_net.parameters())


def test_feature_losses_finite_and_backprop():
    """Stage 1 runs, is finite and trains only the FeatureNet."""
    torch.manual_seed(1)
    cfg = small_cpu_config()
    model = FeatDepthModel(cfg).train()
    total, logs, outputs = model.feature_losses(_batch(cfg))
    assert torch.isfinite(total) and logs['discriminative'] < 0 < logs['convergent']
    assert outputs[('recon', 0)].shape == (2, 3, cfg.model.height, cfg.model.width)
    total.backward()
    assert _grad_norm(model.feature_net) > 0
    assert all(p.grad is None for p in model.depth_net.parameters())


def test_predict_poses_conventions():
    """Source -1 gets the inverse of PoseNet's [I_-1, I_0] output; +1 gets [I_0, I_+1] as is."""
    torch.manual_seed(2)
    cfg = small_cpu_config()
    model = FeatDepthModel(cfg).eval()
    images = _batch(cfg, batch_size=1)['images']
    with torch.no_grad():
        poses = model.predict_poses(images)
        aa, t = model.pose_net(images[:, 1], images[:, 0])       # frame -1 is index 1
        T_0_m1 = geometry.pose_from_axisangle(aa, t)
        aa, t = model.pose_net(images[:, 0], images[:, 2])
        T_p1_0 = geometry.pose_from_axisangle(aa, t)
    assert torch.allclose(poses[-1] @ T_0_m1, torch.eye(4)[None], atol=1e-6)
    assert torch.allclose(poses[1], T_p1_0)


def test_eval_losses_deterministic_and_bad_batch_rejected():
    """Eval-mode depth losses are deterministic; a wrongly shaped batch gives a clear error."""
    cfg = small_cpu_config()
    model = FeatDepthModel(cfg).eval()
    batch = _batch(cfg, batch_size=1)
    with torch.no_grad():
        a = model.depth_losses(batch)[0]
        b = model.depth_losses(batch)[0]
    assert float(a) == float(b)
    batch['images'] = batch['images'][:, :2]
    with pytest.raises(ValueError, match='frame_ids'):
        model.depth_losses(batch)


def test_bf16_networks_keep_geometry_and_losses_in_float32():
    """bf16 autocast covers the networks only: outputs float32, loss close to the fp32 one."""
    torch.manual_seed(2)
    cfg = small_cpu_config().merged({'model': {'depth_decoder': 'monodepth2'}})
    model = FeatDepthModel(cfg).eval()
    model.freeze_feature_net()
    batch = _batch(cfg, 1)
    fp32, _, _ = model.depth_losses(batch)
    model.set_network_precision('cpu', torch.bfloat16)
    bf16, _, outputs = model.depth_losses(batch)
    assert outputs[('disp', 0)].dtype == torch.float32
    assert outputs[('depth', 0)].dtype == torch.float32
    assert outputs[('T', 1)].dtype == torch.float32
    assert float(bf16.detach()) == pytest.approx(float(fp32.detach()), rel=0.05)
    model.set_network_precision('cpu', None)
    again, _, _ = model.depth_losses(batch)
    assert float(again.detach()) == float(fp32.detach())


def test_timing_a_training_step_leaves_weights_statistics_and_rng_as_they_were():
    """``precision: auto`` times steps on the live model: nothing of the run may change."""
    from fmdepth_ros.trainer import time_training_step
    cfg = small_cpu_config()
    model = FeatDepthModel(cfg).train()
    batch = _batch(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = time_training_step(model.depth_losses, batch, model, 'depth', repeats=1)
    assert seconds > 0
    after = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed == []
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    model.depth_losses(batch)[0].backward()        # a real step does move the statistics
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items()
               if 'running' in k)


def test_grey_input_setting_reaches_depth_and_pose_nets(tmp_path):
    """model.grey_input builds grey-input DepthNet and PoseNet, and survives a checkpoint."""
    from fmdepth_ros.checkpoint import load_checkpoint, save_checkpoint
    cfg = small_cpu_config()
    assert not FeatDepthModel(cfg).depth_net.grey_input
    cfg.model.grey_input = True
    model = FeatDepthModel(cfg)
    assert model.depth_net.grey_input and model.pose_net.grey_input
    path = str(tmp_path / 'grey.pt')
    save_checkpoint(path, model, cfg)
    loaded, loaded_cfg, _ = load_checkpoint(path)
    assert loaded_cfg.model.grey_input and loaded.depth_net.grey_input

"""Shape, key-layout and weight-loading tests of the networks (ResNet-18 at 64x192)."""

from fmdepth_ros.encoder_weights import read_encoder_weights
from fmdepth_ros.networks import DepthNet, disp_to_depth, FeatureNet, load_encoder_weights, \
    PoseNet, ResNet, WeightsError
from fmdepth_ros.networks.depth_net import scaled_disparity
import pytest
import torch
import torch.nn.functional as F

H, W = 64, 192


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_resnet_levels_and_torchvision_keys():
    """Check resnet levels and torchvision keys."""
    for layers, channels in ((18, [64, 64, 128, 256, 512]), (50, [64, 256, 512, 1024, 2048])):
        net = ResNet(layers)
        assert net.num_ch_enc == channels
        keys = net.state_dict().keys()
        assert 'layer2.0.downsample.0.weight' in keys and 'layer2.0.downsample.1.running_var' \
            in keys
        assert ('layer1.0.conv3.weight' in keys) == (layers == 50)
        assert not any(k.startswith('fc.') for k in keys)
        if layers == 18:
            feats = net(torch.rand(1, 3, H, W))
            for i, (f, c) in enumerate(zip(feats, channels)):
                assert tuple(f.shape) == (1, c, H // 2 ** (i + 1), W // 2 ** (i + 1))


@pytest.mark.parametrize('decoder,stride', [('featdepth', 2), ('monodepth2', 1)])
def test_depth_net_shapes(decoder, stride):
    """Check depth net shapes."""
    net = DepthNet(18, decoder).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, H, W))
    assert sorted(out) == [0, 1, 2, 3]
    for s, d in out.items():
        assert tuple(d.shape) == (2, 1, H // stride // 2 ** s, W // stride // 2 ** s)
        assert float(d.min()) > 0 and float(d.max()) < 1
    assert net.output_stride == stride


def test_depth_net_resnet50_shape():
    """Check depth net resnet50 shape."""
    torch.set_num_threads(1)
    net = DepthNet(50, 'featdepth').eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, H, W))
    assert tuple(out[0].shape) == (1, 1, H // 2, W // 2)


def test_depth_net_rejects_size_not_multiple_of_32():
    """Check depth net rejects size not multiple of 32."""
    with pytest.raises(ValueError, match='multiple of 32'):
        DepthNet(18)(torch.rand(1, 3, 60, 192))


def test_featdepth_decoder_official_key_names():
    """Check featdepth decoder official key names."""
    keys = set(DepthNet(18, 'featdepth').state_dict())
    for k in ('decoder.reduce4.conv.weight', 'decoder.iconv3.conv.bias',
              'decoder.crp2.0.4_pointwise.conv.weight', 'decoder.merge1.conv.weight',
              'decoder.disp4.0.conv.weight', 'encoder.layer4.1.bn2.running_mean'):
        assert k in keys
    assert 'decoder.reduce4.conv.bias' not in keys


def _featdepth_logits(net):
    """Return {scale: pre-sigmoid logits}, filled by hooks on a FeatDepth net's 4 heads."""
    logits = {}
    for k in (4, 3, 2, 1):
        head = getattr(net.decoder, f'disp{k}')[0]
        head.register_forward_hook(
            lambda _m, _i, out, s=k - 1: logits.__setitem__(s, out.detach()))
    return logits


def test_featdepth_decoder_init_starts_neutral():
    """From scratch the disparities start at ~0.5 (small logits, not constant), CRP = identity."""
    net = DepthNet(18, 'featdepth').eval()
    logits = _featdepth_logits(net)
    with torch.no_grad():
        out = net(torch.rand(2, 3, H, W))
    for s in range(4):
        assert float(logits[s].abs().max()) < 0.05, (s, float(logits[s].abs().max()))
        assert float(out[s].std()) > 0
    crp = net.decoder.crp2[0]
    x = torch.randn(1, 256, 4, 8)
    assert torch.equal(crp(x), x)


def test_featdepth_decoder_does_not_saturate_in_first_adam_steps():
    """Regression: with the default init a few Adam steps drove every logit past +5.

    At the start of self-supervised training the pose is ~0, so the photometric loss pushes
    all disparities up at once (scale ambiguity). The proxy loss ``-mean(disp)`` is that
    coherent push; with the official layers and PyTorch's default init, 4 Adam steps at lr
    1e-4 took the disparity to 0.998 (sigmoid saturated, gradients gone for good).
    """
    torch.set_num_threads(1)
    net = DepthNet(18, 'featdepth').train()
    logits = _featdepth_logits(net)
    image = torch.rand(2, 3, H, W)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    for _ in range(4):
        loss = -sum(d.mean() for d in net(image).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = net(image)
    assert max(float(v.abs().max()) for v in logits.values()) < 1.5, \
        {s: float(v.abs().max()) for s, v in logits.items()}
    assert float(out[0].max()) < 0.8


def test_monodepth2_decoder_key_names_and_shapes():
    """Check monodepth2 decoder key names and shapes."""
    sd = DepthNet(18, 'monodepth2').state_dict()
    assert tuple(sd['decoder.decoder.0.conv.conv.weight'].shape) == (256, 512, 3, 3)
    assert tuple(sd['decoder.decoder.7.conv.conv.weight'].shape) == (32, 32 + 64, 3, 3)
    assert tuple(sd['decoder.decoder.9.conv.conv.weight'].shape) == (16, 16, 3, 3)
    assert tuple(sd['decoder.decoder.10.conv.weight'].shape) == (1, 16, 3, 3)
    assert tuple(sd['decoder.decoder.13.conv.weight'].shape) == (1, 128, 3, 3)
    assert 'decoder.decoder.14.conv.weight' not in sd


def test_disp_to_depth_range_and_inverse():
    """Check disp to depth range and inverse."""
    disp = torch.tensor([0.0, 0.5, 1.0])
    scaled, depth = disp_to_depth(disp, 0.1, 100.0)
    assert torch.allclose(depth[[0, 2]], torch.tensor([100.0, 0.1]))
    assert torch.allclose(scaled * depth, torch.ones(3))


def test_scaled_disparity_in_place_is_bitwise_the_expression_and_keeps_gradients():
    """``out=`` (into another tensor or the input itself) equals the out-of-place formula."""
    disp = torch.rand(1, 1, 6, 10, generator=torch.Generator().manual_seed(0))
    expected = 1.0 / 80.0 + (1.0 / 0.1 - 1.0 / 80.0) * disp
    assert torch.equal(scaled_disparity(disp, 0.1, 80.0), expected)
    out = torch.empty_like(disp)
    assert scaled_disparity(disp, 0.1, 80.0, out=out) is out and torch.equal(out, expected)
    aliased = disp.clone()
    assert torch.equal(scaled_disparity(aliased, 0.1, 80.0, out=aliased), expected)
    leaf = disp.clone().requires_grad_()
    scaled_disparity(leaf, 0.1, 80.0).sum().backward()
    assert torch.allclose(leaf.grad, torch.full_like(disp, 1.0 / 0.1 - 1.0 / 80.0))


def test_pose_net_outputs_and_internal_resize():
    """Check pose net outputs and internal resize."""
    net = PoseNet(18, input_size=(H, W)).eval()
    a = torch.rand(2, 3, H * 2, W * 2)
    b = torch.rand(2, 3, H * 2, W * 2)
    with torch.no_grad():
        aa, tt = net(a, b)
        small = [F.interpolate(x, (H, W), mode='bilinear', align_corners=False) for x in (a, b)]
        aa2, tt2 = net(*small)
        aa3, _ = net(b, a)
    assert tuple(aa.shape) == (2, 3) and tuple(tt.shape) == (2, 3)
    assert torch.allclose(aa, aa2, atol=1e-6) and torch.allclose(tt, tt2, atol=1e-6)
    assert not torch.allclose(aa, aa3)   # frame order matters
    assert tuple(net.state_dict()['encoder.conv1.weight'].shape) == (64, 6, 7, 7)
    assert tuple(net.state_dict()['decoder.conv3.weight'].shape) == (6, 256, 1, 1)


def test_feature_net_shapes():
    """Check feature net shapes."""
    net = FeatureNet(18).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, H, W))
    assert tuple(out['features'][0].shape) == (1, 64, H // 2, W // 2)
    for s in range(4):
        assert tuple(out[('recon', s)].shape) == (1, 3, H // 2 ** s, W // 2 ** s)
    assert 'decoder.upconv5.conv.conv.weight' in net.state_dict()
    assert 'decoder.disp1.conv.weight' in net.state_dict()


def test_encoder_weights_from_local_file(tmp_path):
    """Check encoder weights from local file."""
    src = ResNet(18)
    sd = dict(src.state_dict())
    sd['fc.weight'] = torch.zeros(1000, 512)   # torchvision files carry the classifier
    sd['fc.bias'] = torch.zeros(1000)
    path = tmp_path / 'resnet18.pth'
    torch.save(sd, path)
    depth = DepthNet(18, encoder_weights=read_encoder_weights(path))
    assert torch.equal(depth.encoder.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    pose = PoseNet(18, encoder_weights=read_encoder_weights(path))
    w = src.conv1.weight
    assert torch.allclose(pose.encoder.conv1.weight, torch.cat([w, w], 1) / 2)


def test_encoder_weights_errors_name_the_file(tmp_path):
    """Check encoder weights errors name the file."""
    missing = tmp_path / 'nope.pth'
    with pytest.raises(WeightsError, match='nope.pth'):
        read_encoder_weights(missing)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a torch file')
    with pytest.raises(WeightsError, match='garbage.pth'):
        read_encoder_weights(garbage)
    r50 = tmp_path / 'r50.pth'
    torch.save(ResNet(50).state_dict(), r50)
    with pytest.raises(WeightsError, match='r50.pth'):
        load_encoder_weights(ResNet(18), read_encoder_weights(r50), source=str(r50))


def test_weights_error_is_a_checkpoint_error(tmp_path):
    """Handlers of CheckpointError (train, predict, node) also catch a bad ImageNet file."""
    from fmdepth_ros.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='nope.pth'):
        read_encoder_weights(tmp_path / 'nope.pth')


def test_pose_net_translation_scale_scales_translation_only():
    """``translation_scale`` multiplies the raw translation; rotation keeps the official x0.01."""
    torch.manual_seed(0)
    official = PoseNet(18, input_size=(H, W)).eval()
    larger = PoseNet(18, input_size=(H, W), translation_scale=0.1).eval()
    larger.load_state_dict(official.state_dict())
    a, b = torch.rand(1, 3, H, W), torch.rand(1, 3, H, W)
    with torch.no_grad():
        rot, trans = official(a, b)
        rot10, trans10 = larger(a, b)
    assert torch.allclose(rot, rot10)
    assert torch.allclose(trans10, 10 * trans, rtol=1e-5, atol=1e-8)


def test_grey_input_networks_see_the_luma_of_colour_frames():
    """grey_input: colour input gives the output of its luma; grey input is unchanged."""
    from fmdepth_ros.networks.depth_net import luma_rgb
    colour = torch.rand(2, 3, H, W)
    grey = colour.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    torch.manual_seed(1)
    plain = DepthNet(18, 'monodepth2').eval()
    torch.manual_seed(1)
    grey_net = DepthNet(18, 'monodepth2', grey_input=True).eval()
    torch.manual_seed(2)
    pose_plain = PoseNet(18, (H, W)).eval()
    torch.manual_seed(2)
    pose_grey = PoseNet(18, (H, W), grey_input=True).eval()
    with torch.no_grad():
        assert torch.allclose(grey_net(grey)[0], plain(grey)[0], atol=1e-6)
        assert torch.allclose(grey_net(colour)[0], plain(luma_rgb(colour))[0], atol=1e-6)
        assert not torch.allclose(grey_net(colour)[0], plain(colour)[0], atol=1e-4)
        for a, b in zip(pose_grey(colour, colour.flip(0)),
                        pose_plain(luma_rgb(colour), luma_rgb(colour.flip(0)))):
            assert torch.allclose(a, b, atol=1e-6)
    # the ITU-R 601 weights: pure red, green and blue
    rgb = torch.eye(3).view(3, 3, 1, 1).expand(3, 3, 32, 32)
    assert torch.allclose(luma_rgb(rgb)[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114]),
                          atol=1e-6)

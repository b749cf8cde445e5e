"""ImageNet initialisation of each encoder on its own, from torchvision-layout files."""

from fmdepth_ros.config import load_config
from fmdepth_ros.errors import WeightsError
from fmdepth_ros.model import FeatDepthModel
from fmdepth_ros.networks import ResNet
import pytest
import torch

# The paper's networks (ResNet-50 DepthNet and FeatureNet, ResNet-18 PoseNet) at a small input.
PAPER_SMALL = {'model': {'height': 64, 'width': 96, 'depth_layers': 50, 'pose_layers': 18,
                         'feature_layers': 50, 'pose_height': 64, 'pose_width': 96}}


def torchvision_state_dict(layers, seed):
    """Return a ResNet state dict as torchvision's ImageNet files hold it, with random values.

    torchvision key names, the 1000-class classifier (``fc.*``) and no BatchNorm
    ``num_batches_tracked`` counters (the ImageNet files predate them).
    """
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, value in ResNet(layers).state_dict().items():
        if key.endswith('num_batches_tracked'):
            continue
        rand = torch.rand(value.shape, generator=gen)
        sd[key] = rand + 0.5 if key.endswith('running_var') else rand - 0.5
    width = 512 * (4 if layers >= 50 else 1)
    sd['fc.weight'] = torch.rand(1000, width, generator=gen)
    sd['fc.bias'] = torch.rand(1000, generator=gen)
    return sd


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Three local files: two different ResNet-50s and a ResNet-18."""
    folder = tmp_path_factory.mktemp('imagenet')
    out = {}
    for name, layers, seed in (('depth50', 50, 1), ('feature50', 50, 2), ('pose18', 18, 3)):
        out[name] = (folder / f'{name}.pth', torchvision_state_dict(layers, seed))
        torch.save(out[name][1], out[name][0])
    return out


def _assert_loaded(encoder, sd, pose=False):
    """Every encoder tensor equals the file's (pose conv1: repeated and halved)."""
    state = encoder.state_dict()
    learned = [k for k in state if not k.endswith('num_batches_tracked')]
    assert set(learned) == set(sd) - {'fc.weight', 'fc.bias'}
    for key in learned:
        expected = sd[key]
        if pose and key == 'conv1.weight':
            expected = torch.cat([expected, expected], 1) / 2
        assert torch.equal(state[key], expected), key


def test_each_encoder_loads_its_own_file_completely(files):
    """Paper networks: ResNet-50 depth + feature files and a ResNet-18 pose file, all loaded."""
    torch.set_num_threads(1)
    cfg = load_config(overrides=PAPER_SMALL).merged({'model': {
        'encoder_weights': str(files['depth50'][0]),
        'pose_encoder_weights': str(files['pose18'][0]),
        'feature_encoder_weights': str(files['feature50'][0])}})
    model = FeatDepthModel(cfg)
    _assert_loaded(model.depth_net.encoder, files['depth50'][1])
    _assert_loaded(model.feature_net.encoder, files['feature50'][1])
    _assert_loaded(model.pose_net.encoder, files['pose18'][1], pose=True)
    assert model.pose_net.encoder.conv1.weight.shape == (64, 6, 7, 7)


def test_settings_are_independent(files):
    """Only the depth file set: PoseNet and FeatureNet keep their random initialisation."""
    torch.set_num_threads(1)
    cfg = load_config(overrides=PAPER_SMALL).merged(
        {'model': {'encoder_weights': str(files['depth50'][0]), 'feature_layers': 18}})
    torch.manual_seed(0)
    model = FeatDepthModel(cfg)
    _assert_loaded(model.depth_net.encoder, files['depth50'][1])
    pose_sd = files['pose18'][1]
    assert not torch.equal(model.pose_net.encoder.layer1[0].conv1.weight,
                           pose_sd['layer1.0.conv1.weight'])
    # Fresh networks have the same layout but not the file's values.
    assert not torch.equal(model.feature_net.encoder.conv1.weight,
                           files['depth50'][1]['conv1.weight'])


def test_nothing_is_silently_skipped(files, tmp_path):
    """A wrong depth, a missing layer or an extra one is a one-line error naming the setting."""
    base = load_config(overrides=PAPER_SMALL).merged({'model': {'feature_layers': 18,
                                                                'depth_layers': 18}})
    with pytest.raises(WeightsError, match=r'model\.pose_encoder_weights .*depth50\.pth.*'
                                           r'not a ResNet-18'):
        FeatDepthModel(base.merged({'model': {
            'pose_encoder_weights': str(files['depth50'][0])}}))
    for change, name in (('missing', 'gap.pth'), ('extra', 'extra.pth')):
        sd = dict(files['pose18'][1])
        if change == 'missing':
            del sd['layer4.1.bn2.weight']
        else:
            sd['layer5.0.conv1.weight'] = torch.zeros(1)
        torch.save(sd, tmp_path / name)
        with pytest.raises(WeightsError, match=rf'model\.feature_encoder_weights .*{name}') \
                as info:
            FeatDepthModel(base.merged({'model': {
                'feature_encoder_weights': str(tmp_path / name)}}))
        assert ('layer4.1.bn2.weight' if change == 'missing' else 'layer5') in str(info.value)
        assert '\n' not in str(info.value)

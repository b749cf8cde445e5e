"""``fmdepth convert``: official FeatDepth / Monodepth2 state dicts -> our checkpoint.

The sources are built by ``reference_official`` with THEIR module trees (key names, shapes,
forward passes) and random weights; the converted networks must reproduce their outputs.
"""

import os

from fmdepth_ros import cli
from fmdepth_ros.checkpoint import load_checkpoint, load_state_strict
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.networks import DepthNet
from fmdepth_ros.weights_import import convert, resnet_depth, split_featdepth
import pytest
from reference_official import EncoderWrapper, mmcv_checkpoint, model_factory, Monodepth2Models, \
    OfficialAutoencoder, OfficialDepthDecoder, OfficialMonoFM, randomize_
import torch

H, W = 64, 192
TOL = {'rtol': 1e-4, 'atol': 1e-6}


def _close(ours, theirs):
    """Assert equal shapes and values within float32 tolerance; return the max difference."""
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert torch.allclose(ours, theirs, **TOL), float((ours - theirs).abs().max())
    return float((ours - theirs).abs().max())


def _inputs(n=3):
    gen = torch.Generator().manual_seed(5)
    return [torch.rand(2, 3, H, W, generator=gen) for _ in range(n)]


@pytest.fixture(scope='module')
def featdepth_files(tmp_path_factory):
    """Official-layout ResNet-18 mono_fm checkpoint + autoencoder file (random weights)."""
    folder = tmp_path_factory.mktemp('featdepth')
    official = randomize_(OfficialMonoFM(depth_layers=18, pose_layers=18), 1).eval()
    autoencoder = randomize_(OfficialAutoencoder(18), 2).eval()
    src, ae = str(folder / 'epoch_40.pth'), str(folder / 'autoencoder.pth')
    torch.save(mmcv_checkpoint(official), src)
    torch.save(mmcv_checkpoint(autoencoder), ae)
    return official, autoencoder, src, ae


def test_featdepth_outputs_reproduced(featdepth_files, tmp_path, capsys):
    """Depth (1/2..1/16), pose (192x640 input) and FeatureNet match the official modules."""
    official, autoencoder, src, ae = featdepth_files
    dst = str(tmp_path / 'converted.pt')
    rc = cli.main(['convert', src, dst, '--autoencoder', ae, '--height', str(H),
                   '--width', str(W)])
    assert rc == 0
    assert 'converted featdepth' in capsys.readouterr().out
    model, cfg, info = load_checkpoint(dst)
    assert (cfg.model.height, cfg.model.width) == (H, W)
    assert (cfg.model.pose_height, cfg.model.pose_width) == (192, 640)
    assert cfg.model.depth_decoder == 'featdepth' and info['step'] == 0
    x, a, b = _inputs()
    with torch.no_grad():
        ours, theirs = model.depth_net(x), official.depth(x)
        assert tuple(ours[0].shape) == (2, 1, H // 2, W // 2)
        for s in range(4):
            _close(ours[s], theirs[('disp', 0, s)])
        for o, t in zip(model.pose_net(a, b), official.pose(a, b)):
            _close(o, t)
        feats, recon = autoencoder(x)
        out = model.feature_net(x)
        for o, t in zip(out['features'], feats):
            _close(o, t)
        for s in range(4):
            _close(out[('recon', s)], recon[('disp', 0, s)])
        # negative control: an unconverted model is far from the reference
        fresh = DepthNet(18, 'featdepth').eval()
        assert not torch.allclose(fresh(x)[0], theirs[('disp', 0, 0)], **TOL)


def test_featdepth_extractor_without_autoencoder(featdepth_files, tmp_path):
    """Without --autoencoder the FeatureNet encoder comes from the checkpoint's extractor."""
    official, _, src, _ = featdepth_files
    dst = str(tmp_path / 'no_ae.pt')
    summary = convert(src, dst, height=H, width=W, model_factory=model_factory)
    assert any('decoder keeps its random' in n for n in summary['notes'])
    model, cfg, _ = load_checkpoint(dst, model_factory=model_factory)
    assert cfg.model.feature_layers == 18
    x = _inputs(1)[0]
    with torch.no_grad():
        for o, t in zip(model.feature_net.encode(x), official.extractor(x)):
            _close(o, t)


def test_featdepth_resnet50_bottleneck_keys():
    """A ResNet-50 DepthEncoder (Bottleneck keys) + DepthDecoder map one to one."""
    official = OfficialMonoFM.__new__(OfficialMonoFM)
    torch.nn.Module.__init__(official)
    official.DepthEncoder = EncoderWrapper(50)
    official.DepthDecoder = OfficialDepthDecoder(official.DepthEncoder.num_ch_enc)
    randomize_(official, 4).eval()
    parts = split_featdepth(official.state_dict(), 'r50.pth')
    assert set(parts) == {'depth_net'} and resnet_depth(parts['depth_net'], 'encoder.', '') == 50
    ours = DepthNet(50, 'featdepth').eval()
    load_state_strict(ours, parts['depth_net'])
    x = _inputs(1)[0][:1]
    with torch.no_grad():
        theirs = official.depth(x)
        for s, disp in ours(x).items():
            _close(disp, theirs[('disp', 0, s)])


@pytest.fixture(scope='module')
def monodepth2_folder(tmp_path_factory):
    """Monodepth2 model folder (encoder/depth/pose_encoder/pose .pth) with random weights."""
    folder = tmp_path_factory.mktemp('mono_640x192')
    models = Monodepth2Models(18, H, W)
    for name, sd in models.files().items():
        torch.save(sd, folder / name)
    config = tmp_path_factory.mktemp('cfg') / 'small.yaml'
    config.write_text('model:\n  feature_layers: 18\ntrain:\n  batch_size: 3\n')
    return models, str(folder), str(config)


def test_monodepth2_outputs_reproduced(monodepth2_folder, tmp_path):
    """Depth at 1..1/8 and the first predicted pose match the Monodepth2 modules."""
    models, folder, config = monodepth2_folder
    dst = str(tmp_path / 'md2.pt')
    assert cli.main(['convert', folder, dst, '--config', config]) == 0
    model, cfg, _ = load_checkpoint(dst)
    assert cfg.model.depth_decoder == 'monodepth2'
    assert cfg.model.feature_layers == 18 and cfg.train.batch_size == 3   # from --config
    assert (cfg.model.height, cfg.model.width) == (H, W) == (cfg.model.pose_height,
                                                             cfg.model.pose_width)
    x, a, b = _inputs()
    with torch.no_grad():
        ours, theirs = model.depth_net(x), models.predict_depth(x)
        assert tuple(ours[0].shape) == (2, 1, H, W)
        for s in range(4):
            _close(ours[s], theirs[('disp', s)])
        for o, t in zip(model.pose_net(a, b), models.predict_pose(a, b)):
            _close(o, t)


def test_monodepth2_encoder_file_autodetected(monodepth2_folder, tmp_path):
    """Passing the folder's encoder.pth selects the Monodepth2 importer."""
    _, folder, _ = monodepth2_folder
    small = small_cpu_config()
    summary = convert(os.path.join(folder, 'encoder.pth'), str(tmp_path / 'x.pt'),
                      base_config=small, model_factory=model_factory)
    assert summary['format'] == 'monodepth2'
    assert summary['networks'] == ['depth_net', 'pose_net']


def _cli_error(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('fmdepth convert: error:') and '\n' not in err
    return err


def test_unknown_and_mismatched_keys_are_listed(featdepth_files, tmp_path, capsys):
    """Unknown keys and wrong shapes give one line naming the file and some keys."""
    src = featdepth_files[2]
    ckpt = torch.load(src, weights_only=True)
    sd = dict(ckpt['state_dict'])
    sd['DepthDecoder.extra_head.weight'] = torch.zeros(1)
    sd['Refiner.conv.weight'] = torch.zeros(1)
    bad = str(tmp_path / 'unknown.pth')
    torch.save({'state_dict': sd}, bad)
    err = _cli_error(capsys, ['convert', bad, str(tmp_path / 'o.pt'), '--height', str(H),
                              '--width', str(W)])
    assert 'unknown.pth' in err and 'Refiner.conv.weight' in err
    del sd['Refiner.conv.weight']   # left: an unknown key under a known prefix
    torch.save({'state_dict': sd}, bad)
    err = _cli_error(capsys, ['convert', bad, str(tmp_path / 'o.pt'), '--height', str(H),
                              '--width', str(W)])
    assert 'unexpected' in err and 'decoder.extra_head.weight' in err
    sd = dict(ckpt['state_dict'])
    sd['DepthDecoder.iconv3.conv.weight'] = torch.zeros(256, 100, 3, 3)
    shape = str(tmp_path / 'shape.pth')
    torch.save({'state_dict': sd}, shape)
    err = _cli_error(capsys, ['convert', shape, str(tmp_path / 'o.pt'), '--height', str(H),
                              '--width', str(W)])
    assert 'shape.pth' in err and 'decoder.iconv3.conv.weight' in err
    assert not os.path.exists(tmp_path / 'o.pt')


def test_bad_sources_give_one_line_errors(featdepth_files, monodepth2_folder, tmp_path,
                                          capsys):
    """Autoencoder as SRC, garbage, missing depth.pth and bad sizes are refused clearly."""
    _, _, _, ae = featdepth_files
    out = str(tmp_path / 'o.pt')
    assert '--autoencoder' in _cli_error(capsys, ['convert', ae, out])
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'\x00' * 100)
    assert 'garbage.pth' in _cli_error(capsys, ['convert', str(garbage), out])
    partial = tmp_path / 'partial'
    partial.mkdir()
    torch.save(torch.load(os.path.join(monodepth2_folder[1], 'encoder.pth'),
                          weights_only=True), partial / 'encoder.pth')
    assert 'depth.pth' in _cli_error(capsys, ['convert', str(partial), out])
    assert 'multiple of 32' in _cli_error(capsys, ['convert', monodepth2_folder[1], out,
                                                   '--height', '100'])
    assert 'no such file' in _cli_error(capsys, ['convert', str(tmp_path / 'nope.pth'), out])


class _MetaObject:
    """Stands for an arbitrary object pickled into an mmcv checkpoint's meta data."""


def test_pickled_objects_need_trust_pickle(featdepth_files, tmp_path, capsys):
    """Weights-only loading refuses pickled objects unless --trust-pickle is given."""
    ckpt = torch.load(featdepth_files[2], weights_only=True)
    src = str(tmp_path / 'pickled.pth')
    torch.save(dict(ckpt, meta={'config': _MetaObject()}), src)
    out = str(tmp_path / 'o.pt')
    args = ['convert', src, out, '--height', str(H), '--width', str(W)]
    assert '--trust-pickle' in _cli_error(capsys, args)
    assert cli.main(args + ['--trust-pickle']) == 0
    assert load_checkpoint(out)[1].model.depth_layers == 18

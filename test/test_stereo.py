"""Tests of MS (monocular + stereo) training: stereo_T, stereo loaders, synth --stereo, config.

The geometry checks warp the rendered right camera into the left one with the renderer's exact
depth: with the right ``stereo_T`` the warp matches the left image, with the opposite sign it
does not, so a sign error anywhere (loader, flip, synth) fails them.
"""

import os

from fmdepth_ros import cli, losses
from fmdepth_ros.commands.evaluate import depth_scale
from fmdepth_ros.config import Config, load_config, small_cpu_config
from fmdepth_ros.data import make_dataset
from fmdepth_ros.data.synth import read_sequence, render_sequence
from fmdepth_ros.errors import CliError, ConfigError, DataError
from fmdepth_ros.geometry import warp
from fmdepth_ros.model import FeatDepthModel
from fmdepth_ros.stereo import stereo_depth_factor, stereo_T
import numpy as np
from PIL import Image
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 32, 96
BASELINE = 0.54
DATE = '2011_09_26'
DRIVE = f'{DATE}/{DATE}_drive_0001_sync'


def _ms_cfg(flip=0.0, translation=BASELINE):
    """Small config with frame 's' whose stereo_T is metric (translation = rig baseline)."""
    return small_cpu_config().merged({
        'model': {'height': H, 'width': W, 'frame_ids': [0, -1, 1, 's'],
                  'stereo_translation': translation, 'stereo_baseline_m': BASELINE},
        'train': {'flip_prob': flip, 'color_jitter_prob': 0.0}})


@pytest.fixture(scope='module')
def stereo_dir(tmp_path_factory):
    """``fmdepth synth --stereo`` output: 5 frames at twice the network size."""
    path = tmp_path_factory.mktemp('stereo') / 'seq'
    assert cli.main(['synth', str(path), '--frames', '5', '--width', str(2 * W),
                     '--height', str(2 * H), '--seed', '3', '--stereo',
                     '--baseline', str(BASELINE)]) == 0
    return path


def _stereo_warp_errors(item):
    """Mean photometric error of frame 's' warped into frame 0 with stereo_T and with -stereo_T."""
    depth = item['depth_gt'][None]
    target, source = item['images'][None, 0], item['images'][None, 3]
    errors = []
    for sign in (1.0, -1.0):
        T = item['stereo_T'].clone()
        T[0, 3] *= sign
        warped, valid = warp(source, depth, T[None], item['K'][None])
        err = losses.photometric_error(warped, target)
        errors.append(float((err * valid).sum() / valid.sum()))
    return errors


def test_stereo_T_sign_by_side_and_flip():
    """Left target: x = -b; right target: +b; a flipped sample reverses the sign."""
    for side, flipped, sign in (('l', False, -1), ('r', False, 1), ('l', True, 1),
                                ('r', True, -1)):
        T = stereo_T(0.015, side, flipped)
        expected = torch.eye(4)
        expected[0, 3] = sign * 0.015
        assert T.dtype == torch.float32
        torch.testing.assert_close(T, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="'l' or 'r'"):
        stereo_T(0.015, 'x')
    with pytest.raises(ValueError, match='> 0'):
        stereo_T(0.0, 'l')
    assert stereo_depth_factor(0.015, 0.54) == pytest.approx(36.0)   # official eval_hooks
    assert stereo_depth_factor(0.54, 0.54) == 1.0


def test_ms_config_mirrors_the_official_ms_switches():
    """featdepth_kitti_ms.yaml = featdepth_kitti.yaml + 's', automask and disp norm off."""
    ms = load_config(os.path.join(ROOT, 'config', 'featdepth_kitti_ms.yaml'))
    mono = load_config(os.path.join(ROOT, 'config', 'featdepth_kitti.yaml'))
    assert ms.model.frame_ids == (0, -1, 1, 's')
    assert ms.loss.automask is False and ms.loss.disp_mean_normalise is False
    assert stereo_depth_factor(ms.model.stereo_translation, ms.model.stereo_baseline_m) == \
        pytest.approx(36.0)
    a, b = ms.to_dict(), mono.to_dict()
    for section, keys in (('model', ('frame_ids', 'stereo_translation', 'stereo_baseline_m')),
                          ('loss', ('automask', 'disp_mean_normalise'))):
        for key in keys:
            a[section].pop(key)
            b[section].pop(key)
    assert a == b
    with pytest.raises(ConfigError, match='frame_ids'):
        Config.from_dict({'model': {'frame_ids': [0, -1, 'x']}})
    with pytest.raises(ConfigError, match='stereo_translation'):
        Config.from_dict({'model': {'stereo_translation': 0}})


def test_synth_stereo_output(stereo_dir):
    """--stereo adds images_right/ and stereo.txt; the left camera is the mono render."""
    names = sorted(os.listdir(stereo_dir / 'images'))
    assert sorted(os.listdir(stereo_dir / 'images_right')) == names and len(names) == 5
    assert (stereo_dir / 'stereo.txt').read_text().split() == ['baseline_m', '0.54']
    seq = read_sequence(str(stereo_dir))
    assert seq.baseline == pytest.approx(BASELINE)
    assert seq.right_images.shape == seq.images.shape == (5, 2 * H, 2 * W, 3)
    mono = render_sequence(5, width=2 * W, height=2 * H, seed=3)
    np.testing.assert_array_equal(seq.images, mono.images)
    assert not np.array_equal(seq.right_images, seq.images)
    with pytest.raises(ValueError, match='stereo_baseline'):
        render_sequence(2, width=16, height=16, stereo_baseline=-1.0)


def test_folder_loader_gives_frame_s_with_the_rendered_baseline(stereo_dir):
    """Frame 's' is the right image; stereo_T warps it onto the left image (flipped too)."""
    test = make_dataset(stereo_dir, _ms_cfg(), split='test')
    assert test.samples[0][0].stereo_baseline_m() == pytest.approx(BASELINE)   # stereo.txt
    item = test[2]
    assert item['images'].shape == (4, 3, H, W)
    right = np.asarray(Image.open(stereo_dir / 'images_right' / '000002.png').resize((W, H)))
    assert float(item['stereo_T'][0, 3]) == pytest.approx(-BASELINE)
    good, wrong = _stereo_warp_errors(item)
    assert good < 0.4 * wrong, (good, wrong)
    # the loader's 's' frame really is the right camera's image (not the left one)
    loaded = (item['images'][3].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(loaded - right.astype(float)).mean() < 3.0
    train = make_dataset(stereo_dir, _ms_cfg(flip=1.0), split='train')   # always flipped
    flipped = train[1]
    assert float(flipped['stereo_T'][0, 3]) == pytest.approx(BASELINE)
    good, wrong = _stereo_warp_errors(flipped)
    assert good < 0.4 * wrong, (good, wrong)


def test_frame_s_needs_a_stereo_pair(tmp_path):
    """A mono folder with frame 's' fails with one line naming the folder."""
    from fmdepth_ros.data.synth import write_sequence

    write_sequence(render_sequence(4, width=W, height=H, seed=1), tmp_path / 'mono')
    with pytest.raises(DataError, match="mono: frame id 's'.*stereo pair"):
        make_dataset(tmp_path / 'mono', _ms_cfg(), split='train')


def _fmt(a):
    return ' '.join(f'{v:.12e}' for v in np.asarray(a).ravel())


def test_kitti_loader_pairs_image_02_and_image_03(tmp_path, caplog):
    """Left lines get image_03 as 's' (x = -b), right lines image_02 (x = +b)."""
    seq = render_sequence(4, width=2 * W, height=2 * H, seed=4, stereo_baseline=BASELINE)
    root = tmp_path / 'kitti'
    (root / DATE).mkdir(parents=True)
    K = seq.K
    P2 = np.concatenate([K, (K @ [0.06, 0, 0])[:, None]], 1)
    P3 = np.concatenate([K, (K @ [0.06 - BASELINE, 0, 0])[:, None]], 1)
    (root / DATE / 'calib_cam_to_cam.txt').write_text(
        f'P_rect_02: {_fmt(P2)}\nP_rect_03: {_fmt(P3)}\n')
    for cam, images in ((2, seq.images), (3, seq.right_images)):
        folder = root / DRIVE / f'image_0{cam}' / 'data'
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f'{i:010d}.png')
    split = tmp_path / 'train_files.txt'
    split.write_text(f'{DRIVE} 1 l\n{DRIVE} 2 r\n{DRIVE} 2 l\n')
    data = make_dataset(root, _ms_cfg(), split='test', split_file=str(split))
    left, right, left2 = data[0], data[1], data[2]
    assert float(left['stereo_T'][0, 3]) == pytest.approx(-BASELINE)
    assert float(right['stereo_T'][0, 3]) == pytest.approx(BASELINE)
    # an 'r' line: frame 0 is image_03, frame 's' image_02 of the same index (and back)
    torch.testing.assert_close(right['images'][3], left2['images'][0], rtol=0, atol=0)
    torch.testing.assert_close(right['images'][0], left2['images'][3], rtol=0, atol=0)
    depth = torch.from_numpy(seq.depths[1]).float()[None, None]
    depth = torch.nn.functional.interpolate(depth, size=(H, W), mode='nearest')[0]
    good, wrong = _stereo_warp_errors(dict(left, depth_gt=depth))
    assert good < 0.4 * wrong, (good, wrong)
    assert data.samples[0][0].stereo_baseline_m() == pytest.approx(BASELINE)   # P_rect_02/03
    assert 'calibrated stereo baseline' not in caplog.text
    cfg = _ms_cfg().merged({'model': {'stereo_baseline_m': 0.3}})
    make_dataset(root, cfg, split='test', split_file=str(split))
    assert 'calibrated stereo baseline 0.5400 m, but model.stereo_baseline_m is 0.3000' in \
        caplog.text
    os.rename(root / DRIVE / 'image_03', root / DRIVE / 'image_03_gone')
    split.write_text(f'{DRIVE} 1 l\n')
    with pytest.raises(DataError, match='image_02.*stereo pair'):
        make_dataset(root, _ms_cfg(), split='test', split_file=str(split))


def test_model_warps_frame_s_with_stereo_T_not_posenet():
    """('T', 's') is the batch's stereo_T; PoseNet predicts only the temporal sources."""
    torch.manual_seed(0)
    cfg = _ms_cfg().merged({'model': {'height': 64, 'width': 192}})
    model = FeatDepthModel(cfg).eval()
    images = torch.rand(1, 4, 3, 64, 192)
    K = torch.tensor([[0.58 * 192, 0, 96], [0, 1.92 * 64, 32], [0, 0, 1.0]])[None]
    batch = {'images': images, 'K': K, 'stereo_T': stereo_T(BASELINE, 'l')[None]}
    with torch.no_grad():
        assert sorted(model.predict_poses(images)) == [-1, 1]
        total, _, outputs = model.depth_losses(batch)
    assert torch.isfinite(total)
    torch.testing.assert_close(outputs[('T', 's')], batch['stereo_T'], rtol=0, atol=0)
    assert outputs[('warped', 's')].shape == (1, 3, 64, 192)
    del batch['stereo_T']
    with pytest.raises(ValueError, match='stereo_T'):
        model.depth_losses(batch)


def test_evaluate_scaling_choices():
    """--scaling stereo applies the checkpoint's factor (36 official), refuses a mono model."""
    official = load_config(os.path.join(ROOT, 'config', 'featdepth_kitti_ms.yaml'))
    assert depth_scale('stereo', 1.0, official) == (False, pytest.approx(36.0), 'stereo x36')
    assert depth_scale('stereo', 1.0, _ms_cfg())[:2] == (False, 1.0)
    assert depth_scale('median', 5.0, official) == (True, 1.0, 'median')
    assert depth_scale('none', 5.0, official) == (False, 1.0, 'none')
    assert depth_scale('fixed', 5.4, official)[:2] == (False, 5.4)
    with pytest.raises(CliError, match='not trained with stereo'):
        depth_scale('stereo', 1.0, small_cpu_config())


def _median_ratio(model, cfg, seq, factor):
    """Median over frames of ``median(gt) / median(factor * pred)`` (no median scaling)."""
    from fmdepth_ros import metrics

    model.eval()
    with torch.no_grad():
        disp = model.depth_net(torch.from_numpy(seq.images).permute(0, 3, 1, 2).float()
                               / 255.0)[0][:, 0].numpy()
    ratios = [np.median(gt) / np.median(factor * metrics.disparity_to_eval_depth(
        d, gt.shape, cfg.model.min_depth, cfg.model.max_depth)) for d, gt in zip(disp, seq.depths)]
    return float(np.median(ratios))


@pytest.mark.slow
def test_ms_model_predicts_metric_depth_and_the_m_model_does_not(tmp_path, trained_model):
    """MS on a stereo corridor: GT / (36 x prediction) within 10 % of 1; M: arbitrary scale.

    The MS run is the M demo run (test/trained_model.py: config/synthetic_cpu.yaml, corridor
    seed 0, 40 frames, 10 FeatureNet + 150 depth steps) with the official MS switches: frame
    's' rendered 0.54 m to the right, stereo_T of 0.015 (depth unit 36 m), no auto-mask and
    no disparity mean normalisation; min/max depth are divided by 36 so the metric range is
    the M run's 0.1-100 m. Both are scored on the held-out corridor seed 7 without median
    scaling: the MS prediction times the --scaling stereo factor, the M prediction as is.
    """
    import yaml

    from fmdepth_ros.checkpoint import load_checkpoint

    data = tmp_path / 'stereo_seq'
    assert cli.main(['synth', str(data), '--frames', '40', '--width', '96', '--height', '64',
                     '--seed', '0', '--stereo']) == 0
    with open(os.path.join(ROOT, 'config', 'synthetic_cpu.yaml')) as f:
        settings = yaml.safe_load(f)
    factor = stereo_depth_factor(0.015, BASELINE)
    settings['model'].update(frame_ids=[0, -1, 1, 's'], stereo_translation=0.015,
                             stereo_baseline_m=BASELINE, min_depth=0.1 / factor,
                             max_depth=100.0 / factor)
    settings['loss'] = {'automask': False, 'disp_mean_normalise': False}
    config = tmp_path / 'ms.yaml'
    config.write_text(yaml.safe_dump(settings))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(['train', '--data', str(data), '--config', str(config), '--out',
                         str(tmp_path / 'run'), '--device', 'cpu', '--feature-steps', '10',
                         '--max-steps', '160', '--checkpoint-every', '0']) == 0
    finally:
        torch.set_num_threads(threads)
    held_out = render_sequence(16, width=96, height=64, seed=7)
    ms, ms_cfg, _ = load_checkpoint(str(tmp_path / 'run' / 'checkpoint.pt'))
    assert depth_scale('stereo', 1.0, ms_cfg)[1] == pytest.approx(factor)
    ms_ratio = _median_ratio(ms, ms_cfg, held_out, factor)
    mono, mono_cfg, _ = load_checkpoint(trained_model.checkpoint)
    mono_ratio = _median_ratio(mono, mono_cfg, held_out, 1.0)
    print(f'\nmedian GT / prediction without median scaling: MS (x{factor:g}) {ms_ratio:.3f}, '
          f'M {mono_ratio:.3f}')
    assert abs(ms_ratio - 1.0) < 0.10, ms_ratio
    assert abs(np.log(mono_ratio)) > np.log(1.5), mono_ratio


def test_online_refiner_runs_an_ms_model_on_mono_windows():
    """The node's refiner feeds (0, -1, 1) windows: an MS checkpoint refines without 's'."""
    from fmdepth_ros.runtime.refinement import OnlineRefiner

    torch.manual_seed(0)
    ms_cfg = _ms_cfg().merged({'model': {'height': 64, 'width': 192}})
    model = FeatDepthModel(ms_cfg).eval()
    node_cfg = ms_cfg.merged({'model': {'frame_ids': [0, -1, 1]}, 'refine': {'iterations': 1}})
    refiner = OnlineRefiner(model, node_cfg)
    assert model.cfg.model.frame_ids == (0, -1, 1, 's')        # the caller's model untouched
    window = {'images': np.random.default_rng(0).integers(0, 255, (3, 64, 192, 3), np.uint8),
              'K': np.array([[111.0, 0, 96], [0, 123, 32], [0, 0, 1]])}
    refiner._refine(window)
    stats = refiner.stats()
    assert stats['processed'] == 1 and stats['errors'] == 0

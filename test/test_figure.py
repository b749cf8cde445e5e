"""``fmdepth figure`` and evaluation of a folder whose frames are smaller than its LiDAR maps.

The real clip in data/ ships 320x97 frames with 1242x375 ground truth; these tests build the same
situation on a small synthetic folder.
"""

import argparse

import cv2
from fmdepth_ros.checkpoint import build_model, save_checkpoint
from fmdepth_ros.commands import figure as figure_command
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data.kitti_folder import write_depth_png
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.errors import DataError
from fmdepth_ros.evaluation import evaluate_data
from fmdepth_ros.figures import parse_frames, predict_frames
from fmdepth_ros.metrics import evaluate_depth, garg_crop_mask
import numpy as np
import pytest
import torch

FRAMES = 4
FULL = (64, 192)        # (h, w) of the ground truth and of the full-size frames
SMALL = (32, 96)        # frames downscaled by 2 (the network input is 64x192)


def _write_folder(path, seq, image_size, K):
    (path / 'images').mkdir(parents=True)
    (path / 'depth').mkdir()
    h, w = image_size
    for i in range(len(seq.images)):
        image = cv2.resize(seq.images[i], (w, h), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(path / 'images' / f'{i:06d}.png'), image[..., ::-1])
        sparse = np.where(np.arange(seq.depths[i].size).reshape(seq.depths[i].shape) % 7 == 0,
                          seq.depths[i], 0.0)           # a sparse, LiDAR-like GT
        write_depth_png(path / 'depth' / f'{i:06d}.png', sparse)
    sx, sy = w / FULL[1], h / FULL[0]
    (path / 'intrinsics.txt').write_text(
        f'{K[0, 0] * sx} {K[1, 1] * sy} {K[0, 2] * sx} {K[1, 2] * sy}\n')
    return path


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Save an untrained small checkpoint; write full-size and half-size frame folders."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp('figure')
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    ckpt = tmp / 'model.pt'
    save_checkpoint(ckpt, model, cfg)
    seq = render_sequence(FRAMES, width=FULL[1], height=FULL[0], seed=3)
    return {'cfg': cfg, 'model': model, 'ckpt': ckpt, 'tmp': tmp,
            'full': _write_folder(tmp / 'full', seq, FULL, seq.K),
            'small': _write_folder(tmp / 'small', seq, SMALL, seq.K)}


def _run_figure(argv):
    parser = argparse.ArgumentParser()
    figure_command.configure_parser(parser)
    return figure_command.run(parser.parse_args(argv))


def test_small_frames_are_scored_at_the_ground_truth_size(setup):
    """Frames smaller than their GT give the scores of full-size frames (the net input agrees).

    Both folders reach the network as the same 192x64 image, and the prediction is compared
    at the GT's 192x64, so the metrics agree; only the (unused for depth) K differs in scale.
    """
    cfg, model = setup['cfg'], setup['model']
    kwargs = {'device': 'cpu', 'odometry': False, 'progress': False, 'baselines': False}
    full = evaluate_data(model, cfg, str(setup['full']), **kwargs)['depth']
    small = evaluate_data(model, cfg, str(setup['small']), **kwargs)['depth']
    assert small['num_images'] == full['num_images'] > 0
    for key in ('abs_rel', 'rmse', 'a1'):
        assert small[key] == pytest.approx(full[key], rel=0.02)


def test_predict_frames_depth_is_at_gt_size_and_median_scaled(setup):
    """Row depth is at the GT size, median-scaled to it; its AbsRel is the protocol's."""
    rows = predict_frames(setup['model'], setup['cfg'], str(setup['small']), [0, 3])
    assert [r['frame'] for r in rows] == [0, 3]
    for row in rows:
        assert row['image'].shape == SMALL + (3,)
        assert row['depth'].shape == row['gt'].shape == FULL
        valid = (row['gt'] > 1e-3) & (row['gt'] < 80)
        valid &= garg_crop_mask(*FULL)
        assert np.median(row['depth'][valid]) == pytest.approx(np.median(row['gt'][valid]),
                                                               rel=1e-6)
        errors, ratio = evaluate_depth(row['gt'], row['depth'])
        assert ratio == pytest.approx(1.0, rel=1e-6)
        assert row['abs_rel'] == pytest.approx(errors['abs_rel'], rel=1e-6)


def test_figure_command_writes_one_row_per_frame(setup, capsys):
    """``fmdepth figure`` writes a PNG with three panels per frame and prints each AbsRel."""
    out = setup['tmp'] / 'fig.png'
    two = setup['tmp'] / 'fig2.png'
    assert _run_figure(['--checkpoint', str(setup['ckpt']), '--data', str(setup['small']),
                        '--out', str(out), '--frames', '0,1,2']) == 0
    assert _run_figure(['--checkpoint', str(setup['ckpt']), '--data', str(setup['small']),
                        '--out', str(two), '--frames', '1']) == 0
    printed = capsys.readouterr().out
    assert printed.count('AbsRel') == 4 and f'wrote {out}' in printed
    three_rows, one_row = cv2.imread(str(out)), cv2.imread(str(two))
    assert three_rows.shape[1] == one_row.shape[1]
    assert three_rows.shape[0] > 2 * one_row.shape[0]      # taller by about two rows
    assert three_rows.std() > 10                           # not a blank canvas


def test_figure_bad_input_is_one_line_error(setup, tmp_path):
    """Out-of-range frames, a frame without depth, bad --frames and missing files fail clearly."""
    from fmdepth_ros.errors import CliError

    base = ['--checkpoint', str(setup['ckpt']), '--data', str(setup['small']), '--out',
            str(tmp_path / 'x.png')]
    with pytest.raises(DataError, match='out of range'):
        _run_figure(base + ['--frames', '0,9'])
    with pytest.raises(DataError, match='frame indices'):
        parse_frames('a,b')
    with pytest.raises(DataError, match='>= 0'):
        parse_frames('-1')
    (setup['small'] / 'depth' / '000002.png').rename(tmp_path / 'moved.png')
    try:
        with pytest.raises(DataError, match='no depth'):
            _run_figure(base + ['--frames', '2'])
    finally:
        (tmp_path / 'moved.png').rename(setup['small'] / 'depth' / '000002.png')
    with pytest.raises(CliError, match='no such file'):
        _run_figure(['--checkpoint', str(tmp_path / 'none.pt'), '--data', str(setup['small']),
                     '--out', str(tmp_path / 'x.png')])
    assert not (tmp_path / 'x.png').exists()

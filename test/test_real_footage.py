"""Regression test on real KITTI footage: training from scratch learns depth, no collapse.

Trains the real-footage recipe (config/kitti_cpu.yaml) on KITTI odometry 00 and
scores it against the LiDAR of a different drive (the 78-frame city drive). With the official
PoseNet translation scale (x0.01) the same run heads for the near bound and fails here: depth
5th / 95th percentiles 0.127 / 0.299 (docs/training.md, "Training from scratch on real
footage"). Skipped without ../shared/data.
"""

import glob
import os

from fmdepth_ros import cli
from fmdepth_ros.checkpoint import load_checkpoint
from fmdepth_ros.config import load_config, save_config
from fmdepth_ros.data.folder import load_depth_file
from fmdepth_ros.data.triplets import load_rgb, resize_image
from fmdepth_ros.metrics import DepthMetricAccumulator, disparity_to_eval_depth
from fmdepth_ros.model import FeatDepthModel
from fmdepth_ros.trainer import seed_everything
import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data'))
ODOMETRY = os.path.join(DATA, 'kitti_odometry_00_frames_000-199')
CITY = os.path.join(DATA, 'kitti_raw_2011_09_26_city_78', '2011_09_26',
                    '2011_09_26_drive_city_sync')

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.isdir(ODOMETRY) and os.path.isdir(CITY)),
                       reason=f'real KITTI samples not found under {DATA} (../shared/data)'),
]

#: the recipe as shipped (100 DepthNet + PoseNet steps, float32: ~3.5 minutes on one core),
#: without its periodic checkpoints and logs
QUIET = {'train': {'checkpoint_every': 0, 'log_every': 0}}


def _city_frames(step=1):
    """Every ``step``-th city-drive frame: ([H, W, 3] uint8 RGB, [H, W] LiDAR depth m)."""
    images = sorted(glob.glob(os.path.join(CITY, 'image_02', 'data', '*.png')))[::step]
    lidar = os.path.join(CITY, 'proj_depth', 'velodyne_raw', 'image_02')
    return [(load_rgb(p), load_depth_file(os.path.join(lidar, os.path.basename(p))))
            for p in images]


def _score(depth_net, cfg, frames):
    """Mean AbsRel (median scaling) and the 5th / 95th depth percentiles before scaling."""
    depth_net.eval()
    scores, low, high = DepthMetricAccumulator(), [], []
    for image, gt in frames:
        x = resize_image(image, cfg.model.height, cfg.model.width)
        x = torch.from_numpy(x).permute(2, 0, 1).float()[None] / 255.0
        with torch.no_grad():
            disp = depth_net(x)[0][0, 0].numpy()
        pred = disparity_to_eval_depth(disp, gt.shape, cfg.model.min_depth, cfg.model.max_depth)
        scores.add(gt, pred)
        low.append(np.percentile(pred, 5))
        high.append(np.percentile(pred, 95))
    return scores.result()['abs_rel'], float(np.median(low)), float(np.median(high))


@pytest.fixture
def one_thread():
    """One torch thread (restored after): the same float32 run serially and under xdist."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_from_scratch_on_real_frames_learns_depth(tmp_path, one_thread):
    """The depth spreads between the bounds and beats the untrained net on another drive."""
    cfg = load_config(os.path.join(ROOT, 'config', 'kitti_cpu.yaml'), overrides=QUIET)
    config = tmp_path / 'short.yaml'
    save_config(cfg, str(config))
    assert cli.main(['train', '--data', ODOMETRY, '--config', str(config),
                     '--out', str(tmp_path / 'run'), '--device', 'cpu', '--no-progress']) == 0
    model, cfg, _ = load_checkpoint(str(tmp_path / 'run' / 'checkpoint.pt'))
    frames = _city_frames()
    trained, low, high = _score(model.depth_net, cfg, frames)
    seed_everything(cfg.train.seed)                    # the same initial weights as the run
    untrained, _, _ = _score(FeatDepthModel(cfg).depth_net, cfg, frames)
    # not pinned at either bound: the near bound is 0.1, the far one 100 (depth units)
    assert low > 2 * cfg.model.min_depth, (low, high)
    assert high < cfg.model.max_depth / 2, (low, high)
    assert high / low > 1.5, (low, high)
    assert trained < untrained - 0.01, (trained, untrained)
    print(f'\nAbsRel trained {trained:.4f} untrained {untrained:.4f}, depth p5 {low:.3f} '
          f'p95 {high:.3f}')

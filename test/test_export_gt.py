"""``fmdepth export-gt``: Monodepth2's Eigen ground truth from a hand-made velodyne scan."""

import argparse

from fmdepth_ros.commands import export_gt
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data import make_dataset
from fmdepth_ros.data.kitti import eigen_gt_depth, load_gt_depths
from fmdepth_ros.errors import CliError
import numpy as np
from PIL import Image
import pytest

DATE = '2011_09_26'
DRIVE = f'{DATE}/{DATE}_drive_0001_sync'
H, W = 6, 8


def _write(path, entries):
    path.write_text(''.join(f'{k}: ' + ' '.join(f'{v:.9e}' for v in np.ravel(a)) + '\n'
                            for k, a in entries))


@pytest.fixture
def kitti(tmp_path):
    """Write an 8x6 camera 2 (fx = fy = 10, cx = 4, cy = 3) and one scan of seven points."""
    root = tmp_path / 'kitti'
    drive = root / DRIVE
    (drive / 'image_02' / 'data').mkdir(parents=True)
    (drive / 'velodyne_points' / 'data').mkdir(parents=True)
    K = np.array([[10.0, 0, 4], [0, 10, 3], [0, 0, 1]])
    _write(root / DATE / 'calib_cam_to_cam.txt',
           [('R_rect_00', np.eye(3)), ('P_rect_00', np.c_[K, np.zeros(3)]),
            ('S_rect_02', [W, H]), ('P_rect_02', np.c_[K, np.zeros(3)])])
    # velodyne (x forward, y left, z up) -> camera 0 (x right, y down, z forward), 0.5 m ahead
    _write(root / DATE / 'calib_velo_to_cam.txt',
           [('R', [[0, -1, 0], [0, 0, -1], [1, 0, 0]]), ('T', [0, 0, 0.5])])
    image = drive / 'image_02' / 'data' / '0000000000.png'
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(image)
    points = np.array([
        [2.0, 0.0, 0.0],     # camera (0, 0, 2.5): pixel (u 4, v 3) -> round - 1 = (3, 2)
        [4.0, 0.0, 0.0],     # same pixel, farther: the nearest point (2) wins
        [4.5, -1.0, 0.0],    # camera (1, 0, 5): (6, 3) -> (5, 2), stores x = 4.5 (not z = 5)
        [2.0, 0.25, 0.25],   # camera (-0.25, -0.25, 2.5): (3, 2) -> (2, 1)
        [2.0, 0.9, 0.0],     # u = 0.4 rounds to 0 -> -1: outside (Monodepth2's convention)
        [1.0, -1.0, 0.0],    # u = 10.7 -> 10: outside
        [-3.0, 0.0, 0.0],    # behind the scanner
    ])
    scan = np.c_[points, np.full(len(points), 0.5)].astype(np.float32)
    scan.tofile(drive / 'velodyne_points' / 'data' / '0000000000.bin')
    expected = np.zeros((H, W), np.float32)
    expected[2, 3], expected[2, 5], expected[1, 2] = 2.0, 4.5, 2.0
    return root, expected


def _run(**kwargs):
    parser = argparse.ArgumentParser()
    export_gt.configure_parser(parser)
    args = parser.parse_args([x for k, v in kwargs.items() for x in (f'--{k}', str(v))])
    return export_gt.run(args)


def test_export_gt_projects_as_monodepth2(kitti, tmp_path, capsys):
    """One map per split line under 'data'; nearest point, velodyne x, round() - 1 pixels."""
    root, expected = kitti
    split = tmp_path / 'test_files.txt'
    split.write_text(f'{DRIVE} 0 l\n{DRIVE} 0000000000 l\n')
    out = tmp_path / 'gt_depths.npz'
    assert _run(data=root, split=split, out=out) == 0
    assert 'wrote' in capsys.readouterr().out
    with np.load(out) as f:
        assert f['data'].shape == (2, H, W) and f['data'].dtype == np.float32
    maps = load_gt_depths(out)
    for depth in maps:
        np.testing.assert_array_equal(depth, expected)
    # evaluate reads the file, and its velodyne fallback (no file) gives the same maps.
    cfg = small_cpu_config().merged({'model': {'height': 32, 'width': 32}})
    ds = make_dataset(root, cfg, split='test', split_file=str(split), gt_path=str(out))
    np.testing.assert_array_equal(ds.native_depth(0), expected)
    np.testing.assert_array_equal(eigen_gt_depth(root, DRIVE, 0), expected)
    fresh = make_dataset(root, cfg, split='test', split_file=str(split))
    np.testing.assert_array_equal(fresh.native_depth(1), expected)


def test_export_gt_errors_are_one_line(kitti, tmp_path):
    """Not a KITTI root, an unknown split or a missing scan: CliError, no file written."""
    root, _ = kitti
    out = tmp_path / 'gt.npz'
    with pytest.raises(CliError, match='not a KITTI raw root'):
        _run(data=tmp_path / 'nowhere', split='eigen', out=out)
    with pytest.raises(CliError, match="split 'nope'"):
        _run(data=root, split='nope', out=out)
    split = tmp_path / 'files.txt'
    split.write_text(f'{DRIVE} 7 l\n')
    with pytest.raises(CliError, match='0000000007.bin: velodyne scan missing'):
        _run(data=root, split=split, out=out)
    assert not out.exists()

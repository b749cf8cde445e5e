"""Tests of the datasets (fmdepth_ros.data): synthetic dirs, folders, KITTI raw, augmentation."""

import logging
import os

from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data import detect_kind, make_dataset
from fmdepth_ros.data.augment import (apply_color_jitter, ColorJitterParams, flip_intrinsics,
                                      sample_color_jitter)
from fmdepth_ros.data.folder import parse_intrinsics_text
from fmdepth_ros.data.kitti import parse_split_line, velodyne_to_depth
from fmdepth_ros.data.synth import render_sequence, write_sequence
from fmdepth_ros.data.triplets import collate_one
from fmdepth_ros.geometry import warp
import numpy as np
from PIL import Image
import pytest
import torch

ODOM = '/work/shared/data/kitti_odometry_01_frames_000-050'
H, W = 32, 96


def _cfg(flip=0.0, jitter=0.0):
    cfg = small_cpu_config().merged({'model': {'height': H, 'width': W},
                                     'train': {'flip_prob': flip, 'color_jitter_prob': jitter}})
    return cfg


@pytest.fixture(scope='module')
def seq():
    """Render five frames at twice the network size (so the loader must resize)."""
    return render_sequence(5, width=2 * W, height=2 * H, seed=2)


@pytest.fixture(scope='module')
def synth_dir(seq, tmp_path_factory):
    """Write the sequence to disk with write_sequence."""
    path = tmp_path_factory.mktemp('synth') / 'seq'
    write_sequence(seq, path)
    return path


def test_synthetic_dir_items(synth_dir, seq):
    """Shapes, frame order, resized K and depth of a synthetic-dir item."""
    cfg = _cfg()
    assert detect_kind(synth_dir) == 'synthetic'
    ds = make_dataset(synth_dir, cfg, split='train')
    assert len(ds) == 3                                # frames 1..3 have both neighbours
    item = ds[0]
    assert item['images'].shape == (3, 3, H, W) and item['images'].dtype == torch.float32
    assert item['images_aug'].shape == (3, 3, H, W)
    assert item['depth_gt'].shape == (1, H, W)
    assert 0.0 <= float(item['images'].min()) and float(item['images'].max()) <= 1.0
    np.testing.assert_allclose(item['K'].numpy(), np.diag([0.5, 0.5, 1.0]) @ seq.K, rtol=1e-6)
    # Order (0, -1, 1): target frame 1, then 0, then 2 (check against area-downsampled frames).
    for slot, frame in enumerate((1, 0, 2)):
        small = seq.images[frame].reshape(H, 2, W, 2, 3).mean(axis=(1, 3)) / 255.0
        np.testing.assert_allclose(item['images'][slot].permute(1, 2, 0).numpy(), small,
                                   atol=1.5 / 255)
    assert len(make_dataset(synth_dir, cfg, split='test')) == 5
    assert len(make_dataset(synth_dir, cfg, split='val')) == 5


def test_frame_cache_gives_the_same_items_and_stays_bounded(synth_dir):
    """frame_cache_mb keeps resized frames in memory, never more than the budget."""
    plain = make_dataset(synth_dir, _cfg(), split='test')
    cfg = _cfg().merged({'train': {'frame_cache_mb': 1}})
    cached = make_dataset(synth_dir, cfg, split='test')
    for _ in range(2):                                   # the second pass reads the cache
        for i in range(len(cached)):
            torch.testing.assert_close(cached[i]['images'], plain[i]['images'])
            torch.testing.assert_close(cached[i]['K'], plain[i]['K'])
    assert len(cached._cache) == 5 and cached._cached_bytes == 5 * H * W * 3
    tiny = make_dataset(synth_dir, _cfg().merged({'train': {'frame_cache_mb': 0}}),
                        split='test')
    tiny[0]
    assert not tiny._cache


def test_batch_is_geometrically_consistent(synth_dir, seq):
    """Warping the source frame with depth_gt, K and GT poses reproduces the target."""
    ds = make_dataset(synth_dir, _cfg(), split='train')
    batch = collate_one(ds[1])                         # target frame 2
    T_src_tgt = torch.from_numpy(np.linalg.inv(seq.poses[3]) @ seq.poses[2]).float()[None]
    target, source = batch['images'][:, 0], batch['images'][:, 2]   # frame id 1 -> frame 3
    depth = batch['depth_gt']
    warped, valid = warp(source, depth, T_src_tgt, batch['K'])
    err = ((warped - target).abs().mean(1, keepdim=True) * valid).sum() / valid.sum()
    warped_bad, valid_b = warp(source, depth * 0.4, T_src_tgt, batch['K'])
    err_bad = ((warped_bad - target).abs().mean(1, keepdim=True) * valid_b).sum() / valid_b.sum()
    assert valid.mean() > 0.6
    assert float(err) < 0.05
    assert float(err_bad) > 1.5 * float(err)


def test_flip_and_jitter(synth_dir):
    """Flip mirrors images, depth and cx together; jitter only touches images_aug."""
    plain = make_dataset(synth_dir, _cfg(), split='train')[0]
    flipped = make_dataset(synth_dir, _cfg(flip=1.0), split='train')[0]
    assert torch.equal(flipped['images'], torch.flip(plain['images'], [-1]))
    assert torch.equal(flipped['depth_gt'], torch.flip(plain['depth_gt'], [-1]))
    assert float(flipped['K'][0, 2]) == pytest.approx(W - 1 - float(plain['K'][0, 2]))
    assert float(flipped['K'][0, 0]) == float(plain['K'][0, 0])
    torch.manual_seed(0)
    jittered = make_dataset(synth_dir, _cfg(jitter=1.0), split='train')[0]
    assert torch.equal(jittered['images'], plain['images'])
    assert not torch.allclose(jittered['images_aug'], plain['images'], atol=1e-3)
    # Validation / test splits never augment.
    val = make_dataset(synth_dir, _cfg(flip=1.0, jitter=1.0), split='val')[1]
    assert torch.equal(val['images'], plain['images']) and torch.equal(
        val['images_aug'], val['images'])


def test_color_jitter_semantics():
    """Identity factors change nothing; brightness multiplies; the same params give same output."""
    img = torch.rand(2, 3, 8, 8)
    assert torch.allclose(apply_color_jitter(img, ColorJitterParams()), img, atol=1e-6)
    bright = apply_color_jitter(img, ColorJitterParams(brightness=1.2, order=(0,)))
    assert torch.allclose(bright, (img * 1.2).clamp(0, 1))
    gray = apply_color_jitter(img, ColorJitterParams(saturation=0.0, order=(2,)))
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-6)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    cyan = apply_color_jitter(red, ColorJitterParams(hue=0.5, order=(3,)))
    assert torch.allclose(cyan[0, :, 0, 0], torch.tensor([0.0, 1.0, 1.0]), atol=1e-4)
    same = torch.cat([img[:1], img[:1]])
    out = apply_color_jitter(same, sample_color_jitter(torch.Generator().manual_seed(1)))
    assert torch.equal(out[0], out[1])
    for _ in range(20):
        p = sample_color_jitter()
        assert 0.8 <= p.brightness <= 1.2 and 0.8 <= p.contrast <= 1.2
        assert 0.8 <= p.saturation <= 1.2 and -0.1 <= p.hue <= 0.1
        assert sorted(p.order) == [0, 1, 2, 3]
    K = torch.tensor([[50.0, 0, 40.0], [0, 50.0, 16.0], [0, 0, 1]])
    assert float(flip_intrinsics(K, 96)[0, 2]) == 55.0


def test_folder_of_frames(tmp_path, seq, caplog):
    """Plain folder: frames sorted by name, K from 'fx fy cx cy', yaml, or a default + warning."""
    folder = tmp_path / 'frames'
    folder.mkdir()
    for i in range(4):
        Image.fromarray(seq.images[i]).save(folder / f'frame_{i:03d}.jpg', quality=95)
    (folder / 'intrinsics.txt').write_text('100 110 95.5 31.5\n')
    assert detect_kind(folder) == 'folder'
    ds = make_dataset(folder, _cfg(), split='test')
    assert len(ds) == 4 and 'depth_gt' not in ds[0]
    np.testing.assert_allclose(ds[0]['K'].numpy(), [[50, 0, 47.75], [0, 55, 15.75], [0, 0, 1]])
    os.remove(folder / 'intrinsics.txt')
    (folder / 'camera.yaml').write_text(
        'image_width: 192\nimage_height: 64\ncamera_matrix:\n  rows: 3\n  cols: 3\n'
        '  data: [120.0, 0.0, 96.0, 0.0, 121.0, 32.0, 0.0, 0.0, 1.0]\n')
    assert float(make_dataset(folder, _cfg(), split='test')[0]['K'][1, 1]) == 60.5
    os.remove(folder / 'camera.yaml')
    with caplog.at_level(logging.WARNING):
        ds = make_dataset(folder, _cfg(), split='train')
    assert 'no intrinsics' in caplog.text and len(ds) == 2
    ds = make_dataset(folder, _cfg(), split='test', intrinsics=(200, 200, 96, 32))
    assert float(ds[0]['K'][0, 0]) == 100.0
    split = tmp_path / 'list.txt'
    split.write_text('frame_002.jpg\n3\n')          # a file name and an index
    ds = make_dataset(folder, _cfg(), split='test', split_file=str(split),
                      intrinsics=(200, 200, 96, 32))
    assert [i for _, i in ds.samples] == [2, 3]
    split.write_text('nothing_here\n')
    with pytest.raises(ValueError, match='no line names a frame'):
        make_dataset(folder, _cfg(), split='test', split_file=str(split),
                     intrinsics=(200, 200, 96, 32))


def test_parse_intrinsics_text():
    """3x3, KITTI 'P0:' lines and bad input."""
    K = parse_intrinsics_text('1 0 2\n0 3 4\n0 0 1\n', 'x')
    assert K[0, 2] == 2 and K[1, 1] == 3
    K = parse_intrinsics_text('P0: 7 0 6 0 0 7 5 0 0 0 1 0\nP1: 1 0 0 0 0 1 0 0 0 0 1 0\n', 'x')
    np.testing.assert_array_equal(K, [[7, 0, 6], [0, 7, 5], [0, 0, 1]])
    with pytest.raises(ValueError, match='intrinsics'):
        parse_intrinsics_text('1 2 3', 'x')


@pytest.mark.skipif(not os.path.isdir(ODOM), reason='real KITTI odometry sample absent')
def test_real_kitti_odometry_folder():
    """Grey KITTI odometry frames give 3 equal channels; K from calib.txt (bare P lines)."""
    cfg = _cfg()
    ds = make_dataset(ODOM, cfg, split='test')
    assert len(ds) == 51
    item = ds[0]
    assert torch.equal(item['images'][0, 0], item['images'][0, 1])
    assert float(item['K'][0, 0]) == pytest.approx(718.856 * W / 1241, rel=1e-6)
    assert float(item['K'][1, 2]) == pytest.approx(185.2157 * H / 376, rel=1e-6)
    assert ds.samples[0][0].poses.shape == (51, 4, 4)


# ----------------------------------------------------------------------------- KITTI raw

DATE = '2011_09_26'
DRIVE = f'{DATE}/{DATE}_drive_0001_sync'
R_RECT = np.array([[0.9999239, 0.00983776, -0.007445048],
                   [-0.009869795, 0.9999421, -0.004278459],
                   [0.007402527, 0.004351614, 0.9999631]])
R_VELO = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04],
                   [1.480249e-02, 7.280733e-04, -9.998902e-01],
                   [9.998621e-01, 7.523790e-03, 1.480755e-02]])
T_VELO = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])


def _fmt(a):
    return ' '.join(f'{v:.12e}' for v in np.asarray(a).ravel())


def _write_fake_kitti(root, seq):
    """KITTI raw tree from a synthetic sequence, with realistic calibration files."""
    date_dir = root / DATE
    img_dir = root / DRIVE / 'image_02' / 'data'
    velo_dir = root / DRIVE / 'velodyne_points' / 'data'
    img_dir.mkdir(parents=True)
    velo_dir.mkdir(parents=True)
    K = seq.K
    baseline = np.array([0.06, 0.0, 0.0])              # camera 2 is offset from camera 0
    P2 = np.concatenate([K, (K @ baseline)[:, None]], axis=1)
    P0 = np.concatenate([K, np.zeros((3, 1))], axis=1)
    (date_dir / 'calib_cam_to_cam.txt').write_text(
        'calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n'
        f'S_00: 1.392000e+03 5.120000e+02\nK_00: {_fmt(K)}\nR_rect_00: {_fmt(R_RECT)}\n'
        f'P_rect_00: {_fmt(P0)}\nS_rect_02: {W * 2} {H * 2}\nR_rect_02: {_fmt(np.eye(3))}\n'
        f'P_rect_02: {_fmt(P2)}\nP_rect_03: {_fmt(P2)}\n')
    (date_dir / 'calib_velo_to_cam.txt').write_text(
        f'calib_time: 15-Mar-2012 11:37:16\nR: {_fmt(R_VELO)}\nT: {_fmt(T_VELO)}\n'
        'delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n')
    h, w = seq.depths.shape[1:]
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    for i in range(len(seq)):
        Image.fromarray(seq.images[i]).save(img_dir / f'{i:010d}.png')
        cam2 = (rays * seq.depths[i].ravel())[:, ::3]    # a sparse subset, like a lidar
        rect0 = cam2 - baseline[:, None]                  # P2 = K [I | b]: x_cam2 = x_rect0 + b
        cam0 = R_RECT.T @ rect0
        velo = R_VELO.T @ (cam0 - T_VELO[:, None])
        pts = np.concatenate([velo.T, np.full((velo.shape[1], 1), 0.5)], 1).astype(np.float32)
        pts.tofile(velo_dir / f'{i:010d}.bin')
    return rays


def test_kitti_raw_tree(tmp_path, seq):
    """Velodyne GT projects back onto the synthetic depth; split lines and npz GT are used."""
    root = tmp_path / 'kitti'
    _write_fake_kitti(root, seq)
    assert detect_kind(root) == 'kitti'
    calib = str(root / DATE)
    h, w = seq.depths.shape[1:]
    scan = str(root / DRIVE / 'velodyne_points' / 'data' / '0000000002.bin')
    z = velodyne_to_depth(scan, calib, (h, w), velodyne_depth=False)
    hit = z > 0
    assert 0.2 < hit.mean() < 0.5
    np.testing.assert_allclose(z[hit], seq.depths[2][hit], rtol=1e-4, atol=1e-4)
    # The standard GT stores the velodyne forward coordinate: ~0.27 m behind the camera.
    vx = velodyne_to_depth(scan, calib, (h, w))
    eigen = velodyne_to_depth(scan, calib, (h, w), pixel_offset=-1)   # Monodepth2 pixels
    assert np.all(np.abs(vx[hit] - z[hit] - 0.27) < 0.1)

    cfg = _cfg()
    train = make_dataset(root, cfg, split='train')
    assert len(train) == 3 and 'depth_gt' not in train[0]
    for sub in (root / DATE, root / DRIVE):            # a date or a drive folder works too
        assert detect_kind(sub) == 'kitti'
        assert len(make_dataset(sub, cfg, split='test')) == 5
    assert float(train[0]['K'][0, 0]) == pytest.approx(seq.K[0, 0] / 2)
    split = tmp_path / 'test_files.txt'
    split.write_text(f'{DRIVE} 0000000002 l\n{DRIVE} 4 l\n')
    test = make_dataset(root, cfg, split='test', split_file=str(split))
    assert len(test) == 2
    np.testing.assert_array_equal(test.native_depth(0), eigen)
    assert test[1]['images'].shape == (3, 3, H, W)     # last frame: neighbour +1 is clamped
    assert test[0]['depth_gt'].shape == (1, H, W)
    # A prepared gt_depths.npz beside the split file wins over the velodyne scans.
    gts = np.empty(2, dtype=object)
    gts[0], gts[1] = np.full((h, w), 7.0, np.float32), np.full((h, w), 9.0, np.float32)
    np.savez(tmp_path / 'gt_depths.npz', data=gts)
    test = make_dataset(root, cfg, split='test', split_file=str(split))
    assert float(test.native_depth(1).mean()) == 9.0
    bad = tmp_path / 'bad' / 'files.txt'
    bad.parent.mkdir()
    bad.write_text(f'{DRIVE} 0000000002 l\n')
    np.savez(bad.parent / 'gt_depths.npz', data=gts)
    with pytest.raises(ValueError, match='2 depth maps for 1 split lines'):
        make_dataset(root, cfg, split='test', split_file=str(bad))


def test_split_line_formats():
    """Monodepth2 lines, right camera and the original Eigen image-path format."""
    assert parse_split_line(f'{DRIVE} 0000000010 l') == (DRIVE, 10, 2)
    assert parse_split_line(f'{DRIVE} 5 r') == (DRIVE, 5, 3)
    line = f'{DRIVE}/image_02/data/0000000069.png {DRIVE}/image_03/data/0000000069.png'
    assert parse_split_line(line) == (DRIVE, 69, 2)
    assert parse_split_line('   ') is None
    with pytest.raises(ValueError):
        parse_split_line(f'{DRIVE} 5 x')


def test_bad_paths(tmp_path):
    """Missing path, empty directory, bad split name and non-dataset files fail clearly."""
    cfg = _cfg()
    with pytest.raises(ValueError, match='no such file'):
        make_dataset(tmp_path / 'missing', cfg)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='not a KITTI raw root'):
        make_dataset(tmp_path / 'empty', cfg)
    (tmp_path / 'x.txt').write_text('hello')
    with pytest.raises(ValueError, match='not a dataset'):
        make_dataset(tmp_path / 'x.txt', cfg)
    with pytest.raises(ValueError, match='split'):
        make_dataset(tmp_path / 'empty', cfg, split='bogus')

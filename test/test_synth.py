"""Tests of the synthetic sequence generator (fmdepth_ros.data.synth)."""

from fmdepth_ros.cli import main as cli_main
from fmdepth_ros.data.synth import (load_poses_kitti, read_sequence, render_sequence,
                                    save_poses_kitti, write_sequence)
import numpy as np
import pytest


@pytest.fixture(scope='module')
def seq():
    """Six small frames shared by the tests."""
    return render_sequence(6, width=96, height=32, seed=3)


def test_shapes_and_ranges(seq):
    """Arrays have the documented shapes, dtypes and plausible values."""
    assert seq.images.shape == (6, 32, 96, 3) and seq.images.dtype == np.uint8
    assert seq.depths.shape == (6, 32, 96) and seq.depths.dtype == np.float32
    assert seq.poses.shape == (6, 4, 4) and seq.K.shape == (3, 3)
    assert np.all(seq.depths > 0.3) and np.all(seq.depths < 100)
    np.testing.assert_allclose(seq.poses[0], np.eye(4), atol=1e-12)
    step = np.linalg.norm(np.diff(seq.poses[:, :3, 3], axis=0), axis=1)
    assert np.all((step > 0.15) & (step < 0.6))
    assert np.all(np.diff(seq.stamps_ns) == 100_000_000)
    # Rotations stay orthonormal.
    R = seq.poses[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (6, 1, 1)), atol=1e-9)


def test_deterministic_for_seed(seq):
    """Same seed gives identical output; another seed differs."""
    again = render_sequence(6, width=96, height=32, seed=3)
    np.testing.assert_array_equal(seq.images, again.images)
    np.testing.assert_array_equal(seq.depths, again.depths)
    other = render_sequence(6, width=96, height=32, seed=4)
    assert not np.array_equal(seq.images, other.images)


def test_scene_has_texture_and_a_textureless_wall():
    """Left wall is plain, floor/right wall are textured."""
    s = render_sequence(1, width=192, height=64, seed=0, yaw_deg=0.0)
    img = s.images[0].astype(np.float32)
    # Left columns at mid height see the plain wall: nearly constant colour.
    left = img[24:40, :6]
    assert left.std(axis=(0, 1)).max() < 2.0
    # The right wall and floor are textured.
    assert img[40:, 100:].std() > 10.0


def test_depth_and_poses_are_geometrically_consistent(seq):
    """Warp frame 4 into frame 0 with GT depth and poses: colours must match."""
    K, Kinv = seq.K, np.linalg.inv(seq.K)
    h, w = seq.depths.shape[1:]
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))  # centres
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    pts0 = Kinv @ pix * seq.depths[0].ravel()                       # camera 0 points
    T_1_0 = np.linalg.inv(seq.poses[4]) @ seq.poses[0]
    pts1 = T_1_0[:3, :3] @ pts0 + T_1_0[:3, 3:]
    proj = K @ pts1
    u1, v1 = proj[0] / proj[2], proj[1] / proj[2]
    inside = (u1 > 1) & (u1 < w - 2) & (v1 > 1) & (v1 < h - 2)
    ui, vi = np.round(u1[inside]).astype(int), np.round(v1[inside]).astype(int)
    warped = seq.images[4][vi, ui].astype(np.float32)
    target = seq.images[0].reshape(-1, 3)[inside].astype(np.float32)
    err = np.abs(warped - target).mean()
    # Against a wrong depth (x0.5) the error must be clearly larger.
    pts_bad = T_1_0[:3, :3] @ (pts0 * 0.5) + T_1_0[:3, 3:]
    proj_b = K @ pts_bad
    ub = np.clip(np.round(proj_b[0] / proj_b[2]).astype(int), 0, w - 1)[inside]
    vb = np.clip(np.round(proj_b[1] / proj_b[2]).astype(int), 0, h - 1)[inside]
    err_bad = np.abs(seq.images[4][vb, ub].astype(np.float32) - target).mean()
    assert inside.mean() > 0.5
    assert err < 12.0
    assert err_bad > 2.0 * err, (err, err_bad)


def test_write_read_roundtrip(seq, tmp_path):
    """write_sequence then read_sequence gives the same data."""
    write_sequence(seq, tmp_path / 'seq')
    assert (tmp_path / 'seq' / 'images' / '000005.png').exists()
    assert (tmp_path / 'seq' / 'depth' / '000000.npy').exists()
    back = read_sequence(tmp_path / 'seq')
    np.testing.assert_array_equal(back.images, seq.images)
    np.testing.assert_array_equal(back.depths, seq.depths)
    np.testing.assert_allclose(back.poses, seq.poses, atol=1e-8)
    np.testing.assert_allclose(back.K, seq.K)
    np.testing.assert_array_equal(back.stamps_ns, seq.stamps_ns)
    lines = (tmp_path / 'seq' / 'poses.txt').read_text().splitlines()
    assert len(lines) == 6 and len(lines[0].split()) == 12


def test_kitti_pose_io(tmp_path):
    """KITTI pose files round-trip; malformed ones fail clearly."""
    poses = np.tile(np.eye(4), (2, 1, 1))
    poses[1, :3, 3] = [1.5, -2.0, 3.25]
    save_poses_kitti(tmp_path / 'p.txt', poses)
    np.testing.assert_allclose(load_poses_kitti(tmp_path / 'p.txt'), poses)
    (tmp_path / 'bad.txt').write_text('1 2 3\n')
    with pytest.raises(ValueError, match='12 numbers'):
        load_poses_kitti(tmp_path / 'bad.txt')


def test_cli(tmp_path, capsys):
    """`fmdepth synth` writes frames and rejects bad arguments."""
    out = tmp_path / 'cli'
    assert cli_main(['synth', str(out), '--frames', '3', '--width', '64', '--height', '32',
                     '--seed', '1']) == 0
    assert len(list((out / 'images').glob('*.png'))) == 3
    assert cli_main(['synth', str(tmp_path / 'x'), '--frames', '0']) == 2
    assert 'frames' in capsys.readouterr().err

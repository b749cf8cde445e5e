"""kitti2folder on a hand-made KITTI raw drive: images, LiDAR depth maps, intrinsics (no ROS)."""

import argparse

import cv2
from fmdepth_ros.commands import kitti2folder
from fmdepth_ros.data.folder import FolderSource, load_depth_file
from fmdepth_ros.data.kitti_calib import project_points
from fmdepth_ros.data.kitti_folder import drive_to_folder, write_depth_png
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.errors import DataError
import numpy as np
import pytest
from synthetic_drive import write_synthetic_drive

NUM_FRAMES = 4


@pytest.fixture(scope='module')
def seq():
    """Render a tiny synthetic sequence with exact depth."""
    return render_sequence(NUM_FRAMES, width=64, height=32, seed=5)


@pytest.fixture()
def drive(seq, tmp_path):
    """Write the sequence as a KITTI drive: frame 0 with a proj_depth map, frame 3 no LiDAR."""
    drive = write_synthetic_drive(seq, tmp_path / 'raw', velodyne_stride=1)
    proj = drive / 'proj_depth' / 'velodyne_raw' / 'image_02'
    proj.mkdir(parents=True)
    marker = np.zeros(seq.depths[0].shape)
    marker[5, 7] = 12.5                       # recognisably not a projection of the scan
    write_depth_png(proj / '0000000000.png', marker)
    (drive / 'velodyne_points' / 'data' / '0000000003.bin').unlink()
    return drive


def _run(argv):
    parser = argparse.ArgumentParser()
    kitti2folder.configure_parser(parser)
    return kitti2folder.run(parser.parse_args(argv))


def test_folder_layout_depth_sources_and_intrinsics(drive, seq, tmp_path, capsys):
    """proj_depth is used as is, scans are projected (round() - 1 pixels), K is P_rect_02."""
    out = tmp_path / 'folder'
    assert _run([str(drive), str(out)]) == 0
    assert 'proj_depth 1, projected velodyne 2, none 1' in capsys.readouterr().out
    names = [f'{i:010d}.png' for i in range(NUM_FRAMES)]
    assert sorted(p.name for p in (out / 'images').iterdir()) == names
    assert (out / 'images' / names[1]).is_symlink()
    np.testing.assert_array_equal(cv2.imread(str(out / 'images' / names[1])),
                                  cv2.imread(str(drive / 'image_02' / 'data' / names[1])))
    assert sorted(p.name for p in (out / 'depth').iterdir()) == names[:3]
    marker = load_depth_file(str(out / 'depth' / names[0]))
    assert marker[5, 7] == 12.5 and np.count_nonzero(marker) == 1

    # Frame 1: the scan was back-projected from every pixel's depth, so each pixel (v, u)
    # lands on (v - 1, u - 1) with its own camera depth (to 1/256 m).
    depth = load_depth_file(str(out / 'depth' / names[1]))
    truth = seq.depths[1]
    valid = depth[:-1, :-1] > 0
    assert valid.mean() > 0.9
    np.testing.assert_allclose(depth[:-1, :-1][valid], truth[1:, 1:][valid], atol=1 / 256)
    assert not depth[-1].any() and not depth[:, -1].any()

    source = FolderSource(str(out))
    np.testing.assert_allclose(source.K, seq.K, atol=1e-6)
    assert [source.has_depth(i) for i in range(NUM_FRAMES)] == [True, True, True, False]


def test_copy_and_overwrite(drive, tmp_path):
    """--copy writes plain files; a second run needs overwrite and replaces the folder."""
    out = tmp_path / 'folder'
    drive_to_folder(drive, out, copy=True)
    assert not (out / 'images' / '0000000000.png').is_symlink()
    assert not (out / 'depth' / '0000000000.png').is_symlink()
    with pytest.raises(DataError, match='exists'):
        drive_to_folder(drive, out)
    summary = drive_to_folder(drive, out, overwrite=True)
    assert summary.frames == NUM_FRAMES and (out / 'images' / '0000000000.png').is_symlink()
    assert not list(tmp_path.glob('.folder*'))


def test_missing_drive_parts_are_one_line_errors(tmp_path):
    """A drive without the camera folder is a DataError naming the folder."""
    with pytest.raises(DataError, match='drive folder not found'):
        drive_to_folder(tmp_path / 'nope', tmp_path / 'out')
    (tmp_path / 'd').mkdir()
    with pytest.raises(DataError, match='image_02'):
        drive_to_folder(tmp_path / 'd', tmp_path / 'out')


def test_project_points_pixel_offset():
    """pixel_offset shifts the rounded pixel; points pushed outside the image are dropped."""
    K = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])
    points = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    depth = project_points(points, K, 4, 4, pixel_offset=-1)
    assert depth[1, 0] == 1.0 and np.count_nonzero(depth) == 1

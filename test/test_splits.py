"""Tests of the shipped KITTI splits, split names, and the KITTI-without-split refusal."""

import os

from fmdepth_ros import cli
from fmdepth_ros.data.kitti import read_split_file
from fmdepth_ros.data.splits import resolve_split, split_names
from fmdepth_ros.data.synth import render_sequence
import pytest

from synthetic_drive import write_synthetic_drive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = os.path.join(ROOT, 'splits')


def _lines(path):
    with open(path, 'r', encoding='utf-8') as f:
        return sum(1 for line in f if line.strip())


def test_shipped_split_files_and_licence():
    """The official FeatDepth lists, complete, with their MIT licence beside them."""
    assert _lines(os.path.join(SPLITS, 'eigen_zhou', 'train_files.txt')) == 39810
    assert _lines(os.path.join(SPLITS, 'eigen', 'test_files.txt')) == 697
    for name in ('train_files', 'val_files', 'test_files_09', 'test_files_10'):
        assert os.path.isfile(os.path.join(SPLITS, 'odom', name + '.txt'))
    with open(os.path.join(SPLITS, 'LICENSE.FeatDepth'), encoding='utf-8') as f:
        assert f.readline().strip() == 'MIT License'
    test = read_split_file(os.path.join(SPLITS, 'eigen', 'test_files.txt'))
    assert test[0][0].startswith('2011_09_26/') and {cam for _, _, cam in test} == {2}
    # The Eigen test drives are not in the training list.
    train_drives = {d for d, _, _ in read_split_file(
        os.path.join(SPLITS, 'eigen_zhou', 'train_files.txt'))}
    assert not train_drives & {d for d, _, _ in test}


def test_split_names_resolve_to_the_shipped_files(tmp_path):
    """Names per purpose, folder/file names, odometry sequences; a path wins; unknown: one line."""
    assert resolve_split('eigen_zhou', 'train') == os.path.join(
        SPLITS, 'eigen_zhou', 'train_files.txt')
    assert resolve_split('eigen', 'test') == os.path.join(SPLITS, 'eigen', 'test_files.txt')
    assert resolve_split('odom', 'train') == os.path.join(SPLITS, 'odom', 'train_files.txt')
    assert resolve_split('odom_09', 'test') == os.path.join(SPLITS, 'odom', 'test_files_09.txt')
    assert resolve_split('odom/val_files.txt') == os.path.join(SPLITS, 'odom', 'val_files.txt')
    own = tmp_path / 'eigen'                           # an existing path is used as it is
    own.write_text('x 1 l\n')
    assert resolve_split(str(own), 'test') == str(own)
    assert {'eigen', 'eigen_zhou', 'odom', 'odom_10'} <= set(split_names())
    for bad, purpose in (('eigen', 'train'), ('zhou', 'train'), ('eigen_zhou', 'test')):
        with pytest.raises(ValueError, match=f"split '{bad}': .*known: eigen") as info:
            resolve_split(bad, purpose)
        assert '\n' not in str(info.value)


@pytest.fixture(scope='module')
def kitti_root(tmp_path_factory):
    """Write a KITTI raw root with one 5-frame synthetic drive."""
    root = tmp_path_factory.mktemp('kitti')
    drive = write_synthetic_drive(render_sequence(5, width=96, height=64, seed=1), root)
    return root, drive


def test_kitti_training_refuses_without_a_split(kitti_root, tmp_path, capsys):
    """KITTI raw without --split is a one-line error naming --no-split; bad names too."""
    root, _ = kitti_root
    base = ['train', '--data', str(root), '--out', str(tmp_path / 'run'), '--device', 'cpu',
            '--no-progress', '--max-steps', '0']
    assert cli.main(base) == 2
    err = capsys.readouterr().err.strip()
    assert '--split eigen_zhou' in err and '--no-split' in err and '\n' not in err
    assert cli.main(base + ['--split', 'eigen']) == 2
    assert 'no such file, nor a train split name' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'run' / 'checkpoint.pt')


def test_kitti_training_with_a_split_file_or_no_split(kitti_root, tmp_path):
    """A split file (also under the old --split-file flag) or --no-split lets training start."""
    import torch
    torch.set_num_threads(1)
    root, drive = kitti_root
    split = tmp_path / 'train_files.txt'
    split.write_text(''.join(f'{drive.parent.name}/{drive.name} {i} l\n' for i in (1, 2, 3)))
    tiny = ['--config', os.path.join(ROOT, 'config', 'synthetic_cpu.yaml'), '--device', 'cpu',
            '--no-progress', '--max-steps', '0', '--num-workers', '0', '--batch-size', '2']
    for k, extra in enumerate((['--split', str(split)], ['--split-file', str(split)],
                               ['--no-split'])):
        out = tmp_path / f'run{k}'
        assert cli.main(['train', '--data', str(root), '--out', str(out), *tiny, *extra]) == 0
        assert os.path.isfile(out / 'checkpoint.pt')

"""End to end: KITTI-format drive -> kitti2bag -> replay -> node -> outputs -> evaluation."""

import json
import os
import subprocess
import sys

from fmdepth_ros.bag_eval import evaluate_bag
from fmdepth_ros.cli import main
from fmdepth_ros.data import bag as bagio
from fmdepth_ros.data import kitti2bag
from fmdepth_ros.data.kitti_calib import project_points
from fmdepth_ros.data.synth import render_sequence
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from synthetic_drive import write_synthetic_drive

NUM_FRAMES = 10
WIDTH, HEIGHT = 192, 64


@pytest.fixture(scope='module')
def seq():
    """Render the synthetic sequence the drive is made of."""
    return render_sequence(NUM_FRAMES, width=WIDTH, height=HEIGHT, seed=5)


@pytest.fixture(scope='module')
def bag(seq, tmp_path_factory):
    """Write a KITTI-format drive and convert it with ``fmdepth kitti2bag`` (MCAP)."""
    root = tmp_path_factory.mktemp('pipeline')
    drive = write_synthetic_drive(seq, root)
    out = root / 'drive_bag'
    assert main(['kitti2bag', str(drive), str(out)]) == 0
    return out


@pytest.fixture(scope='module')
def compressed_db_bag(bag, tmp_path_factory):
    """Convert the same drive to sqlite3 storage with CompressedImage (PNG)."""
    drive = next(bag.parent.glob('2011_09_26/*_sync'))
    out = bag.parent / 'drive_db'
    assert main(['kitti2bag', str(drive), str(out), '--storage', 'sqlite3', '--compressed']) == 0
    return out


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Save a small randomly initialised model (ResNet-18, 64x192) as a checkpoint."""
    import torch

    from fmdepth_ros.checkpoint import build_model, save_checkpoint
    from fmdepth_ros.config import small_cpu_config
    torch.manual_seed(0)
    cfg = small_cpu_config()
    path = tmp_path_factory.mktemp('ckpt') / 'small.pt'
    save_checkpoint(path, build_model(cfg), cfg)
    return path


def _stamp(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _write_predictions(path, seq, depth_fn, pose_fn):
    """Write a bag shaped like ``fmdepth record`` output from ground-truth-derived values."""
    ts = get_typestore(Stores.ROS2_JAZZY)
    make = kitti2bag.MessageFactory(ts)
    ty = ts.types
    rel = np.linalg.inv(seq.poses[0]) @ seq.poses
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        depth_conn = writer.add_connection('/fmdepth/depth/image', 'sensor_msgs/msg/Image',
                                           typestore=ts)
        odom_conn = writer.add_connection('/fmdepth/odom', 'nav_msgs/msg/Odometry', typestore=ts)
        for k, stamp in enumerate(int(s) for s in seq.stamps_ns):
            depth = depth_fn(k, seq.depths[k]).astype('<f4')
            msg = ty['sensor_msgs/msg/Image'](
                header=make.header(stamp, 'camera_optical'), height=HEIGHT, width=WIDTH,
                encoding='32FC1', is_bigendian=0, step=WIDTH * 4,
                data=depth.view(np.uint8).reshape(-1))
            writer.write(depth_conn, stamp, ts.serialize_cdr(msg, depth_conn.msgtype))
            if k:   # like the node: no pose for the first frame; child = camera frame here
                odom = make.odometry(stamp, 'odom', 'camera_optical', pose_fn(k, rel[k]))
                writer.write(odom_conn, stamp, ts.serialize_cdr(odom, odom_conn.msgtype))


def test_evaluation_is_exact_on_ground_truth_and_sensitive_to_errors(bag, seq, tmp_path):
    """Ground-truth predictions (any scale) score perfectly; corrupted ones do not."""
    def scaled(k, T):
        T = T.copy()
        T[:3, 3] *= 0.5
        return T

    perfect = tmp_path / 'perfect'
    _write_predictions(perfect, seq, lambda k, d: d * 3.0, scaled)
    json_path = tmp_path / 'out' / 'eval.json'
    result = evaluate_bag(None, bag, predictions=perfect, json_path=json_path, log=lambda s: None)
    assert result['depth']['num_images'] == NUM_FRAMES
    assert result['depth']['abs_rel'] < 1e-4 and result['depth']['a1'] == 1.0
    assert result['depth']['scale_ratio_median'] == pytest.approx(1 / 3.0, rel=1e-4)
    assert result['odometry']['poses'] == NUM_FRAMES - 1
    assert result['odometry']['ate'] < 1e-4 and result['odometry']['ate_sim3'] < 1e-4
    assert result['odometry']['scale'] == pytest.approx(2.0, rel=1e-3)
    assert json.loads(json_path.read_text())['depth']['abs_rel'] == result['depth']['abs_rel']
    assert os.listdir(json_path.parent) == ['eval.json']

    rng = np.random.default_rng(0)

    def drifting(k, T):
        T = T.copy()
        T[:3, 3] += [0.1 * k, 0.0, -0.05 * k * k]
        return T

    noisy = tmp_path / 'noisy'
    _write_predictions(noisy, seq, lambda k, d: d * rng.uniform(0.6, 1.4, d.shape), drifting)
    bad = evaluate_bag(None, bag, predictions=noisy, log=lambda s: None)
    assert bad['depth']['abs_rel'] > 0.05 and bad['depth']['a1'] < 0.9
    assert bad['odometry']['ate'] > 0.05


def test_project_points_keeps_the_nearest_point():
    """Two points on one pixel: the nearer depth wins; points behind the camera are dropped."""
    K = np.array([[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]])
    points = np.array([[0.0, 0, 5], [0.0, 0, 2], [0.0, 0, -3], [0.1, 0, 1]])
    depth = project_points(points, K, 5, 5)
    assert depth[2, 2] == 2.0 and depth[2, 3] == 1.0 and np.count_nonzero(depth) == 2


@pytest.mark.ros
@pytest.mark.slow
def test_node_answers_every_replayed_frame_with_its_stamp(bag, checkpoint, seq, tmp_path,
                                                          ros_context):
    """kitti2bag -> replay -> DepthNode -> recorded outputs: all frames, stamps preserved."""
    pytest.importorskip('rclpy')
    from fmdepth_ros.ros.tools.record import record_bag
    out = tmp_path / 'record'
    result = record_bag(bag, out, checkpoint=str(checkpoint), context=ros_context,
                        storage='sqlite3', log=lambda s: None)
    stamps = [int(s) for s in seq.stamps_ns]
    assert result.frames_in == NUM_FRAMES and result.all_answered
    assert result.input_stamps == stamps and result.depth_stamps == stamps
    assert result.odom_count == NUM_FRAMES - 1

    with AnyReader([out]) as reader:
        by_topic = {}
        for conn, _, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    depths = by_topic['/fmdepth/depth/image']
    assert [_stamp(m.header) for m in depths] == stamps
    assert all((m.encoding, m.width, m.height, m.header.frame_id)
               == ('32FC1', WIDTH, HEIGHT, 'camera_optical') for m in depths)
    assert [_stamp(m.header) for m in by_topic['/fmdepth/depth/camera_info']] == stamps
    odom = by_topic['/fmdepth/odom']
    assert [_stamp(m.header) for m in odom] == stamps[1:]
    assert odom[0].header.frame_id == 'odom' and odom[0].child_frame_id == 'base_link'
    assert len(list(out.glob('*.db3'))) == 1

    result = evaluate_bag(str(checkpoint), bag, predictions=out, log=lambda s: None)
    assert result['frames_in'] == result['frames_answered'] == NUM_FRAMES
    assert result['depth']['num_images'] == NUM_FRAMES
    assert all(np.isfinite(result['depth'][k]) for k in ('abs_rel', 'rmse', 'a1'))
    assert result['odometry']['poses'] == NUM_FRAMES - 1 and np.isfinite(result['odometry']['ate'])


@pytest.mark.ros
@pytest.mark.slow
def test_fmdepth_evaluate_bag_cli(compressed_db_bag, checkpoint, tmp_path):
    """``fmdepth evaluate --checkpoint CKPT --bag BAG --json FILE`` on a compressed sqlite3 bag."""
    pytest.importorskip('rclpy')
    json_path = tmp_path / 'metrics.json'
    code = 'import sys; from fmdepth_ros.cli import main; sys.exit(main(sys.argv[1:]))'
    done = subprocess.run([sys.executable, '-c', code, 'evaluate', '--checkpoint',
                           str(checkpoint), '--bag', str(compressed_db_bag), '--json',
                           str(json_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'{NUM_FRAMES}/{NUM_FRAMES} frames answered' in done.stdout
    assert 'abs_rel' in done.stdout and 'ATE' in done.stdout
    data = json.loads(json_path.read_text())
    assert data['frames_answered'] == NUM_FRAMES and data['depth']['num_images'] == NUM_FRAMES
    assert np.isfinite(data['odometry']['ate'])


def test_record_cli_errors(bag, tmp_path, capsys):
    """``fmdepth record`` on a corrupt bag or into an existing folder: exit 2, one line."""
    corrupt = tmp_path / 'corrupt.mcap'
    corrupt.write_bytes(b'\x89MCAP0\r\n' + bytes(200))
    assert main(['record', str(corrupt), '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err.strip()
    assert 'corrupt.mcap' in err and '\n' not in err
    assert main(['record', str(bag), '--out', str(tmp_path)]) == 2
    assert 'exists' in capsys.readouterr().err
    with pytest.raises(bagio.BagError):
        evaluate_bag(None, bag, predictions=corrupt, log=lambda s: None)


@pytest.mark.ros
@pytest.mark.slow
def test_evaluate_bag_passes_refine_one_node(bag, checkpoint, tmp_path, ros_context):
    """--passes 2 with refinement: one node, two scored passes, the refiner ran in both."""
    pytest.importorskip('rclpy')
    from fmdepth_ros.ros.tools.evaluate import evaluate_bag as evaluate_node_on_bag
    out, lines = tmp_path / 'passes', []
    result = evaluate_node_on_bag(str(checkpoint), bag, refine_steps=1, output=out,
                                  json_path=tmp_path / 'passes.json', log=lines.append,
                                  passes=2, node_parameters={'refine_every': 4})
    assert sorted(p.name for p in out.iterdir()) == ['pass_1', 'pass_2']
    assert [row['pass_index'] for row in result['passes']] == [1, 2]
    for row in result['passes']:
        assert row['frames_answered'] == NUM_FRAMES and row['depth']['num_images'] == NUM_FRAMES
        # refine_sync: every window submitted in the pass was refined before the next frame
        # (windows start once the 3-frame window is full: frames 3..10, every 4th frame).
        assert row['refiner']['processed'] == 2 and row['refiner']['dropped'] == 0
    assert result['passes'][1]['refiner']['processed_total'] == 4
    assert result['depth'] == result['passes'][1]['depth']
    assert json.loads((tmp_path / 'passes.json').read_text())['passes'][0]['pass_index'] == 1
    assert any(line.startswith('   2 ') for line in lines[-1].splitlines())


def test_param_values_read_numbers_like_the_node_expects():
    """NAME:=VALUE typing: 5e-4 is a float (YAML 1.1 would keep it a string), words stay text."""
    from fmdepth_ros.ros.tools.record import parse_param_values
    assert parse_param_values(['lr:=5e-4', 'on:=true', 'n:=3', 'w:=x1e5']) == {
        'lr': 5e-4, 'on': True, 'n': 3, 'w': 'x1e5'}

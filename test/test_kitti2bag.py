"""kitti2bag and the rosbags readers of data/bag.py, on a synthetic KITTI-format drive (no ROS)."""

import shutil
import sqlite3

import cv2
from fmdepth_ros.cli import main
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data import bag as bagio
from fmdepth_ros.data import kitti2bag, kitti_calib
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.errors import DataError
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from synthetic_drive import write_synthetic_drive

NUM_FRAMES = 8


@pytest.fixture(scope='module')
def seq():
    """Render a tiny synthetic sequence with exact depth and poses."""
    return render_sequence(NUM_FRAMES, width=96, height=32, seed=3)


@pytest.fixture(scope='module')
def drive(seq, tmp_path_factory):
    """Write the sequence in the KITTI raw layout (PNG, timestamps, calib, OXTS, velodyne)."""
    return write_synthetic_drive(seq, tmp_path_factory.mktemp('kitti'))


@pytest.fixture(scope='module')
def mcap_bag(drive, tmp_path_factory):
    """Convert the drive with the CLI (MCAP, raw images)."""
    out = tmp_path_factory.mktemp('bags') / 'drive_mcap'
    assert main(['kitti2bag', str(drive), str(out)]) == 0
    return out


def test_kitti_text_formats_round_trip(drive, seq):
    """Timestamps parse to the original nanoseconds; calibration keys have the right sizes."""
    stamps = kitti2bag.parse_timestamps(drive / 'image_02' / 'timestamps.txt')
    assert stamps == [int(s) for s in seq.stamps_ns]
    calib = kitti_calib.read_calib_file(drive.parent / 'calib_cam_to_cam.txt')
    assert calib['P_rect_02'].size == 12 and calib['R_rect_00'].size == 9
    cal = kitti_calib.load_calibration(drive.parent, 2)
    np.testing.assert_allclose(cal.K, seq.K, atol=1e-9)


def test_oxts_pose_conversion_is_the_inverse_of_poses_to_oxts():
    """Mercator conversion (KITTI devkit) recovers relative poses from synthesised packets."""
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (6, 1, 1))
    poses[:, :3, :3] = Rotation.from_euler('ZYX', rng.uniform(-0.4, 0.4, (6, 3))).as_matrix()
    poses[:, :3, 3] = rng.uniform(-30, 30, (6, 3))
    back = kitti2bag.oxts_to_poses(kitti2bag.poses_to_oxts(poses))
    expected = np.linalg.inv(poses[0]) @ poses
    np.testing.assert_allclose(back, expected, atol=1e-5)


def test_bag_topics_and_contents(mcap_bag, seq):
    """Images, camera_info, /tf_static, OXTS odometry and velodyne match the ground truth."""
    with AnyReader([mcap_bag]) as reader:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        info = next(reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(
            [c for c in reader.connections if c.topic == '/camera/camera_info']))
    assert topics == {
        '/camera/image_raw': ('sensor_msgs/msg/Image', NUM_FRAMES),
        '/camera/camera_info': ('sensor_msgs/msg/CameraInfo', NUM_FRAMES),
        '/tf_static': ('tf2_msgs/msg/TFMessage', 1),
        '/ground_truth/odom': ('nav_msgs/msg/Odometry', NUM_FRAMES),
        '/velodyne_points': ('sensor_msgs/msg/PointCloud2', NUM_FRAMES)}
    assert info.header.frame_id == 'camera_optical' and (info.width, info.height) == (96, 32)
    np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], seq.K)
    assert np.all(info.p.reshape(3, 4)[:, 3] == 0) and np.all(info.d == 0)
    np.testing.assert_allclose(info.r.reshape(3, 3), np.eye(3))

    frames = list(bagio.read_bag_frames(mcap_bag))
    assert [f.stamp_ns for f in frames] == [int(s) for s in seq.stamps_ns]
    for frame, image in zip(frames, seq.images):
        assert np.array_equal(frame.image, image)            # PNG is lossless
        np.testing.assert_allclose(frame.K, seq.K)
        assert frame.frame_id == 'camera_optical'

    tf = bagio.read_static_transforms(mcap_bag)
    T_base_cam = tf.lookup('base_link', 'camera_optical')
    odom = bagio.read_odometry(mcap_bag, '/ground_truth/odom')
    assert (odom.frame_id, odom.child_frame_id) == ('world', 'base_link')
    cam_poses = np.linalg.inv(T_base_cam) @ odom.poses @ T_base_cam
    np.testing.assert_allclose(cam_poses, np.linalg.inv(seq.poses[0]) @ seq.poses, atol=1e-6)

    T_cam_velo = tf.lookup('camera_optical', 'velodyne')
    for k, (stamp, frame_id, points) in enumerate(
            bagio.read_point_clouds(mcap_bag, '/velodyne_points')):
        assert frame_id == 'velodyne' and stamp == int(seq.stamps_ns[k])
        cam = points @ T_cam_velo[:3, :3].T + T_cam_velo[:3, 3]
        uv = cam @ seq.K.T
        u = np.round(uv[:, 0] / uv[:, 2]).astype(int)
        v = np.round(uv[:, 1] / uv[:, 2]).astype(int)
        assert len(points) > 500
        np.testing.assert_allclose(cam[:, 2], seq.depths[k][v, u], rtol=1e-4)


def test_mcap_tools_read_the_bag(mcap_bag, seq):
    """The mcap / mcap-ros2-support readers decode every message of the bag."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    (mcap_file,) = mcap_bag.glob('*.mcap')
    seen = {}
    with open(mcap_file, 'rb') as f:
        decoded = list(make_reader(f, decoder_factories=[DecoderFactory()])
                       .iter_decoded_messages())
    for _, channel, _, msg in decoded:
        seen[channel.topic] = seen.get(channel.topic, 0) + 1
        if channel.topic == '/camera/image_raw' and seen[channel.topic] == 1:
            assert (msg.encoding, msg.width, msg.height) == ('rgb8', 96, 32)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == int(seq.stamps_ns[0])
            image = np.frombuffer(bytes(msg.data), np.uint8).reshape(32, 96, 3)
            assert np.array_equal(image, seq.images[0])
    assert seen['/camera/image_raw'] == NUM_FRAMES and seen['/tf_static'] == 1


@pytest.mark.parametrize('jpeg', [False, True])
def test_sqlite3_compressed_bag(drive, seq, tmp_path, jpeg):
    """sqlite3 storage with CompressedImage (PNG bytes lossless, or JPEG close)."""
    out = tmp_path / 'drive_db'
    args = ['kitti2bag', str(drive), str(out), '--storage', 'sqlite3', '--compressed']
    assert main(args + (['--jpeg-quality', '95'] if jpeg else [])) == 0
    assert list(out.glob('*.db3'))
    with AnyReader([out]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
    assert topics['/camera/image_raw/compressed'] == 'sensor_msgs/msg/CompressedImage'
    assert '/camera/image_raw' not in topics
    frames = list(bagio.read_bag_frames(out))
    assert len(frames) == NUM_FRAMES
    error = np.abs(frames[3].image.astype(int) - seq.images[3]).mean()
    assert error < 3.0 if jpeg else error == 0


def test_decode_image_encodings(seq):
    """Decode bgr8 / mono8 / rgba8 / padded rows to the same RGB; unknown encodings fail."""
    from types import SimpleNamespace
    rgb = seq.images[0]
    h, w = rgb.shape[:2]

    def msg(encoding, array, pad=0):
        rows = array.reshape(h, -1)
        rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
        return SimpleNamespace(encoding=encoding, height=h, width=w, step=rows.shape[1],
                               data=rows.ravel())

    assert np.array_equal(bagio.decode_image(msg('bgr8', rgb[:, :, ::-1].copy(), 4), 'x'), rgb)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(bagio.decode_image(msg('rgba8', rgba), 'x'), rgb)
    assert np.array_equal(bagio.decode_image(msg('bgra8', rgba[:, :, [2, 1, 0, 3]]), 'x'), rgb)
    grey = bagio.decode_image(msg('mono8', rgb[:, :, 0].copy()), 'x')
    assert grey.shape == (h, w, 3) and np.array_equal(grey[:, :, 2], rgb[:, :, 0])
    with pytest.raises(bagio.BagError, match='unsupported image encoding'):
        bagio.decode_image(msg('yuv422', rgb), 'x')
    ok, png = cv2.imencode('.png', rgb[:, :, ::-1])
    compressed = SimpleNamespace(format='png', data=png.ravel())
    assert np.array_equal(bagio.decode_image(compressed, bagio.COMPRESSED_TYPE), rgb)


def test_bag_dataset_triplets(mcap_bag, seq):
    """Check that BagDataset yields batch items with K scaled to the network size."""
    cfg = small_cpu_config()
    train = bagio.BagDataset(mcap_bag, cfg)
    assert len(train) == NUM_FRAMES - 2
    item = train[0]
    assert item['images'].shape == (3, 3, 64, 192) and item['images_aug'].shape == (3, 3, 64, 192)
    assert train.stamp_ns(0) == int(seq.stamps_ns[1])
    expected_K = seq.K.copy()
    expected_K[0] *= 2
    expected_K[1] *= 2
    flipped = expected_K.copy()
    flipped[0, 2] = 192 - 1 - expected_K[0, 2]
    K = item['K'].numpy()
    assert np.allclose(K, expected_K, atol=1e-4) or np.allclose(K, flipped, atol=1e-3)
    test = bagio.BagDataset(mcap_bag, cfg, split='test')
    assert len(test) == NUM_FRAMES
    np.testing.assert_allclose(test[0]['K'].numpy(), expected_K, atol=1e-4)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_cli_errors_are_one_line(drive, tmp_path, capsys):
    """Missing folders / calibration, timestamp mismatch and an existing output: exit 2."""
    root = _copy(drive.parent, tmp_path / 'date')
    bad_drive = root / drive.name
    cases = []
    cases.append((['kitti2bag', str(tmp_path / 'nope'), str(tmp_path / 'o1')],
                  'drive folder not found'))
    cases.append((['kitti2bag', str(bad_drive), str(tmp_path / 'o2'), '--camera', '3'],
                  'camera folder not found'))
    for args, expected in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and '\n' not in err
    stamps_file = bad_drive / 'image_02' / 'timestamps.txt'
    good = stamps_file.read_text()
    stamps_file.write_text(good + '2011-09-26 13:00:09.000000000\n')
    assert main(['kitti2bag', str(bad_drive), str(tmp_path / 'o3')]) == 2
    assert 'timestamps.txt' in capsys.readouterr().err
    stamps_file.write_text(good)
    (root / 'calib_imu_to_velo.txt').unlink()
    with pytest.raises(DataError, match='calib_imu_to_velo.txt'):
        kitti2bag.open_drive(bad_drive)
    assert main(['kitti2bag', str(drive), str(tmp_path)]) == 2
    assert 'exists' in capsys.readouterr().err
    assert not list(tmp_path.glob('o*')) and not list(tmp_path.glob('.o*'))


def test_truncated_and_corrupt_bags_give_one_line_errors(drive, mcap_bag, tmp_path):
    """A truncated MCAP file, a corrupt sqlite3 database and garbage all raise BagError."""
    truncated = _copy(mcap_bag, tmp_path / 'truncated')
    (mcap_file,) = truncated.glob('*.mcap')
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[:len(data) // 2])

    db_bag = tmp_path / 'db'
    assert main(['kitti2bag', str(drive), str(db_bag), '--storage', 'sqlite3']) == 0
    (db_file,) = db_bag.glob('*.db3')
    with sqlite3.connect(db_file) as con:      # rows whose CDR is cut short
        con.execute('UPDATE messages SET data = substr(data, 1, 40)')
    header_broken = _copy(db_bag, tmp_path / 'db_header')
    (db_file2,) = header_broken.glob('*.db3')
    with open(db_file2, 'r+b') as f:
        f.write(b'\0' * 100)

    garbage = tmp_path / 'garbage.mcap'
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    for path in (truncated, db_bag, header_broken, garbage, tmp_path / 'missing',
                 tmp_path):
        with pytest.raises(bagio.BagError) as info:
            list(bagio.read_bag_frames(path))
        message = str(info.value)
        assert '\n' not in message and len(message) < 300
        assert str(path) in message or path.name in message


def test_overwrite_replaces_the_bag(drive, tmp_path):
    """--overwrite replaces an existing bag only once the new one is complete."""
    out = tmp_path / 'bag'
    assert main(['kitti2bag', str(drive), str(out)]) == 0
    assert main(['kitti2bag', str(drive), str(out), '--overwrite', '--no-velodyne']) == 0
    with AnyReader([out]) as reader:
        assert '/velodyne_points' not in {c.topic for c in reader.connections}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag']


def _layout_without_stamps_and_oxts(drive, root, frames):
    """Copy ``drive`` in the shared city drive's layout.

    The first ``frames`` images with a proj_depth map each, no timestamps.txt anywhere, no
    OXTS, velodyne scans for frames 0-1.
    """
    date = root / drive.parent.name
    new = date / drive.name
    (new / 'image_02' / 'data').mkdir(parents=True)
    (new / 'velodyne_points' / 'data').mkdir(parents=True)
    proj = new / 'proj_depth' / 'velodyne_raw' / 'image_02'
    proj.mkdir(parents=True)
    for calib in drive.parent.glob('calib_*.txt'):
        shutil.copy(calib, date / calib.name)
    for k in range(frames):
        name = f'{k:010d}'
        shutil.copy(drive / 'image_02' / 'data' / f'{name}.png',
                    new / 'image_02' / 'data' / f'{name}.png')
        depth = np.zeros((32, 96), np.uint16)
        depth[k, 2 * k] = 256 * (k + 1)              # (k + 1) m at pixel (k, 2k)
        cv2.imwrite(str(proj / f'{name}.png'), depth)
        if k < 2:
            shutil.copy(drive / 'velodyne_points' / 'data' / f'{name}.bin',
                        new / 'velodyne_points' / 'data' / f'{name}.bin')
    return new


def test_drive_without_timestamps_and_oxts(drive, tmp_path, capsys):
    """One warning each, 10 Hz stamps from the date, no odometry, proj_depth as GT depth."""
    new = _layout_without_stamps_and_oxts(drive, tmp_path / 'raw', 4)
    out = tmp_path / 'bag'
    assert main(['kitti2bag', str(new), str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count('warning') == 3
    assert 'image_02/timestamps.txt not found' in err and 'oxts not found' in err
    assert 'velodyne_points/timestamps.txt not found: 2 scans' in err
    with AnyReader([out]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert '/ground_truth/odom' not in counts
    assert counts['/ground_truth/depth'] == 4 and counts['/velodyne_points'] == 2
    midnight = 1316995200 * 1_000_000_000                   # 2011-09-26 00:00:00 UTC
    frames = list(bagio.read_bag_frames(out))
    assert [f.stamp_ns for f in frames] == [midnight + k * 100_000_000 for k in range(4)]
    from fmdepth_ros.bag_eval import GT_DEPTH_TOPIC, _depth_messages
    maps = list(_depth_messages(out, GT_DEPTH_TOPIC))
    assert [s for s, _, _ in maps] == [f.stamp_ns for f in frames]
    for k, (_, frame_id, depth) in enumerate(maps):
        assert frame_id == 'camera_optical' and depth.dtype == np.float32
        assert depth[k, 2 * k] == k + 1 and np.isnan(depth).sum() == depth.size - 1
    clouds = [s for s, _, _ in bagio.read_point_clouds(out, '/velodyne_points')]
    assert clouds == [f.stamp_ns for f in frames[:2]]


def test_bag_evaluation_scores_against_the_depth_maps(drive, tmp_path):
    """Bag evaluation scores against /ground_truth/depth when the bag has it.

    The maps themselves score AbsRel 0, a copy with a horizontal ramp its error (a global
    scale would vanish in the median scaling).
    """
    from fmdepth_ros.bag_eval import evaluate_depth_against_maps
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import get_typestore, Stores

    bag = tmp_path / 'bag'
    assert main(['kitti2bag', str(drive), str(bag)]) == 0
    # The synthetic drive has no proj_depth: add it from the velodyne projection.
    from fmdepth_ros.bag_eval import GT_DEPTH_TOPIC
    with AnyReader([bag]) as reader:
        assert GT_DEPTH_TOPIC not in {c.topic for c in reader.connections}
    proj = drive / 'proj_depth' / 'velodyne_raw' / 'image_02'
    proj.mkdir(parents=True, exist_ok=True)
    truth = []
    for k in range(NUM_FRAMES):
        depth = kitti_calib.velodyne_to_depth(
            drive / 'velodyne_points' / 'data' / f'{k:010d}.bin', drive.parent, (32, 96),
            velodyne_depth=False)
        cv2.imwrite(str(proj / f'{k:010d}.png'), np.round(depth * 256).astype(np.uint16))
        truth.append(np.round(depth * 256) / 256)
    try:
        bag2 = tmp_path / 'bag2'
        assert main(['kitti2bag', str(drive), str(bag2)]) == 0
    finally:
        shutil.rmtree(drive / 'proj_depth')
    stamps = [f.stamp_ns for f in bagio.read_bag_frames(bag2)]
    typestore = get_typestore(Stores.ROS2_JAZZY)
    make = kitti2bag.MessageFactory(typestore)
    for name, transform in (('exact', lambda d, k: d), ('ramp', lambda d, k: d * (
            1.0 + 0.5 * (np.arange(96) / 95.0))[None, :])):
        pred_bag = tmp_path / name
        with Writer(pred_bag, version=8) as writer:
            conn = writer.add_connection('/fmdepth/depth/image', 'sensor_msgs/msg/Image',
                                         typestore=typestore)
            for k, stamp in enumerate(stamps):
                pred = transform(np.where(truth[k] > 0, truth[k], 5.0), k).astype(np.float32)
                writer.write(conn, stamp, typestore.serialize_cdr(
                    make.depth_image(stamp, 'camera_optical', pred), conn.msgtype))
        result = evaluate_depth_against_maps(bag2, pred_bag, tolerance_ns=10_000_000,
                                             garg_crop=False)
        assert result['num_images'] == NUM_FRAMES and result['ground_truth'] == GT_DEPTH_TOPIC
        if name == 'exact':
            assert result['abs_rel'] < 1e-6 and result['a1'] == 1.0
        else:
            assert 0.05 < result['abs_rel'] < 0.3


CITY = ('/work/shared/data/kitti_raw_2011_09_26_city_78/2011_09_26/'
        '2011_09_26_drive_city_sync')


@pytest.mark.slow
@pytest.mark.skipif(not __import__('os').path.isdir(CITY),
                    reason='the shared KITTI city drive (../shared/data) is absent')
def test_real_city_drive_to_bag(tmp_path):
    """Five frames of the real city drive: warnings, 10 Hz stamps, LiDAR depth as GT maps."""
    root = tmp_path / 'raw' / '2011_09_26'
    new = root / '2011_09_26_drive_city_sync'
    for calib in ('calib_cam_to_cam.txt', 'calib_velo_to_cam.txt', 'calib_imu_to_velo.txt'):
        (root).mkdir(parents=True, exist_ok=True)
        shutil.copy(f'{CITY}/../{calib}', root / calib)
    for sub in ('image_02/data', 'proj_depth/velodyne_raw/image_02', 'velodyne_points/data'):
        (new / sub).mkdir(parents=True)
    for k in range(5):
        for sub, ext in (('image_02/data', 'png'), ('proj_depth/velodyne_raw/image_02', 'png'),
                         ('velodyne_points/data', 'bin')):
            shutil.copy(f'{CITY}/{sub}/{k:010d}.{ext}', new / sub / f'{k:010d}.{ext}')
    warnings = []
    drive = kitti2bag.open_drive(new, 2, log=warnings.append)
    assert len(warnings) == 3 and drive.warnings == warnings
    assert [w.split(' not found')[0].rsplit('/', 2)[-2:] for w in warnings] == [
        ['image_02', 'timestamps.txt'], ['2011_09_26_drive_city_sync', 'oxts'],
        ['velodyne_points', 'timestamps.txt']]
    out = tmp_path / 'city_bag'
    kitti2bag.write_bag(drive, out)
    frames = list(bagio.read_bag_frames(out))
    stamps = [f.stamp_ns for f in frames]
    assert len(frames) == 5 and np.all(np.diff(stamps) == 100_000_000)
    assert frames[0].image.shape == (375, 1242, 3)
    np.testing.assert_allclose(frames[0].K[0, 0], 721.5377)
    from fmdepth_ros.bag_eval import GT_DEPTH_TOPIC, _depth_messages
    for k, (stamp, _, depth) in enumerate(_depth_messages(out, GT_DEPTH_TOPIC)):
        raw = cv2.imread(f'{CITY}/proj_depth/velodyne_raw/image_02/{k:010d}.png', -1)
        assert stamp == stamps[k]
        assert np.array_equal(np.isnan(depth), raw == 0) and (raw > 0).sum() > 10000
        np.testing.assert_allclose(depth[raw > 0], raw[raw > 0] / 256.0)
        # The scans of the drive project onto the same pixels (round() - 1, camera z-depth).
        if k == 0:
            scan = kitti_calib.velodyne_to_depth(f'{CITY}/velodyne_points/data/{k:010d}.bin',
                                                 root, raw.shape, velodyne_depth=False,
                                                 pixel_offset=-1)
            both = (scan > 0) & (raw > 0)
            assert both.sum() > 0.95 * (raw > 0).sum()
            np.testing.assert_allclose(scan[both], raw[both] / 256.0, atol=0.01)
    with AnyReader([out]) as reader:
        assert '/ground_truth/odom' not in {c.topic for c in reader.connections}

"""``fmdepth kitti2bag``: convert a KITTI raw drive into a rosbag2 bag (``rosbags`` library).

Input: ``.../2011_09_26/2011_09_26_drive_XXXX_sync`` (rectified, synchronised images) with its
calibration files in the parent folder (``calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt``,
``calib_imu_to_velo.txt``). Output (MCAP by default, sqlite3 on request; no ROS install needed):

* ``/camera/image_raw``: sensor_msgs/Image, rgb8 (mono8 for the grey cameras 0/1), frame
  ``camera_optical``; or ``/camera/image_raw/compressed``: sensor_msgs/CompressedImage with
  ``--compressed`` (the drive's PNG bytes, or JPEG with ``--jpeg-quality``).
* ``/camera/camera_info``: sensor_msgs/CameraInfo, rectified: K and P = [K | 0] from
  ``P_rect_0X``, D = 0 (plumb_bob), R = I; same stamp as the image.
* ``/tf_static``: tf2_msgs/TFMessage, ``base_link`` (the OXTS IMU) -> ``camera_optical`` and
  ``base_link`` -> ``velodyne`` from the calibration.
* ``/ground_truth/odom``: nav_msgs/Odometry ``world`` -> ``base_link``, the OXTS pose relative
  to the first one (KITTI devkit Mercator conversion), body-frame twist from the OXTS packet.
* ``/velodyne_points``: sensor_msgs/PointCloud2 (x, y, z, intensity float32), frame ``velodyne``.

Every message is logged at its header stamp (the drive's ``timestamps.txt``); camera_info shares
the image's stamp. The bag is written to a temporary folder and renamed into place when complete.
"""

import calendar
from dataclasses import dataclass, field
import os
from pathlib import Path
import shutil
import time
from typing import Dict, List, Optional

from fmdepth_ros.cli import CliError
import numpy as np

EARTH_RADIUS_M = 6378137.0       # WGS84 equatorial radius, as in the KITTI devkit
CAMERA_FRAME = 'camera_optical'
BASE_FRAME = 'base_link'
VELODYNE_FRAME = 'velodyne'
WORLD_FRAME = 'world'
IMAGE_TOPIC = '/camera/image_raw'
COMPRESSED_TOPIC = '/camera/image_raw/compressed'
INFO_TOPIC = '/camera/camera_info'
TF_STATIC_TOPIC = '/tf_static'
ODOM_TOPIC = '/ground_truth/odom'
VELODYNE_TOPIC = '/velodyne_points'
BAG_VERSION = 8                  # rosbag2 metadata version 8 (Jazzy and newer read it)


# ----------------------------------------------------------------------------- KITTI text files

def parse_calib_file(path) -> Dict[str, np.ndarray]:
    """Read a KITTI ``key: v1 v2 ...`` calibration file; non-numeric entries are skipped.

    Raises:
        CliError: the file is missing or has no numeric entry.
    """
    path = Path(path)
    if not path.is_file():
        raise CliError(f'calibration file not found: {path}')
    values = {}
    for line in path.read_text().splitlines():
        key, sep, rest = line.partition(':')
        if not sep:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            continue  # e.g. calib_time: 09-Jan-2012 13:57:47
    if not values:
        raise CliError(f'no calibration values in {path}')
    return values


def _calib_entry(calib, key, size, path):
    if key not in calib or calib[key].size != size:
        raise CliError(f'{path}: missing or malformed entry {key!r} ({size} numbers expected)')
    return calib[key]


def rigid_from_rt(rotation, translation) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation (9 values) and a translation (3 values)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


def parse_timestamps(path) -> List[int]:
    """Read a KITTI ``timestamps.txt`` (``2011-09-26 13:02:25.964389445``) as UTC nanoseconds."""
    path = Path(path)
    if not path.is_file():
        raise CliError(f'timestamps file not found: {path}')
    stamps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            whole, _, fraction = line.partition('.')
            tm = time.strptime(whole, '%Y-%m-%d %H:%M:%S')
            nanos = int((fraction + '000000000')[:9]) if fraction else 0
        except ValueError:
            raise CliError(f'{path}:{number}: cannot parse timestamp {line!r}') from None
        stamps.append(calendar.timegm(tm) * 1_000_000_000 + nanos)
    return stamps


@dataclass
class KittiCalibration:
    """Calibration of one camera of a KITTI raw drive (all transforms ``T_a_b``: b -> a, metres).

    Attributes:
        K: [3, 3] rectified intrinsics in pixels (``P_rect_0X[:, :3]``).
        T_cam_velo: [4, 4] velodyne -> rectified camera optical frame.
        T_velo_imu: [4, 4] IMU (base_link) -> velodyne.
    """

    K: np.ndarray
    T_cam_velo: np.ndarray
    T_velo_imu: np.ndarray

    @property
    def T_base_cam(self) -> np.ndarray:
        """[4, 4] camera optical -> base_link (the OXTS IMU frame)."""
        return np.linalg.inv(self.T_cam_velo @ self.T_velo_imu)

    @property
    def T_base_velo(self) -> np.ndarray:
        """[4, 4] velodyne -> base_link."""
        return np.linalg.inv(self.T_velo_imu)


def load_calibration(calib_dir, camera: int) -> KittiCalibration:
    """Read the three KITTI raw calibration files of ``calib_dir`` for camera ``camera`` (0-3)."""
    calib_dir = Path(calib_dir)
    cam_path = calib_dir / 'calib_cam_to_cam.txt'
    velo_path = calib_dir / 'calib_velo_to_cam.txt'
    imu_path = calib_dir / 'calib_imu_to_velo.txt'
    cam = parse_calib_file(cam_path)
    velo = parse_calib_file(velo_path)
    imu = parse_calib_file(imu_path)
    P = _calib_entry(cam, f'P_rect_0{camera}', 12, cam_path).reshape(3, 4)
    R_rect = np.eye(4)
    R_rect[:3, :3] = _calib_entry(cam, 'R_rect_00', 9, cam_path).reshape(3, 3)
    K = P[:, :3].copy()
    if abs(np.linalg.det(K)) < 1e-9:
        raise CliError(f'{cam_path}: P_rect_0{camera} has a singular 3x3 part')
    # P_rect_0X = K [I | t]: t is the rectified camera X's offset from rectified camera 0.
    T_camx_rect0 = rigid_from_rt(np.eye(3), np.linalg.solve(K, P[:, 3]))
    T_cam0_velo = rigid_from_rt(_calib_entry(velo, 'R', 9, velo_path),
                                _calib_entry(velo, 'T', 3, velo_path))
    T_velo_imu = rigid_from_rt(_calib_entry(imu, 'R', 9, imu_path),
                               _calib_entry(imu, 'T', 3, imu_path))
    return KittiCalibration(K=K, T_cam_velo=T_camx_rect0 @ R_rect @ T_cam0_velo,
                            T_velo_imu=T_velo_imu)


# ----------------------------------------------------------------------------- OXTS poses

def oxts_to_poses(oxts: np.ndarray) -> np.ndarray:
    """OXTS packets [N, >=6] (lat, lon deg; alt m; roll, pitch, yaw rad) -> T_world_imu [N, 4, 4].

    The KITTI devkit convention: Mercator projection with the scale of the first latitude,
    rotation Rz(yaw) Ry(pitch) Rx(roll), and poses expressed relative to the first one.
    """
    from scipy.spatial.transform import Rotation
    oxts = np.asarray(oxts, dtype=np.float64)
    lat, lon, alt = oxts[:, 0], oxts[:, 1], oxts[:, 2]
    scale = np.cos(np.deg2rad(lat[0]))
    mx = scale * np.deg2rad(lon) * EARTH_RADIUS_M
    my = scale * EARTH_RADIUS_M * np.log(np.tan(np.deg2rad(90.0 + lat) / 2.0))
    poses = np.tile(np.eye(4), (len(oxts), 1, 1))
    poses[:, :3, :3] = Rotation.from_euler('ZYX', oxts[:, [5, 4, 3]]).as_matrix()
    poses[:, :3, 3] = np.stack([mx, my, alt], axis=1)
    return np.linalg.inv(poses[0]) @ poses


def poses_to_oxts(T_world_imu: np.ndarray, lat0: float = 49.0, lon0: float = 8.4,
                  alt0: float = 110.0) -> np.ndarray:
    """Inverse of :func:`oxts_to_poses` (up to its first-pose normalisation): [N,4,4] -> [N,6].

    Used to synthesise OXTS files for tests; translations are metres in the Mercator plane
    around ``(lat0, lon0)``.
    """
    from scipy.spatial.transform import Rotation
    T = np.asarray(T_world_imu, dtype=np.float64)
    scale = np.cos(np.deg2rad(lat0))
    mx0 = scale * np.deg2rad(lon0) * EARTH_RADIUS_M
    my0 = scale * EARTH_RADIUS_M * np.log(np.tan(np.deg2rad(90.0 + lat0) / 2.0))
    mx = mx0 + T[:, 0, 3] - T[0, 0, 3]
    my = my0 + T[:, 1, 3] - T[0, 1, 3]
    lat = np.rad2deg(2.0 * np.arctan(np.exp(my / (scale * EARTH_RADIUS_M)))) - 90.0
    lon = np.rad2deg(mx / (scale * EARTH_RADIUS_M))
    alt = alt0 + T[:, 2, 3] - T[0, 2, 3]
    yaw_pitch_roll = Rotation.from_matrix(T[:, :3, :3]).as_euler('ZYX')
    return np.column_stack([lat, lon, alt, yaw_pitch_roll[:, 2], yaw_pitch_roll[:, 1],
                            yaw_pitch_roll[:, 0]])


# ----------------------------------------------------------------------------- drive layout

@dataclass
class KittiDrive:
    """Files of one KITTI raw drive for one camera (paths sorted by frame index)."""

    drive_dir: Path
    camera: int
    image_paths: List[Path]
    image_stamps: List[int]
    calibration: KittiCalibration
    oxts_paths: List[Path] = field(default_factory=list)
    oxts_stamps: List[int] = field(default_factory=list)
    velodyne_paths: List[Path] = field(default_factory=list)
    velodyne_stamps: List[int] = field(default_factory=list)


def _sensor_files(folder: Path, pattern: str, name: str):
    files = sorted((folder / 'data').glob(pattern))
    stamps = parse_timestamps(folder / 'timestamps.txt')
    if len(files) != len(stamps):
        raise CliError(f'{folder}: {len(files)} {name} files but {len(stamps)} lines in '
                       f'timestamps.txt')
    return files, stamps


def open_drive(drive_dir, camera: int = 2, velodyne: bool = True, oxts: bool = True) -> KittiDrive:
    """Locate the images, timestamps, calibration and (optional) OXTS / velodyne data of a drive.

    Raises:
        CliError: a required folder or file is missing, or timestamps do not match the files.
    """
    drive_dir = Path(drive_dir)
    if not drive_dir.is_dir():
        raise CliError(f'drive folder not found: {drive_dir}')
    image_dir = drive_dir / f'image_0{camera}'
    if not (image_dir / 'data').is_dir():
        raise CliError(f'camera folder not found: {image_dir / "data"}')
    images, stamps = _sensor_files(image_dir, '*.png', 'image')
    if not images:
        raise CliError(f'no PNG images in {image_dir / "data"}')
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        raise CliError(f'{image_dir / "timestamps.txt"}: timestamps are not increasing')
    drive = KittiDrive(drive_dir, camera, images, stamps,
                       load_calibration(drive_dir.resolve().parent, camera))
    if oxts and (drive_dir / 'oxts' / 'data').is_dir():
        drive.oxts_paths, drive.oxts_stamps = _sensor_files(drive_dir / 'oxts', '*.txt', 'OXTS')
    if velodyne and (drive_dir / 'velodyne_points' / 'data').is_dir():
        drive.velodyne_paths, drive.velodyne_stamps = _sensor_files(
            drive_dir / 'velodyne_points', '*.bin', 'velodyne')
    return drive


def read_oxts(paths) -> np.ndarray:
    """Read OXTS packets (one text line of 30 numbers per file) -> [N, 30] float64."""
    rows = []
    for path in paths:
        values = path.read_text().split()
        if len(values) < 6:
            raise CliError(f'{path}: expected 30 OXTS values, found {len(values)}')
        rows.append([float(v) for v in values[:30]] + [0.0] * (30 - min(30, len(values))))
    return np.asarray(rows, dtype=np.float64)


def read_velodyne(path) -> np.ndarray:
    """Read a KITTI velodyne scan (.bin float32 x, y, z, reflectance) -> [N, 4] float32."""
    data = np.fromfile(path, dtype=np.float32)
    if data.size % 4:
        raise CliError(f'{path}: size is not a multiple of 4 float32 values')
    return data.reshape(-1, 4)


# ----------------------------------------------------------------------------- messages

class MessageFactory:
    """Builds rosbags typestore messages (no ROS install) for the topics of a KITTI bag."""

    def __init__(self, typestore):
        """Keep the typestore (e.g. ``get_typestore(Stores.ROS2_JAZZY)``)."""
        self.ts = typestore
        self.types = typestore.types

    def header(self, stamp_ns: int, frame_id: str):
        """std_msgs/Header with the stamp split into sec / nanosec."""
        Time = self.types['builtin_interfaces/msg/Time']
        Header = self.types['std_msgs/msg/Header']
        return Header(stamp=Time(sec=int(stamp_ns // 1_000_000_000),
                                 nanosec=int(stamp_ns % 1_000_000_000)), frame_id=frame_id)

    def image(self, stamp_ns, frame_id, image: np.ndarray):
        """sensor_msgs/Image from [H, W, 3] uint8 RGB (rgb8) or [H, W] uint8 (mono8)."""
        image = np.ascontiguousarray(image)
        channels = 1 if image.ndim == 2 else image.shape[2]
        return self.types['sensor_msgs/msg/Image'](
            header=self.header(stamp_ns, frame_id), height=image.shape[0], width=image.shape[1],
            encoding='mono8' if channels == 1 else 'rgb8', is_bigendian=0,
            step=image.shape[1] * channels, data=image.reshape(-1))

    def compressed_image(self, stamp_ns, frame_id, data: bytes, fmt: str):
        """sensor_msgs/CompressedImage holding encoded bytes (``fmt`` 'png' or 'jpeg')."""
        return self.types['sensor_msgs/msg/CompressedImage'](
            header=self.header(stamp_ns, frame_id), format=fmt,
            data=np.frombuffer(data, dtype=np.uint8))

    def camera_info(self, stamp_ns, frame_id, K: np.ndarray, width: int, height: int):
        """Rectified sensor_msgs/CameraInfo: K, P = [K | 0], D = 0 (plumb_bob), R = I."""
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = self.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types['sensor_msgs/msg/CameraInfo'](
            header=self.header(stamp_ns, frame_id), height=height, width=width,
            distortion_model='plumb_bob', d=np.zeros(5), k=K.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def transform(self, stamp_ns, parent, child, T: np.ndarray):
        """geometry_msgs/TransformStamped for ``T_parent_child`` [4, 4]."""
        from scipy.spatial.transform import Rotation
        q = Rotation.from_matrix(T[:3, :3]).as_quat()  # x, y, z, w
        ty = self.types
        return ty['geometry_msgs/msg/TransformStamped'](
            header=self.header(stamp_ns, parent), child_frame_id=child,
            transform=ty['geometry_msgs/msg/Transform'](
                translation=ty['geometry_msgs/msg/Vector3'](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                rotation=ty['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3])))

    def tf_message(self, transforms):
        """tf2_msgs/TFMessage from a list of TransformStamped."""
        return self.types['tf2_msgs/msg/TFMessage'](transforms=list(transforms))

    def odometry(self, stamp_ns, parent, child, T: np.ndarray, linear=(0.0, 0.0, 0.0),
                 angular=(0.0, 0.0, 0.0), position_std: Optional[float] = None):
        """nav_msgs/Odometry of ``T_parent_child`` with a body-frame twist (m/s, rad/s)."""
        from scipy.spatial.transform import Rotation
        ty = self.types
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        pose_cov = np.zeros(36)
        if position_std is not None and position_std > 0:
            pose_cov[[0, 7, 14]] = position_std ** 2
        pose = ty['geometry_msgs/msg/PoseWithCovariance'](
            pose=ty['geometry_msgs/msg/Pose'](
                position=ty['geometry_msgs/msg/Point'](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                orientation=ty['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3])),
            covariance=pose_cov)
        vec = ty['geometry_msgs/msg/Vector3']
        twist = ty['geometry_msgs/msg/TwistWithCovariance'](
            twist=ty['geometry_msgs/msg/Twist'](linear=vec(*map(float, linear)),
                                                angular=vec(*map(float, angular))),
            covariance=np.zeros(36))
        return ty['nav_msgs/msg/Odometry'](header=self.header(stamp_ns, parent),
                                           child_frame_id=child, pose=pose, twist=twist)

    def point_cloud(self, stamp_ns, frame_id, points: np.ndarray):
        """sensor_msgs/PointCloud2 from [N, 4] float32 (x, y, z metres, intensity)."""
        ty = self.types
        points = np.ascontiguousarray(points, dtype=np.float32)
        fields = [ty['sensor_msgs/msg/PointField'](name=name, offset=4 * i, datatype=7, count=1)
                  for i, name in enumerate(('x', 'y', 'z', 'intensity'))]  # 7 = FLOAT32
        return ty['sensor_msgs/msg/PointCloud2'](
            header=self.header(stamp_ns, frame_id), height=1, width=len(points), fields=fields,
            is_bigendian=False, point_step=16, row_step=16 * len(points),
            data=points.view(np.uint8).reshape(-1), is_dense=True)


# ----------------------------------------------------------------------------- writing

def _qos(transient_local: bool = False):
    """Return the rosbags Qos profile offered by the (virtual) recorder: reliable, keep last."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    zero = QosTime(sec=0, nsec=0)
    return Qos(history=QosHistory.KEEP_LAST, depth=1 if transient_local else 10,
               reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL if transient_local
               else QosDurability.VOLATILE,
               deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)


def _read_image(path: Path):
    import cv2
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CliError(f'cannot read image {path}')
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3
                             else cv2.COLOR_BGRA2RGB)
    if image.dtype != np.uint8:
        raise CliError(f'{path}: expected an 8-bit image, got {image.dtype}')
    return image


def _events(drive: KittiDrive):
    """(log time ns, order, kind, index) of every message; sorted so camera_info precedes image."""
    events = [(drive.image_stamps[0], 0, 'tf_static', 0)]
    for i, stamp in enumerate(drive.image_stamps):
        events += [(stamp, 1, 'info', i), (stamp, 2, 'image', i)]
    events += [(s, 3, 'odom', i) for i, s in enumerate(drive.oxts_stamps)]
    events += [(s, 4, 'velodyne', i) for i, s in enumerate(drive.velodyne_stamps)]
    return sorted(events)


def write_bag(drive: KittiDrive, out_bag, storage: str = 'mcap', compressed: bool = False,
              jpeg_quality: Optional[int] = None, progress=None) -> Dict[str, int]:
    """Write ``drive`` as a rosbag2 bag folder ``out_bag``; returns message counts per topic.

    The bag is written into a temporary sibling folder and renamed when complete.
    """
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    out_bag = Path(out_bag)
    typestore = get_typestore(Stores.ROS2_JAZZY)
    make = MessageFactory(typestore)
    cal = drive.calibration
    oxts = read_oxts(drive.oxts_paths) if drive.oxts_paths else None
    poses = oxts_to_poses(oxts) if oxts is not None else None
    first = _read_image(drive.image_paths[0])
    height, width = first.shape[:2]

    # Written as TMP/<name> so the storage file gets the bag's name, then renamed into place.
    tmp_parent = out_bag.with_name(f'.{out_bag.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp_parent, ignore_errors=True)
    tmp_parent.mkdir(parents=True)
    tmp = tmp_parent / out_bag.name
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    counts: Dict[str, int] = {}
    try:
        with Writer(tmp, version=BAG_VERSION, storage_plugin=plugin) as writer:
            def connect(topic, msgtype, transient_local=False):
                return writer.add_connection(topic, msgtype, typestore=typestore,
                                             offered_qos_profiles=[_qos(transient_local)])

            image_topic = COMPRESSED_TOPIC if compressed else IMAGE_TOPIC
            conns = {
                'tf_static': connect(TF_STATIC_TOPIC, 'tf2_msgs/msg/TFMessage', True),
                'info': connect(INFO_TOPIC, 'sensor_msgs/msg/CameraInfo'),
                'image': connect(image_topic, 'sensor_msgs/msg/CompressedImage' if compressed
                                 else 'sensor_msgs/msg/Image'),
            }
            if poses is not None:
                conns['odom'] = connect(ODOM_TOPIC, 'nav_msgs/msg/Odometry')
            if drive.velodyne_paths:
                conns['velodyne'] = connect(VELODYNE_TOPIC, 'sensor_msgs/msg/PointCloud2')

            for stamp, _, kind, i in _events(drive):
                if kind == 'tf_static':
                    msg = make.tf_message([
                        make.transform(stamp, BASE_FRAME, CAMERA_FRAME, cal.T_base_cam),
                        make.transform(stamp, BASE_FRAME, VELODYNE_FRAME, cal.T_base_velo)])
                elif kind == 'info':
                    msg = make.camera_info(stamp, CAMERA_FRAME, cal.K, width, height)
                elif kind == 'image':
                    path = drive.image_paths[i]
                    if compressed and jpeg_quality is None:
                        msg = make.compressed_image(stamp, CAMERA_FRAME, path.read_bytes(), 'png')
                    else:
                        image = _read_image(path)
                        if image.shape[:2] != (height, width):
                            raise CliError(f'{path}: size {image.shape[1]}x{image.shape[0]} '
                                           f'differs from the first image ({width}x{height})')
                        if compressed:
                            bgr = image if image.ndim == 2 else cv2.cvtColor(image,
                                                                             cv2.COLOR_RGB2BGR)
                            ok, data = cv2.imencode('.jpg', bgr,
                                                    [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                            msg = make.compressed_image(stamp, CAMERA_FRAME, data.tobytes(),
                                                        'jpeg')
                        else:
                            msg = make.image(stamp, CAMERA_FRAME, image)
                    if progress:
                        progress(i + 1, len(drive.image_paths))
                elif kind == 'odom':
                    row = oxts[i]
                    msg = make.odometry(stamp, WORLD_FRAME, BASE_FRAME, poses[i],
                                        linear=row[8:11], angular=row[20:23],
                                        position_std=row[23] if row[23] > 0 else None)
                else:
                    msg = make.point_cloud(stamp, VELODYNE_FRAME,
                                           read_velodyne(drive.velodyne_paths[i]))
                conn = conns[kind]
                writer.write(conn, stamp, typestore.serialize_cdr(msg, conn.msgtype))
                counts[conn.topic] = counts.get(conn.topic, 0) + 1
        if out_bag.exists():      # --overwrite: the old bag goes only once the new one is done
            os.replace(out_bag, tmp_parent / 'previous')
        os.replace(tmp, out_bag)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return counts


# ----------------------------------------------------------------------------- CLI

def configure_parser(parser):
    """Add the ``fmdepth kitti2bag`` arguments."""
    parser.add_argument('drive_dir', metavar='DRIVE_DIR',
                        help='KITTI raw drive, e.g. .../2011_09_26/2011_09_26_drive_0001_sync '
                             '(calibration files in its parent folder)')
    parser.add_argument('out_bag', metavar='OUT_BAG', help='output bag folder (must not exist)')
    parser.add_argument('--camera', type=int, choices=(0, 1, 2, 3), default=2,
                        help='KITTI camera: 2 = left colour (default), 3 = right colour, '
                             '0/1 = grey')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='rosbag2 storage plugin (default: mcap)')
    parser.add_argument('--compressed', action='store_true',
                        help=f'write sensor_msgs/CompressedImage on {COMPRESSED_TOPIC} '
                             "(the drive's PNG bytes, lossless) instead of raw Image")
    parser.add_argument('--jpeg-quality', type=int, default=None, metavar='Q',
                        help='with --compressed: re-encode as JPEG of quality Q (1-100)')
    parser.add_argument('--no-velodyne', action='store_true', help='skip the velodyne scans')
    parser.add_argument('--no-oxts', action='store_true', help='skip the OXTS ground truth')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT_BAG if it exists')


def run(args) -> int:
    """Convert the drive; prints one summary line per topic."""
    out_bag = Path(args.out_bag)
    if args.jpeg_quality is not None and not (1 <= args.jpeg_quality <= 100):
        raise CliError('--jpeg-quality must be in 1..100')
    if args.jpeg_quality is not None and not args.compressed:
        raise CliError('--jpeg-quality needs --compressed')
    if out_bag.exists():
        if not args.overwrite:
            raise CliError(f'{out_bag} exists (use --overwrite to replace it)')
    drive = open_drive(args.drive_dir, args.camera, velodyne=not args.no_velodyne,
                       oxts=not args.no_oxts)

    def progress(done, total):
        if done % 100 == 0 and done < total:
            print(f'  {done}/{total} frames', flush=True)

    counts = write_bag(drive, out_bag, storage=args.storage, compressed=args.compressed,
                       jpeg_quality=args.jpeg_quality, progress=progress)
    print(f'wrote {out_bag} ({args.storage}):')
    for topic, count in counts.items():
        print(f'  {topic}: {count} messages')
    return 0


# ----------------------------------------------------------------------------- synthetic drives

SYNTH_T_CAM0_VELO = rigid_from_rt([[0, -1, 0], [0, 0, -1], [1, 0, 0]], [0.0, -0.08, -0.27])
SYNTH_T_VELO_IMU = rigid_from_rt(np.eye(3), [-0.81, 0.32, -0.80])
SYNTH_BASELINE_M = 0.06          # rectified camera 2 sits 6 cm from camera 0, as in KITTI


def _format_stamp(stamp_ns: int) -> str:
    seconds, nanos = divmod(int(stamp_ns), 1_000_000_000)
    return time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(seconds)) + f'.{nanos:09d}'


def _write_calib(path: Path, entries):
    lines = ['calib_time: 01-Jan-2011 00:00:00']
    lines += [f'{key}: ' + ' '.join(f'{v:.12e}' for v in np.ravel(value))
              for key, value in entries]
    path.write_text('\n'.join(lines) + '\n')


def write_synthetic_drive(seq, root, date: str = '2011_09_26', drive: int = 1,
                          camera: int = 2, velodyne_stride: int = 2) -> Path:
    """Write a synthetic sequence as a KITTI raw drive (the inverse of what kitti2bag reads).

    ``seq`` has ``images`` [N,H,W,3] uint8 RGB, ``depths`` [N,H,W] metres, ``poses`` [N,4,4]
    T_world_cam, ``K`` [3,3] pixels and optionally ``stamps_ns`` [N]. Writes PNG frames,
    ``timestamps.txt``, the three calibration files (KITTI text format), OXTS packets synthesised
    from the poses and velodyne scans back-projected from the depth (every ``velodyne_stride``-th
    pixel with depth > 0). Returns the drive folder ``root/date/date_drive_XXXX_sync``.
    """
    import cv2
    images = np.asarray(seq.images)
    depths = np.asarray(seq.depths, dtype=np.float64)
    poses = np.asarray(seq.poses, dtype=np.float64)
    K = np.asarray(seq.K, dtype=np.float64)
    n = len(images)
    stamps = getattr(seq, 'stamps_ns', None)
    if stamps is None:
        stamps = 1317045600_000_000_000 + np.arange(n, dtype=np.int64) * 100_000_000
    date_dir = Path(root) / date
    drive_dir = date_dir / f'{date}_drive_{drive:04d}_sync'
    date_dir.mkdir(parents=True, exist_ok=True)

    P0 = np.zeros((3, 4))
    P0[:, :3] = K
    Pc = P0.copy()
    Pc[:, 3] = K @ np.array([SYNTH_BASELINE_M, 0.0, 0.0])
    entries = [('S_rect_00', [images.shape[2], images.shape[1]]), ('R_rect_00', np.eye(3)),
               ('P_rect_00', P0)]
    if camera != 0:
        entries += [(f'S_rect_0{camera}', [images.shape[2], images.shape[1]]),
                    (f'R_rect_0{camera}', np.eye(3)), (f'P_rect_0{camera}', Pc)]
    _write_calib(date_dir / 'calib_cam_to_cam.txt', entries)
    _write_calib(date_dir / 'calib_velo_to_cam.txt',
                 [('R', SYNTH_T_CAM0_VELO[:3, :3]), ('T', SYNTH_T_CAM0_VELO[:3, 3])])
    _write_calib(date_dir / 'calib_imu_to_velo.txt',
                 [('R', SYNTH_T_VELO_IMU[:3, :3]), ('T', SYNTH_T_VELO_IMU[:3, 3])])
    cal = load_calibration(date_dir, camera)

    def sensor_dir(name):
        folder = drive_dir / name
        (folder / 'data').mkdir(parents=True, exist_ok=True)
        (folder / 'timestamps.txt').write_text(
            ''.join(_format_stamp(s) + '\n' for s in stamps))
        return folder / 'data'

    image_dir = sensor_dir(f'image_0{camera}')
    for i, image in enumerate(images):
        bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(image_dir / f'{i:010d}.png'), bgr)

    # The synthetic world is an optical frame (y down); OXTS needs z up (ENU-like, x forward)
    # to avoid gimbal lock. Relative poses (what kitti2bag writes) do not depend on this choice.
    T_enu_world = rigid_from_rt([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], np.zeros(3))
    T_cam_imu = cal.T_cam_velo @ cal.T_velo_imu
    oxts = poses_to_oxts(T_enu_world @ poses @ T_cam_imu)
    oxts_dir = sensor_dir('oxts')
    for i, row in enumerate(oxts):
        packet = np.zeros(30)
        packet[:6] = row
        packet[23] = 0.05      # pos_accuracy (m)
        packet[24] = 4         # navstat
        (oxts_dir / f'{i:010d}.txt').write_text(' '.join(repr(float(v)) for v in packet) + '\n')

    velo_dir = sensor_dir('velodyne_points')
    T_velo_cam = np.linalg.inv(cal.T_cam_velo)
    Kinv = np.linalg.inv(K)
    for i, depth in enumerate(depths):
        v, u = np.mgrid[0:depth.shape[0]:velodyne_stride, 0:depth.shape[1]:velodyne_stride]
        z = depth[v, u]
        keep = np.isfinite(z) & (z > 0)
        pix = np.stack([u[keep], v[keep], np.ones(keep.sum())])  # centres at integers
        cam = (Kinv @ pix) * z[keep]
        velo = T_velo_cam[:3, :3] @ cam + T_velo_cam[:3, 3:4]
        scan = np.column_stack([velo.T, np.full(velo.shape[1], 0.5)]).astype(np.float32)
        scan.tofile(velo_dir / f'{i:010d}.bin')
    return drive_dir

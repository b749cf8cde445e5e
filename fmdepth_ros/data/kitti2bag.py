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
* ``/ground_truth/depth``: sensor_msgs/Image 32FC1, metres, NaN = no measurement, frame
  ``camera_optical``, stamped as its image: the drive's ``proj_depth/velodyne_raw/image_0X``
  maps (LiDAR projected into the camera; KITTI depth-benchmark layout) when it has them.
  ``fmdepth evaluate --bag`` scores against this topic when present, else against
  ``/velodyne_points``.

Every message is logged at its header stamp (the drive's ``timestamps.txt``); camera_info shares
the image's stamp. A drive without an image ``timestamps.txt`` gets 10 Hz stamps (frame index x
0.1 s from midnight UTC of the drive's date), and its velodyne scans without one the stamp of
the image of the same frame index; a drive without OXTS has no ``/ground_truth/odom``. Each of
these is reported once through the ``log`` callable of :func:`open_drive`. The bag is written to
a temporary folder and renamed into place when complete.
"""

import calendar
from dataclasses import dataclass, field
import logging
import os
from pathlib import Path
import shutil
import time
from typing import Dict, List, Optional

from fmdepth_ros.atomic_io import replace_atomic
from fmdepth_ros.data.kitti_calib import KittiCalibration, load_calibration, read_velodyne
from fmdepth_ros.errors import DataError
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
GT_DEPTH_TOPIC = '/ground_truth/depth'
BAG_VERSION = 8                  # rosbag2 metadata version 8 (Jazzy and newer read it)
DEFAULT_PERIOD_NS = 100_000_000  # KITTI raw is recorded at 10 Hz
DEPTH_PNG_SCALE = 256.0          # proj_depth PNGs: uint16 metres * 256, 0 = no point
LOGGER = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- KITTI text files

def parse_timestamps(path) -> List[int]:
    """Read a KITTI ``timestamps.txt`` (``2011-09-26 13:02:25.964389445``) as UTC nanoseconds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'timestamps file not found: {path}')
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
            raise DataError(f'{path}:{number}: cannot parse timestamp {line!r}') from None
        stamps.append(calendar.timegm(tm) * 1_000_000_000 + nanos)
    return stamps


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
    depth_paths: List[Path] = field(default_factory=list)
    depth_stamps: List[int] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def _frame_index(path: Path, position: int) -> int:
    """KITTI frame number from a ``0000000042.png`` name (else the position in the listing)."""
    return int(path.stem) if path.stem.isdigit() else position


def default_stamps(drive_dir: Path, paths) -> List[int]:
    """10 Hz stamps (ns) by frame index, from midnight UTC of the drive's date folder name."""
    try:
        start = calendar.timegm(time.strptime(drive_dir.name[:10], '%Y_%m_%d'))
    except ValueError:
        start = 0
    return [start * 1_000_000_000 + _frame_index(p, i) * DEFAULT_PERIOD_NS
            for i, p in enumerate(paths)]


def _sensor_files(folder: Path, pattern: str, name: str):
    files = sorted((folder / 'data').glob(pattern))
    stamps = parse_timestamps(folder / 'timestamps.txt')
    if len(files) != len(stamps):
        raise DataError(f'{folder}: {len(files)} {name} files but {len(stamps)} lines in '
                        f'timestamps.txt')
    return files, stamps


def open_drive(drive_dir, camera: int = 2, velodyne: bool = True, oxts: bool = True,
               depth: bool = True, log=LOGGER.warning) -> KittiDrive:
    """Locate the images, timestamps, calibration and optional OXTS / velodyne / depth of a drive.

    A missing image ``timestamps.txt`` (10 Hz stamps), missing OXTS (no odometry ground truth)
    and velodyne scans without ``timestamps.txt`` (stamps of the images of the same frame
    index) are reported once each through ``log(message)`` and kept in ``drive.warnings``.

    Raises:
        DataError: a required folder or file is missing, or timestamps do not match the files.
    """
    drive_dir = Path(drive_dir)
    warnings = []

    def warn(message):
        warnings.append(message)
        log(message)

    if not drive_dir.is_dir():
        raise DataError(f'drive folder not found: {drive_dir}')
    image_dir = drive_dir / f'image_0{camera}'
    if not (image_dir / 'data').is_dir():
        raise DataError(f'camera folder not found: {image_dir / "data"}')
    if (image_dir / 'timestamps.txt').is_file():
        images, stamps = _sensor_files(image_dir, '*.png', 'image')
    else:
        images = sorted((image_dir / 'data').glob('*.png'))
        stamps = default_stamps(drive_dir, images)
        if images:
            warn(f'{image_dir / "timestamps.txt"} not found: stamping the images at 10 Hz '
                 '(frame index x 0.1 s)')
    if not images:
        raise DataError(f'no PNG images in {image_dir / "data"}')
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        raise DataError(f'{image_dir / "timestamps.txt"}: timestamps are not increasing')
    drive = KittiDrive(drive_dir, camera, images, stamps,
                       load_calibration(drive_dir.resolve().parent, camera))
    drive.warnings = warnings
    if oxts and (drive_dir / 'oxts' / 'data').is_dir():
        drive.oxts_paths, drive.oxts_stamps = _sensor_files(drive_dir / 'oxts', '*.txt', 'OXTS')
    elif oxts:
        warn(f'{drive_dir / "oxts"} not found: the bag has no {ODOM_TOPIC} (no odometry '
             'ground truth)')
    stamp_of_frame = {_frame_index(p, i): s for i, (p, s) in enumerate(zip(images, stamps))}
    velo_dir = drive_dir / 'velodyne_points'
    if velodyne and (velo_dir / 'data').is_dir():
        if (velo_dir / 'timestamps.txt').is_file():
            drive.velodyne_paths, drive.velodyne_stamps = _sensor_files(
                velo_dir, '*.bin', 'velodyne')
        else:
            scans = sorted((velo_dir / 'data').glob('*.bin'))
            drive.velodyne_paths = [p for i, p in enumerate(scans)
                                    if _frame_index(p, i) in stamp_of_frame]
            drive.velodyne_stamps = [stamp_of_frame[_frame_index(p, i)]
                                     for i, p in enumerate(scans)
                                     if _frame_index(p, i) in stamp_of_frame]
            if scans:
                warn(f'{velo_dir / "timestamps.txt"} not found: {len(drive.velodyne_paths)} '
                     'scans take the stamps of the images with their frame index')
    depth_dir = drive_dir / 'proj_depth' / 'velodyne_raw' / f'image_0{camera}'
    if depth and depth_dir.is_dir():
        for path, stamp in zip(images, stamps):
            if (depth_dir / path.name).is_file():
                drive.depth_paths.append(depth_dir / path.name)
                drive.depth_stamps.append(stamp)
    return drive


def read_depth_png(path: Path) -> np.ndarray:
    """KITTI depth PNG (uint16, metres * 256, 0 = none) -> [H, W] float32 metres, NaN = none."""
    import cv2
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
        raise DataError(f'{path}: not a 16-bit single-channel depth PNG')
    depth = raw.astype(np.float32) / DEPTH_PNG_SCALE
    depth[raw == 0] = np.nan
    return depth


def read_oxts(paths) -> np.ndarray:
    """Read OXTS packets (one text line of 30 numbers per file) -> [N, 30] float64."""
    rows = []
    for path in paths:
        values = path.read_text().split()
        if len(values) < 6:
            raise DataError(f'{path}: expected 30 OXTS values, found {len(values)}')
        rows.append([float(v) for v in values[:30]] + [0.0] * (30 - min(30, len(values))))
    return np.asarray(rows, dtype=np.float64)


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

    def depth_image(self, stamp_ns, frame_id, depth: np.ndarray):
        """sensor_msgs/Image 32FC1 (little-endian) from [H, W] float32 metres (NaN = none)."""
        depth = np.ascontiguousarray(depth, dtype='<f4')
        return self.types['sensor_msgs/msg/Image'](
            header=self.header(stamp_ns, frame_id), height=depth.shape[0],
            width=depth.shape[1], encoding='32FC1', is_bigendian=0, step=depth.shape[1] * 4,
            data=depth.view(np.uint8).reshape(-1))

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

def offered_qos(transient_local: bool = False):
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
        raise DataError(f'cannot read image {path}')
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3
                             else cv2.COLOR_BGRA2RGB)
    if image.dtype != np.uint8:
        raise DataError(f'{path}: expected an 8-bit image, got {image.dtype}')
    return image


def _events(drive: KittiDrive):
    """(log time ns, order, kind, index) of every message; sorted so camera_info precedes image."""
    events = [(drive.image_stamps[0], 0, 'tf_static', 0)]
    for i, stamp in enumerate(drive.image_stamps):
        events += [(stamp, 1, 'info', i), (stamp, 2, 'image', i)]
    events += [(s, 3, 'depth', i) for i, s in enumerate(drive.depth_stamps)]
    events += [(s, 4, 'odom', i) for i, s in enumerate(drive.oxts_stamps)]
    events += [(s, 5, 'velodyne', i) for i, s in enumerate(drive.velodyne_stamps)]
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
                                             offered_qos_profiles=[offered_qos(transient_local)])

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
            if drive.depth_paths:
                conns['depth'] = connect(GT_DEPTH_TOPIC, 'sensor_msgs/msg/Image')

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
                            raise DataError(f'{path}: size {image.shape[1]}x{image.shape[0]} '
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
                elif kind == 'depth':
                    depth = read_depth_png(drive.depth_paths[i])
                    if depth.shape != (height, width):
                        raise DataError(f'{drive.depth_paths[i]}: size {depth.shape[1]}x'
                                        f'{depth.shape[0]} differs from the images '
                                        f'({width}x{height})')
                    msg = make.depth_image(stamp, CAMERA_FRAME, depth)
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
            replace_atomic(out_bag, tmp_parent / 'previous')
        replace_atomic(tmp, out_bag)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return counts

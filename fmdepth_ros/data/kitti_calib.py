"""KITTI raw calibration files and velodyne projection: the one implementation.

Used by the KITTI dataset (:mod:`fmdepth_ros.data.kitti`), ``fmdepth kitti2bag``
(:mod:`fmdepth_ros.data.kitti2bag`) and bag evaluation (:mod:`fmdepth_ros.bag_eval`).
All transforms are ``T_a_b`` (points in b -> a), metres; intrinsics in native pixels.
"""

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Dict, Optional

from fmdepth_ros.errors import DataError
import numpy as np

CAM_TO_CAM = 'calib_cam_to_cam.txt'
VELO_TO_CAM = 'calib_velo_to_cam.txt'
IMU_TO_VELO = 'calib_imu_to_velo.txt'


def read_calib_file(path) -> Dict[str, np.ndarray]:
    """Read a KITTI ``key: v1 v2 ...`` calibration file as name -> float64 array.

    Non-numeric entries (``calib_time``) are skipped. Raises ``DataError`` when the file is
    missing or has no numeric entry.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f'calibration file not found: {path}')
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
        raise DataError(f'no calibration values in {path}')
    return values


def calib_entry(calib, key, size, path) -> np.ndarray:
    """Return entry ``key`` of a parsed calibration file; it must hold ``size`` numbers."""
    if key not in calib or calib[key].size != size:
        raise DataError(f'{path}: missing or malformed entry {key!r} ({size} numbers expected)')
    return calib[key]


def rigid_from_rt(rotation, translation) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation (9 values) and a translation (3 values)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    T[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return T


@dataclass
class KittiCalibration:
    """Calibration of one camera of a KITTI raw drive.

    Attributes:
        K: [3, 3] rectified intrinsics in pixels (``P_rect_0X[:, :3]``).
        T_cam_velo: [4, 4] velodyne -> rectified camera optical frame.
        T_velo_imu: [4, 4] IMU (base_link) -> velodyne; None when read without the IMU file.
    """

    K: np.ndarray
    T_cam_velo: np.ndarray
    T_velo_imu: Optional[np.ndarray] = None

    @property
    def T_base_cam(self) -> np.ndarray:
        """[4, 4] camera optical -> base_link (the OXTS IMU frame)."""
        return np.linalg.inv(self.T_cam_velo @ self.T_velo_imu)

    @property
    def T_base_velo(self) -> np.ndarray:
        """[4, 4] velodyne -> base_link."""
        return np.linalg.inv(self.T_velo_imu)


def kitti_intrinsics(calib_dir, cam=2) -> np.ndarray:
    """K [3, 3] of rectified camera ``cam`` (``P_rect_0{cam}[:, :3]``) in native pixels."""
    path = Path(calib_dir) / CAM_TO_CAM
    return calib_entry(read_calib_file(path), f'P_rect_0{cam}', 12, path).reshape(3, 4)[:, :3]


def load_calibration(calib_dir, camera: int, imu: bool = True) -> KittiCalibration:
    """Read the KITTI raw calibration files of ``calib_dir`` for camera ``camera`` (0-3).

    ``imu=False`` skips ``calib_imu_to_velo.txt`` (the depth ground truth does not need it).
    """
    calib_dir = Path(calib_dir)
    cam_path, velo_path = calib_dir / CAM_TO_CAM, calib_dir / VELO_TO_CAM
    cam, velo = read_calib_file(cam_path), read_calib_file(velo_path)
    P = calib_entry(cam, f'P_rect_0{camera}', 12, cam_path).reshape(3, 4)
    R_rect = np.eye(4)
    R_rect[:3, :3] = calib_entry(cam, 'R_rect_00', 9, cam_path).reshape(3, 3)
    K = P[:, :3].copy()
    if abs(np.linalg.det(K)) < 1e-9:
        raise DataError(f'{cam_path}: P_rect_0{camera} has a singular 3x3 part')
    # P_rect_0X = K [I | t]: t is the rectified camera X's offset from rectified camera 0.
    T_camx_rect0 = rigid_from_rt(np.eye(3), np.linalg.solve(K, P[:, 3]))
    T_cam0_velo = rigid_from_rt(calib_entry(velo, 'R', 9, velo_path),
                                calib_entry(velo, 'T', 3, velo_path))
    T_velo_imu = None
    if imu:
        imu_path = calib_dir / IMU_TO_VELO
        values = read_calib_file(imu_path)
        T_velo_imu = rigid_from_rt(calib_entry(values, 'R', 9, imu_path),
                                   calib_entry(values, 'T', 3, imu_path))
    return KittiCalibration(K=K, T_cam_velo=T_camx_rect0 @ R_rect @ T_cam0_velo,
                            T_velo_imu=T_velo_imu)


def read_velodyne(path) -> np.ndarray:
    """Read a KITTI velodyne scan (.bin float32 x, y, z, reflectance) -> [N, 4] float32."""
    data = np.fromfile(path, dtype=np.float32)
    if data.size % 4:
        raise DataError(f'{path}: size is not a multiple of 4 float32 values')
    return data.reshape(-1, 4)


def project_points(points_cam, K, height, width, values=None, pixel_offset=0) -> np.ndarray:
    """Sparse depth map [H, W] float32 (0 = no point) from camera-frame points.

    Args:
        points_cam: [N, 3] points in the camera optical frame (metres).
        K: [3, 3] intrinsics in pixels of the H x W image.
        height, width: image size in pixels.
        values: [N] value stored per point (default: its z-depth in metres).
        pixel_offset: added to the rounded pixel coordinates; -1 is Monodepth2's
            ``round() - 1`` convention (MATLAB's 1-based pixels), which the KITTI
            ``proj_depth/velodyne_raw`` maps follow.

    Pixel centres are at integer coordinates; points with z <= 1e-6 are dropped; where several
    points fall into one pixel the smallest value (the nearest point) wins.
    """
    points_cam = np.asarray(points_cam, dtype=np.float64)
    z = points_cam[:, 2]
    values = z if values is None else np.asarray(values, dtype=np.float64)
    front = z > 1e-6
    uvw = points_cam[front] @ np.asarray(K, dtype=np.float64).T
    z, values = z[front], values[front]
    u = np.round(uvw[:, 0] / z).astype(np.int64) + int(pixel_offset)
    v = np.round(uvw[:, 1] / z).astype(np.int64) + int(pixel_offset)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height) & (values > 0)
    depth = np.full((int(height), int(width)), np.inf)
    np.minimum.at(depth, (v[inside], u[inside]), values[inside])
    depth[~np.isfinite(depth)] = 0.0
    return depth.astype(np.float32)


def velodyne_to_depth(points, calib_dir, image_shape, cam=2, velodyne_depth=True,
                      pixel_offset=0) -> np.ndarray:
    """Project a velodyne scan into rectified camera ``cam`` as a sparse depth map.

    Args:
        points: [N, 4] float32 (x forward, y left, z up, reflectance) or a .bin file path.
        calib_dir: directory with calib_cam_to_cam.txt and calib_velo_to_cam.txt.
        image_shape: (H, W) of the camera image.
        cam: 2 (left colour) or 3 (right colour).
        velodyne_depth: store the velodyne forward coordinate x as depth (what the standard
            Eigen / Monodepth2 ground truth stores); False stores the camera z-depth.
        pixel_offset: see :func:`project_points`; ``velodyne_depth=False, pixel_offset=-1``
            reproduces a drive's ``proj_depth/velodyne_raw`` maps (camera z-depth, Monodepth2
            pixels: within 1 mm on every shared pixel of the city drive's scans).

    Returns:
        [H, W] float32 depth in metres, 0 where no point projects; the nearest point wins.
    """
    if isinstance(points, (str, os.PathLike)):
        points = read_velodyne(points)
    points = np.asarray(points, dtype=np.float64)
    points = points[points[:, 0] >= 0]                            # in front of the scanner
    cal = load_calibration(calib_dir, cam, imu=False)
    points_cam = points[:, :3] @ cal.T_cam_velo[:3, :3].T + cal.T_cam_velo[:3, 3]
    return project_points(points_cam, cal.K, int(image_shape[0]), int(image_shape[1]),
                          values=points[:, 0] if velodyne_depth else None,
                          pixel_offset=pixel_offset)

"""Test data: a synthetic sequence written as a KITTI raw drive (what ``kitti2bag`` reads)."""

from pathlib import Path
import time

from fmdepth_ros.data.kitti2bag import poses_to_oxts
from fmdepth_ros.data.kitti_calib import load_calibration, rigid_from_rt
import numpy as np


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

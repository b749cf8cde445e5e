"""A KITTI raw drive as an evaluation folder (``fmdepth kitti2folder``).

Output (the layout :mod:`fmdepth_ros.data.folder` reads, so ``fmdepth evaluate --data OUT`` scores
against the drive's LiDAR)::

    OUT/images/<frame>.png     the drive's rectified image_0X frames (symlinks, or copies)
    OUT/depth/<frame>.png      uint16 depth, metres * 256, 0 = no measurement
    OUT/intrinsics.txt         ``P_rect_0X: 12 numbers`` of the camera (pixels of the frames)

Depth comes from the drive's ``proj_depth/velodyne_raw/image_0X/<frame>.png`` (linked or
copied as is). A frame without one, but with a ``velodyne_points/data/<frame>.bin`` scan, gets
the scan projected by :func:`fmdepth_ros.data.kitti_calib.velodyne_to_depth` the way those maps
are made (camera z-depth, Monodepth2's ``round() - 1`` pixels, nearest point per pixel). A frame
with neither has no depth file. The folder is built beside ``OUT`` and renamed into place when
complete.
"""

from dataclasses import dataclass
import os
from pathlib import Path
import shutil

from fmdepth_ros.atomic_io import build_directory_atomic, write_text_atomic
from fmdepth_ros.data.kitti_calib import (calib_entry, CAM_TO_CAM, read_calib_file,
                                          velodyne_to_depth)
from fmdepth_ros.errors import DataError
import numpy as np

DEPTH_PNG_SCALE = 256.0          # KITTI depth PNGs: metres * 256 in uint16, 0 = no point


@dataclass
class FolderSummary:
    """What :func:`drive_to_folder` wrote: frame counts by depth source."""

    out_dir: Path
    frames: int
    depth_from_proj: int
    depth_from_velodyne: int
    without_depth: int


def write_depth_png(path, depth) -> None:
    """Write ``depth`` [H, W] metres (0 or NaN = none) as a KITTI uint16 PNG (metres * 256)."""
    import cv2

    depth = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0)
    values = np.clip(np.round(depth * DEPTH_PNG_SCALE), 0, np.iinfo(np.uint16).max)
    ok, data = cv2.imencode('.png', values.astype(np.uint16))
    if not ok:
        raise DataError(f'cannot encode depth PNG {path}')
    with open(path, 'wb') as f:
        f.write(data.tobytes())


def _place(src: Path, dst: Path, copy: bool) -> None:
    if copy:
        shutil.copyfile(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def drive_to_folder(drive_dir, out_dir, camera: int = 2, copy: bool = False,
                    overwrite: bool = False) -> FolderSummary:
    """Write KITTI raw drive ``drive_dir`` as an evaluation folder ``out_dir`` (module docstring).

    Args:
        drive_dir: ``.../<date>/<date>_drive_XXXX_sync``; calibration files in its parent.
        out_dir: output folder (must not exist unless ``overwrite``).
        camera: KITTI camera 0-3 (2 = left colour).
        copy: copy the image and depth files instead of symlinking them.
        overwrite: replace an existing ``out_dir`` (only once the new one is complete).

    Raises:
        DataError: missing drive, camera folder, images or calibration; ``out_dir`` exists.
    """
    import cv2

    drive_dir, out_dir = Path(drive_dir), Path(out_dir)
    image_dir = drive_dir / f'image_0{camera}' / 'data'
    if not drive_dir.is_dir():
        raise DataError(f'drive folder not found: {drive_dir}')
    if not image_dir.is_dir():
        raise DataError(f'camera folder not found: {image_dir}')
    images = sorted(image_dir.glob('*.png'))
    if not images:
        raise DataError(f'no PNG images in {image_dir}')
    if out_dir.exists() and not overwrite:
        raise DataError(f'{out_dir} exists (use --overwrite to replace it)')
    calib_dir = drive_dir.resolve().parent
    cam_path = calib_dir / CAM_TO_CAM
    P = calib_entry(read_calib_file(cam_path), f'P_rect_0{camera}', 12, cam_path)
    proj_dir = drive_dir / 'proj_depth' / 'velodyne_raw' / f'image_0{camera}'
    velo_dir = drive_dir / 'velodyne_points' / 'data'

    counts = {'proj': 0, 'velodyne': 0, 'none': 0}

    def fill(tmp):
        (tmp / 'images').mkdir()
        (tmp / 'depth').mkdir()
        for image in images:
            _place(image, tmp / 'images' / image.name, copy)
            proj, scan = proj_dir / image.name, velo_dir / f'{image.stem}.bin'
            if proj.is_file():
                _place(proj, tmp / 'depth' / image.name, copy)
                counts['proj'] += 1
            elif scan.is_file():
                shape = cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape[:2]
                depth = velodyne_to_depth(scan, calib_dir, shape, camera,
                                          velodyne_depth=False, pixel_offset=-1)
                write_depth_png(tmp / 'depth' / image.name, depth)
                counts['velodyne'] += 1
            else:
                counts['none'] += 1
        write_text_atomic(tmp / 'intrinsics.txt', f'P_rect_0{camera}: '
                          + ' '.join(f'{v:.12e}' for v in P) + '\n')

    build_directory_atomic(out_dir, fill)
    return FolderSummary(out_dir, len(images), counts['proj'], counts['velodyne'],
                         counts['none'])

"""The downscaled real KITTI clip committed under ``data/`` (``fmdepth demo --real``).

:func:`make_real_clip` makes it from the project's KITTI samples (``../shared/data``)::

    python -m fmdepth_ros.data.real_clip ../shared/data data

Output (both folders are read by :mod:`fmdepth_ros.data.folder`)::

    OUT/kitti_odometry_00_320x97/     training clip: odometry 00 frames 0-199, grey cam0
        image_0/000000.png ...        8-bit grey, 320x97 (from 1241x376, area filter)
        calib.txt                     P0, P1 (bare 12-number lines) scaled to 320x97 pixels
        poses.txt, times.txt          copied unchanged (poses are metres, not pixels)
    OUT/kitti_city_78/                evaluation clip: the 78-frame city drive, colour image_02
        images/0000000000.png ...     RGB, 320x97 (from 1242x375, area filter)
        depth/0000000000.png ...      the drive's proj_depth/velodyne_raw LiDAR maps, copied
                                      unchanged: uint16 metres * 256 at 1242x375 (the GT size;
                                      evaluation resizes the prediction to it)
        intrinsics.txt                P_rect_02 scaled to 320x97 pixels

The width is fixed (:data:`CLIP_WIDTH`); the height keeps the source's aspect ratio, rounded.
Intrinsics and projection matrices are scaled by :func:`fmdepth_ros.geometry.scale_intrinsics`
(fx, cx *= sx; fy, cy *= sy), as the loaders do when they resize frames to the network size.
Each folder is built beside its target and renamed into place when complete.
"""

import argparse
import os
from pathlib import Path
import shutil
import sys

from fmdepth_ros.atomic_io import build_directory_atomic, replace_atomic, write_text_atomic
from fmdepth_ros.errors import DataError
from fmdepth_ros.geometry import scale_intrinsics
import numpy as np

CLIP_WIDTH = 320
ODOMETRY_SOURCE = 'kitti_odometry_00_frames_000-199'
CITY_SOURCE = os.path.join('kitti_raw_2011_09_26_city_78', '2011_09_26',
                           '2011_09_26_drive_city_sync')
ODOMETRY_CLIP = 'kitti_odometry_00_320x97'
CITY_CLIP = 'kitti_city_78'


def clip_size(width, height, clip_width=CLIP_WIDTH):
    """(width, height) of a frame ``width`` x ``height`` downscaled to ``clip_width`` wide."""
    return clip_width, int(round(height * clip_width / width))


def _numbers(values):
    return ' '.join(f'{v:.12e}' for v in np.ravel(values))


def _downscale(src, dst, flags):
    """Write image ``src`` downscaled to :data:`CLIP_WIDTH` (area filter) as PNG ``dst``.

    Returns the (sx, sy) scale factors.
    """
    import cv2

    image = cv2.imread(str(src), flags)
    if image is None:
        raise DataError(f'cannot read image {src}')
    h, w = image.shape[:2]
    cw, ch = clip_size(w, h)
    small = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(dst), small):
        raise DataError(f'cannot write {dst}')
    return cw / w, ch / h


def make_odometry_clip(source, out_dir):
    """Write odometry 00 (``source``: image_0/, calib.txt, poses.txt, times.txt) as ``out_dir``."""
    import cv2

    from fmdepth_ros.data.folder import list_images

    source = Path(source)
    image_dir = source / 'image_0'
    if not image_dir.is_dir() or not list_images(image_dir):
        raise DataError(f'no image_0/ frames in {source}')

    def fill(tmp):
        (tmp / 'image_0').mkdir()
        scales = {_downscale(image_dir / name, tmp / 'image_0' / name, cv2.IMREAD_GRAYSCALE)
                  for name in list_images(image_dir)}
        if len(scales) != 1:
            raise DataError(f'{image_dir}: frames of different sizes')
        sx, sy = scales.pop()
        lines = []
        for line in (source / 'calib.txt').read_text().splitlines():
            key, _, values = line.rpartition(':') if ':' in line else ('', '', line)
            numbers = values.split()
            if len(numbers) != 12:
                continue
            P = np.array(numbers, dtype=np.float64).reshape(3, 4)
            scaled = _numbers(scale_intrinsics(P, sx, sy))
            lines.append(f'{key}: {scaled}' if key else scaled)
        if not lines:
            raise DataError(f'{source / "calib.txt"}: no 3x4 projection matrix')
        write_text_atomic(tmp / 'calib.txt', '\n'.join(lines) + '\n')
        for name in ('poses.txt', 'times.txt'):
            shutil.copyfile(source / name, tmp / name)

    return build_directory_atomic(out_dir, fill)


def make_city_clip(drive_dir, out_dir):
    """Write the city drive (KITTI raw layout, calibration in its parent) as clip ``out_dir``.

    :func:`fmdepth_ros.data.kitti_folder.drive_to_folder` writes the full-size folder
    (images, LiDAR depth, intrinsics); the images are then downscaled and the intrinsics
    scaled to match, while the depth maps stay at the ground-truth resolution.
    """
    import cv2

    from fmdepth_ros.data.folder import find_intrinsics, list_images
    from fmdepth_ros.data.kitti_folder import drive_to_folder

    def fill(tmp):
        full = tmp / 'full'
        drive_to_folder(drive_dir, full, camera=2, copy=True)
        (tmp / 'images').mkdir()
        scales = {_downscale(full / 'images' / name, tmp / 'images' / name, cv2.IMREAD_COLOR)
                  for name in list_images(full / 'images')}
        if len(scales) != 1:
            raise DataError(f'{drive_dir}: frames of different sizes')
        sx, sy = scales.pop()
        P = np.array((full / 'intrinsics.txt').read_text().split(':', 1)[1].split(),
                     dtype=np.float64)
        if not np.allclose(P.reshape(3, 4)[:, :3], find_intrinsics(str(full))):
            raise DataError(f'{full}: unexpected intrinsics.txt layout')
        write_text_atomic(tmp / 'intrinsics.txt',
                          f'P_rect_02: {_numbers(scale_intrinsics(P.reshape(3, 4), sx, sy))}\n')
        replace_atomic(full / 'depth', tmp / 'depth')
        shutil.rmtree(full)

    return build_directory_atomic(out_dir, fill)


def make_real_clip(shared_data, out_dir):
    """Write both clips from ``shared_data`` (the KITTI samples folder) into ``out_dir``.

    Returns ``{clip name: folder}``. The licence notice (``out_dir/README.md``) is not written
    here: it is committed beside the clip.
    """
    shared_data, out_dir = Path(shared_data), Path(out_dir)
    for needed in (ODOMETRY_SOURCE, CITY_SOURCE):
        if not (shared_data / needed).is_dir():
            raise DataError(f'{shared_data / needed} not found (the KITTI samples folder, '
                            'e.g. ../shared/data)')
    return {ODOMETRY_CLIP: make_odometry_clip(shared_data / ODOMETRY_SOURCE,
                                              out_dir / ODOMETRY_CLIP),
            CITY_CLIP: make_city_clip(shared_data / CITY_SOURCE, out_dir / CITY_CLIP)}


def main(argv=None):
    """``python -m fmdepth_ros.data.real_clip SHARED_DATA OUT``: regenerate the clip."""
    parser = argparse.ArgumentParser(prog='python -m fmdepth_ros.data.real_clip',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('shared_data', help='the KITTI samples folder (e.g. ../shared/data)')
    parser.add_argument('out_dir', help='output folder (e.g. data)')
    args = parser.parse_args(argv)
    try:
        for name, path in make_real_clip(args.shared_data, args.out_dir).items():
            print(f'wrote {path}')
    except DataError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""KITTI raw data: drives, calibration, split files and velodyne ground truth.

Layout (the standard KITTI raw download)::

    ROOT/2011_09_26/calib_cam_to_cam.txt, calib_velo_to_cam.txt
    ROOT/2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000000.png   (or .jpg)
    ROOT/2011_09_26/2011_09_26_drive_0001_sync/velodyne_points/data/0000000000.bin

Split files (Monodepth2 / FeatDepth format), one sample per line::

    2011_09_26/2011_09_26_drive_0001_sync 0000000010 l        (l = image_02, r = image_03)

The original Eigen test list format (``.../image_02/data/0000000069.png ...``) is read too.
Ground truth comes from a Monodepth2-style ``gt_depths.npz`` (``data``: one depth map per split
line, in order; ``fmdepth export-gt`` writes it with :func:`export_gt_depths`) or is projected
from the velodyne scan the same way (:func:`eigen_gt_depth`).
"""

import os
import re

from fmdepth_ros.atomic_io import open_atomic
from fmdepth_ros.data.kitti_calib import (CAM_TO_CAM, kitti_intrinsics, read_calib_file,
                                          velodyne_to_depth)
from fmdepth_ros.data.triplets import FrameSource
import numpy as np

DATE_RE = re.compile(r'^\d{4}_\d{2}_\d{2}$')
SIDE_TO_CAM = {'l': 2, 'r': 3, '2': 2, '3': 3}
STEREO_PARTNER = {2: 3, 3: 2}   # the colour stereo pair: left image_02, right image_03


def parse_split_line(line):
    """(drive folder, frame number, cam) of a split line; None for a blank line."""
    parts = line.split()
    if not parts:
        return None
    if parts[0].endswith(('.png', '.jpg')):   # original Eigen list: a relative image path
        rel = parts[0].replace('\\', '/')
        m = re.match(r'^(.*)/image_0(\d)/data/(\d+)\.(png|jpg)$', rel)
        if not m:
            raise ValueError(f'cannot parse split line {line.strip()!r}')
        return m.group(1), int(m.group(3)), int(m.group(2))
    if len(parts) < 2:
        raise ValueError(f'split line {line.strip()!r}: need "folder frame [side]"')
    side = parts[2] if len(parts) > 2 else 'l'
    if side not in SIDE_TO_CAM:
        raise ValueError(f'split line {line.strip()!r}: side must be l or r')
    return parts[0], int(parts[1]), SIDE_TO_CAM[side]


def read_split_file(path):
    """List of (drive folder, frame number, cam) of a split file."""
    with open(path, 'r', encoding='utf-8') as f:
        return [s for s in (parse_split_line(line) for line in f) if s is not None]


def is_kitti_raw_root(path):
    """Return True when ``path`` holds KITTI raw date folders with calibration."""
    if not os.path.isdir(path):
        return False
    return any(DATE_RE.match(d) and os.path.isfile(
        os.path.join(path, d, 'calib_cam_to_cam.txt')) for d in os.listdir(path))


def resolve_kitti_path(path):
    """(root, drives) for a KITTI raw root, a date folder or a drive folder; None otherwise.

    ``drives`` is None for a root (every drive) or the list of 'date/drive' folders inside.
    """
    path = os.path.abspath(str(path))
    if is_kitti_raw_root(path):
        return path, None
    parent = os.path.dirname(path)
    name = os.path.basename(path)
    if DATE_RE.match(name) and os.path.isfile(os.path.join(path, 'calib_cam_to_cam.txt')):
        return parent, [d for d in list_drives(parent) if d.startswith(name + '/')]
    if os.path.isfile(os.path.join(parent, 'calib_cam_to_cam.txt')) and os.path.isdir(
            os.path.join(path, 'image_02', 'data')):
        return os.path.dirname(parent), [f'{os.path.basename(parent)}/{name}']
    return None


def list_drives(root):
    """Drive folders 'date/date_drive_XXXX_sync' under ``root`` that have image_02."""
    drives = []
    for date in sorted(os.listdir(root)):
        date_dir = os.path.join(root, date)
        if not (DATE_RE.match(date) and os.path.isdir(date_dir)):
            continue
        for drive in sorted(os.listdir(date_dir)):
            if os.path.isdir(os.path.join(date_dir, drive, 'image_02', 'data')):
                drives.append(f'{date}/{drive}')
    return drives


class KittiDriveSource(FrameSource):
    """One camera of one KITTI raw drive; frame ``i`` is file ``{i:010d}.png``.

    Cameras 2 (left, ``stereo_side`` 'l') and 3 (right, 'r') are a rectified stereo pair:
    :meth:`stereo_source` is the other one (frame 's' of MS training).
    """

    def __init__(self, root, folder, cam=2, velodyne_depth=True):
        """Index the drive's image files and read its calibration."""
        self.root = str(root)
        self.folder = folder.strip('/')
        self.cam = int(cam)
        self.name = f'{self.folder} image_0{self.cam}'
        self.velodyne_depth = velodyne_depth
        self.calib_dir = os.path.join(self.root, self.folder.split('/')[0])
        self.image_dir = os.path.join(self.root, self.folder, f'image_0{self.cam}', 'data')
        if not os.path.isdir(self.image_dir):
            raise ValueError(f'{self.image_dir}: KITTI image folder missing')
        files = [f for f in os.listdir(self.image_dir) if f.endswith(('.png', '.jpg'))]
        if not files:
            raise ValueError(f'{self.image_dir}: no frames')
        self.ext = os.path.splitext(sorted(files)[0])[1]
        self.num_frames = max(int(os.path.splitext(f)[0]) for f in files) + 1
        self.K = kitti_intrinsics(self.calib_dir, self.cam)
        self.gt = {}   # frame number -> depth map from gt_depths.npz
        self.stereo_side = 'l' if self.cam == 2 else 'r'
        self._stereo = None

    def __len__(self):
        """Return the number of frames (largest frame number + 1)."""
        return self.num_frames

    def image_path(self, i):
        """Return the file of frame ``i``."""
        return os.path.join(self.image_dir, f'{i:010d}{self.ext}')

    def stereo_source(self):
        """Return the drive's other colour camera (image_03 for image_02 and back), or None."""
        if self.cam not in STEREO_PARTNER:
            return None
        if self._stereo is None:
            other = STEREO_PARTNER[self.cam]
            if not os.path.isdir(os.path.join(self.root, self.folder, f'image_0{other}', 'data')):
                return None
            self._stereo = KittiDriveSource(self.root, self.folder, other, self.velodyne_depth)
        return self._stereo

    def stereo_baseline_m(self):
        """Return the distance (m) of rectified cameras 2 and 3 from ``P_rect_02/03``, or None."""
        calib = read_calib_file(os.path.join(self.calib_dir, CAM_TO_CAM))
        centres = []
        for cam in (2, 3):
            P = calib.get(f'P_rect_0{cam}')
            if P is None or P.size != 12:
                return None
            P = P.reshape(3, 4)
            centres.append(np.linalg.solve(P[:, :3], P[:, 3])[0])   # P = K [I | t]
        return float(abs(centres[0] - centres[1]))

    def velodyne_path(self, i):
        """Return the velodyne scan of frame ``i``."""
        return os.path.join(self.root, self.folder, 'velodyne_points', 'data', f'{i:010d}.bin')

    def has_depth(self, i):
        """Return True when a prepared GT or a velodyne scan exists for frame ``i``."""
        return i in self.gt or os.path.isfile(self.velodyne_path(i))

    def load_depth(self, i):
        """Ground-truth depth [H, W] of frame ``i`` (prepared GT first, else velodyne)."""
        if i in self.gt:
            return np.asarray(self.gt[i], dtype=np.float32)
        if not os.path.isfile(self.velodyne_path(i)):
            return None
        if self.velodyne_depth:
            return eigen_gt_depth(self.root, self.folder, i, self.cam)
        return velodyne_to_depth(self.velodyne_path(i), self.calib_dir, self.image_shape(i),
                                 self.cam, velodyne_depth=False, pixel_offset=-1)

    def image_shape(self, i):
        """(H, W) of frame ``i``'s image file."""
        from PIL import Image

        with Image.open(self.image_path(i)) as img:
            return img.height, img.width


def _rectified_shape(calib_dir, cam):
    """(H, W) of rectified camera ``cam`` from ``S_rect_0{cam}``, or None when absent."""
    calib = read_calib_file(os.path.join(calib_dir, CAM_TO_CAM))
    size = calib.get(f'S_rect_0{cam}')
    if size is None or size.size != 2:
        return None
    return int(size[1]), int(size[0])


def eigen_gt_depth(root, folder, frame, cam=2):
    """Eigen-split ground truth of one frame, as Monodepth2's ``export_gt_depth.py`` makes it.

    The velodyne scan ``ROOT/folder/velodyne_points/data/{frame:010d}.bin`` is projected into
    rectified camera ``cam`` (velo -> cam0 -> R_rect_00 -> P_rect_0{cam}); points behind the
    scanner are dropped, the depth stored is the velodyne forward coordinate x, pixels follow
    Monodepth2's ``round() - 1`` convention and the nearest point wins a pixel. The map has the
    calibration's ``S_rect_0{cam}`` size (Monodepth2), else the image's.

    Returns:
        [H, W] float32 metres, 0 where no point projects. Raises ``ValueError`` naming a
        missing scan.
    """
    calib_dir = os.path.join(str(root), folder.strip('/').split('/')[0])
    scan = os.path.join(str(root), folder.strip('/'), 'velodyne_points', 'data',
                        f'{int(frame):010d}.bin')
    if not os.path.isfile(scan):
        raise ValueError(f'{scan}: velodyne scan missing')
    shape = _rectified_shape(calib_dir, cam)
    if shape is None:
        shape = KittiDriveSource(root, folder, cam).image_shape(int(frame))
    return velodyne_to_depth(scan, calib_dir, shape, cam, velodyne_depth=True, pixel_offset=-1)


def export_gt_depths(root, split_file, out_path, progress=None) -> int:
    """Write the ground truth of every line of ``split_file`` to ``out_path`` (.npz, atomic).

    As Monodepth2's ``export_gt_depth.py``: ``np.savez_compressed(out, data=...)``, one
    float32 [H, W] map (metres, 0 = none) per split line in order, from
    :func:`eigen_gt_depth`. ``progress`` (optional) is called with each line's index.

    Returns:
        the number of maps written.
    """
    entries = read_split_file(split_file)
    if not entries:
        raise ValueError(f'{split_file}: no split lines')
    maps = []
    for k, (folder, frame, cam) in enumerate(entries):
        maps.append(eigen_gt_depth(root, folder, frame, cam))
        if progress is not None:
            progress(k)
    if len({m.shape for m in maps}) == 1:
        data = np.stack(maps)
    else:                                        # drives of different image sizes
        data = np.empty(len(maps), dtype=object)
        for k, depth in enumerate(maps):
            data[k] = depth
    with open_atomic(out_path, 'wb') as f:
        np.savez_compressed(f, data=data)
    return len(maps)


def load_gt_depths(path):
    """Load the per-line depth maps of a Monodepth2-style gt_depths.npz (key 'data')."""
    with np.load(path, allow_pickle=True, fix_imports=True, encoding='latin1') as data:
        if 'data' not in data:
            raise ValueError(f'{path}: no "data" array (Monodepth2 gt_depths.npz format)')
        return list(data['data'])


def kitti_samples(root, split_file=None, gt_path=None, velodyne_depth=True, drives=None):
    """Return ``(KittiDriveSource, frame)`` samples: a split file's lines, else every left frame.

    ``drives`` restricts the no-split-file case to these 'date/drive' folders. ``gt_path`` (a
    gt_depths.npz aligned with the split file) attaches prepared ground truth;
    if omitted, a ``gt_depths.npz`` beside the split file is used when present.
    """
    sources = {}

    def source(folder, cam):
        key = (folder, cam)
        if key not in sources:
            sources[key] = KittiDriveSource(root, folder, cam, velodyne_depth)
        return sources[key]

    if split_file is None:
        samples = []
        for folder in (list_drives(root) if drives is None else drives):
            src = source(folder, 2)
            samples += [(src, i) for i in range(len(src))]
        return samples
    entries = read_split_file(split_file)
    samples = [(source(folder, cam), frame) for folder, frame, cam in entries]
    if gt_path is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(split_file)), 'gt_depths.npz')
        gt_path = beside if os.path.isfile(beside) else None
    if gt_path is not None:
        gts = load_gt_depths(gt_path)
        if len(gts) != len(samples):
            raise ValueError(f'{gt_path}: {len(gts)} depth maps for {len(samples)} split lines')
        for (src, frame), gt in zip(samples, gts):
            src.gt[frame] = gt
    return samples

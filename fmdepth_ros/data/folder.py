"""A folder of frames as a training / evaluation source (also reads ``fmdepth synth`` output).

Layout (everything but the images is optional)::

    DIR/<images>          frames sorted by file name: DIR/images/, image_2/, image_02/data/,
                          image_l/, image_0/, rgb/ or DIR itself (.png .jpg .jpeg .bmp)
    DIR/intrinsics.txt    K as 3x3, 9 numbers, or "fx fy cx cy" (pixels of the frames)
    DIR/calib.txt         KITTI odometry calib ("P0: ..." lines or bare 12-number lines)
    DIR/*.yaml            ROS camera_info / camera_calibration yaml (camera_matrix: data: [...])
                          or a mapping with fx, fy, cx, cy
    DIR/depth/<stem>.npy  ground-truth depth in metres (float), or <stem>.png (uint16 / 256)
    DIR/poses.txt         KITTI odometry poses (3x4 T_world_cam per frame)
    DIR/<right images>    the right camera of a rectified stereo pair (frame 's' of MS
                          training), beside the left one: images_right/ for images/, image_3/
                          for image_2/, image_03/data/ for image_02/data/, image_r/ for image_l/,
                          image_1/ for image_0/, image_01/data/ for image_00/data/; frames pair
                          by sorted file name order, same K (``fmdepth synth --stereo`` writes
                          images_right/ and DIR/stereo.txt, "baseline_m <metres>", which is
                          checked against model.stereo_baseline_m)

A directory whose frames are in several sub-directories (e.g. several synthetic sequences)
gives one source per sub-directory.
"""

import logging
import os

from fmdepth_ros.data.triplets import FrameSource, load_rgb
from fmdepth_ros.errors import DataError
import numpy as np

LOGGER = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
IMAGE_DIRS = ('images', 'image_2', os.path.join('image_02', 'data'), 'image_l', 'image_0',
              os.path.join('image_00', 'data'), 'rgb', '.')
#: left image folder -> the right camera's folder of a stereo pair
STEREO_DIRS = {'images': 'images_right', 'image_2': 'image_3',
               os.path.join('image_02', 'data'): os.path.join('image_03', 'data'),
               'image_l': 'image_r', 'image_0': 'image_1',
               os.path.join('image_00', 'data'): os.path.join('image_01', 'data')}


def list_images(directory):
    """Sorted image file names (not paths) directly inside ``directory``."""
    return sorted(f for f in os.listdir(directory)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))


def find_image_dir(path):
    """Return the sub-directory of ``path`` holding its frames, or None."""
    for sub in IMAGE_DIRS:
        candidate = os.path.normpath(os.path.join(path, sub))
        if os.path.isdir(candidate) and list_images(candidate):
            return candidate
    return None


def parse_intrinsics_text(text, where):
    """K [3, 3] from text with 9 numbers (3x3), 4 numbers (fx fy cx cy) or KITTI P lines."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith('#')]
    if lines and (':' in lines[0] or len(lines[0].split()) == 12):
        # KITTI calib: "P0: 12 numbers" or bare 12-number lines; the first P is the camera.
        values = lines[0].split(':', 1)[-1].split()
        if len(values) == 12:
            return np.array(values, dtype=np.float64).reshape(3, 4)[:, :3]
    numbers = np.array(' '.join(lines).replace(',', ' ').split(), dtype=np.float64)
    if numbers.size == 9:
        return numbers.reshape(3, 3)
    if numbers.size == 4:
        fx, fy, cx, cy = numbers
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    raise ValueError(f'{where}: cannot read intrinsics (need 9 numbers for K, 4 for '
                     f'fx fy cx cy, or KITTI P lines), found {numbers.size} numbers')


def parse_intrinsics_yaml(path):
    """K [3, 3] from a ROS camera calibration yaml or a mapping with fx, fy, cx, cy."""
    import yaml

    with open(path, 'r', encoding='utf-8') as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a YAML mapping')
    for key in ('camera_matrix', 'K', 'k'):
        if key in data:
            value = data[key]
            values = value.get('data') if isinstance(value, dict) else value
            return np.array(values, dtype=np.float64).reshape(3, 3)
    if all(k in data for k in ('fx', 'fy', 'cx', 'cy')):
        return intrinsics_from_values([data[k] for k in ('fx', 'fy', 'cx', 'cy')])
    raise ValueError(f'{path}: no camera_matrix / K / fx,fy,cx,cy in the YAML')


def intrinsics_from_values(values):
    """K [3, 3] from (fx, fy, cx, cy) or a 3x3 / 9-number sequence (pixels)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 4:
        fx, fy, cx, cy = arr
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    if arr.size == 9:
        return arr.reshape(3, 3)
    raise ValueError(f'intrinsics: need fx, fy, cx, cy or 9 numbers, got {arr.size}')


def find_intrinsics(path):
    """K [3, 3] read from the calibration file of folder ``path``, or None when there is none."""
    for name in ('intrinsics.txt', 'calib.txt', 'K.txt'):
        p = os.path.join(path, name)
        if os.path.isfile(p):
            with open(p, 'r', encoding='utf-8') as f:
                return parse_intrinsics_text(f.read(), p)
    for name in sorted(os.listdir(path)):
        if name.endswith(('.yaml', '.yml')):
            return parse_intrinsics_yaml(os.path.join(path, name))
    return None


def load_depth_file(path):
    """Depth [h, w] float32 metres from .npy (metres) or .png (uint16, metres * 256; 0 invalid)."""
    if path.endswith('.npy'):
        return np.load(path).astype(np.float32)
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img, dtype=np.float32) / 256.0


class FolderSource(FrameSource):
    """Frames of one folder (layout in the module docstring)."""

    def __init__(self, path, intrinsics=None):
        """Index the folder; ``intrinsics`` (fx, fy, cx, cy or 3x3) overrides the files."""
        from fmdepth_ros.data.synth import default_intrinsics
        from fmdepth_ros.metrics import load_poses_kitti

        self.path = str(path)
        self.name = self.path
        self.image_dir = find_image_dir(self.path)
        if self.image_dir is None:
            raise ValueError(f'{self.path}: no images found (looked in '
                             f'{", ".join(IMAGE_DIRS)})')
        self.files = list_images(self.image_dir)
        if intrinsics is not None:
            self.K = intrinsics_from_values(intrinsics)
        else:
            self.K = find_intrinsics(self.path)
        if self.K is None:
            h, w = load_rgb(self.image_path(0)).shape[:2]
            self.K = default_intrinsics(w, h)
            LOGGER.warning('%s: no intrinsics.txt / calib.txt / camera yaml; assuming a '
                           'KITTI-like K (fx=%.1f, fy=%.1f)', self.path, self.K[0, 0],
                           self.K[1, 1])
        depth_dir = os.path.join(self.path, 'depth')
        self.depth_paths = [None] * len(self.files)
        if os.path.isdir(depth_dir):
            for k, f in enumerate(self.files):
                stem = os.path.splitext(f)[0]
                for ext in ('.npy', '.png'):
                    p = os.path.join(depth_dir, stem + ext)
                    if os.path.isfile(p):
                        self.depth_paths[k] = p
                        break
        poses_path = os.path.join(self.path, 'poses.txt')
        self.poses = load_poses_kitti(poses_path) if os.path.isfile(poses_path) else None
        if self.poses is not None and len(self.poses) != len(self.files):
            LOGGER.warning('%s: %d poses for %d images; ignoring poses.txt', self.path,
                           len(self.poses), len(self.files))
            self.poses = None

    def __len__(self):
        """Return the number of frames."""
        return len(self.files)

    def image_path(self, i):
        """Return the file of frame ``i``."""
        return os.path.join(self.image_dir, self.files[i])

    def has_depth(self, i):
        """Return True when frame ``i`` has a depth file."""
        return self.depth_paths[i] is not None

    def load_depth(self, i):
        """Ground-truth depth of frame ``i`` (None when absent)."""
        p = self.depth_paths[i]
        return None if p is None else load_depth_file(p)

    def stereo_baseline_m(self):
        """Return the baseline of ``DIR/stereo.txt`` ("baseline_m <metres>"), or None."""
        path = os.path.join(self.path, 'stereo.txt')
        if not os.path.isfile(path):
            return None
        with open(path, 'r', encoding='utf-8') as f:
            fields = f.read().split()
        if len(fields) != 2 or fields[0] != 'baseline_m':
            raise DataError(f'{path}: expected "baseline_m <metres>"')
        return float(fields[1])

    def stereo_source(self):
        """Return the right camera's frames (module docstring), or None when there are none."""
        if not hasattr(self, '_stereo'):
            self._stereo = None
            sub = os.path.relpath(self.image_dir, self.path)
            right = STEREO_DIRS.get(sub)
            if right is not None:
                right_dir = os.path.join(self.path, right)
                if os.path.isdir(right_dir) and list_images(right_dir):
                    self._stereo = RightCameraSource(right_dir, self)
        return self._stereo


class RightCameraSource(FrameSource):
    """The right camera of a folder's stereo pair: frame ``i`` is its ``i``-th image file."""

    stereo_side = 'r'

    def __init__(self, image_dir, left):
        """Index ``image_dir``; intrinsics are the left camera's (rectified pair)."""
        self.image_dir = str(image_dir)
        self.name = self.image_dir
        self.files = list_images(self.image_dir)
        self.K = left.K
        self.left = left

    def __len__(self):
        """Return the number of frames."""
        return len(self.files)

    def image_path(self, i):
        """Return the file of frame ``i``."""
        return os.path.join(self.image_dir, self.files[i])

    def stereo_source(self):
        """Return the left camera."""
        return self.left

    def stereo_baseline_m(self):
        """Return the left camera's stereo baseline (m) or None."""
        return self.left.stereo_baseline_m()


def folder_sources(path, intrinsics=None):
    """Return the FolderSources of ``path``: itself, or each sub-directory that holds frames."""
    path = str(path)
    if not os.path.isdir(path):
        raise ValueError(f'{path}: not a directory')
    if find_image_dir(path) is not None:
        return [FolderSource(path, intrinsics)]
    subs = [os.path.join(path, d) for d in sorted(os.listdir(path))
            if os.path.isdir(os.path.join(path, d))]
    sources = [FolderSource(d, intrinsics) for d in subs if find_image_dir(d) is not None]
    if not sources:
        raise ValueError(f'{path}: no images found in it or in its sub-directories')
    return sources

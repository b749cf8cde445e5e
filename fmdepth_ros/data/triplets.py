"""The triplet dataset shared by every source (synthetic, folder of frames, KITTI raw).

A *source* is one camera sequence (:class:`FrameSource`): frames that can be loaded by index,
native intrinsics, and optionally ground-truth depth and poses. :class:`TripletDataset` turns
(source, frame index) samples into the architecture batch format, one sample per item::

    'images'     [F, 3, H, W] float32 RGB in [0, 1], order = cfg.model.frame_ids (not jittered)
    'images_aug' [F, 3, H, W] network inputs (colour-jittered when augmenting)
    'K'          [3, 3] float32 intrinsics in pixels at the network resolution H x W
    'stereo_T'   [4, 4] float32 T_src_tgt of frame 's' (only when frame_ids holds 's'):
                 :func:`fmdepth_ros.stereo.stereo_T` of the source's side, sign flipped with
                 the image when the flip augmentation mirrors the sample
    'depth_gt'   [1, H, W] float32 metres, 0 = invalid (only when the source has depth)
    'index'      int, the sample's position in the dataset

H x W is ``cfg.model.height x cfg.model.width``. For evaluation at the native resolution use
:meth:`TripletDataset.native_depth` / :meth:`TripletDataset.native_image`.
"""

import logging
from typing import List, Optional, Sequence, Tuple

from fmdepth_ros.data.augment import (apply_color_jitter, flip_horizontal, flip_intrinsics,
                                      sample_color_jitter)
from fmdepth_ros.errors import DataError
from fmdepth_ros.geometry import scale_intrinsics
from fmdepth_ros.stereo import has_stereo, STEREO_ID, stereo_T, temporal_ids
import numpy as np
import torch
from torch.utils.data import Dataset

LOGGER = logging.getLogger(__name__)


def load_rgb(path):
    """Read an image file as [H, W, 3] uint8 RGB (grey images are replicated to 3 channels)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.array(img.convert('RGB'))   # writable copy


def resize_image(image, height, width):
    """Resize [h, w, 3] uint8 to [height, width, 3] (area filter when shrinking, else linear)."""
    import cv2

    if image.shape[:2] == (height, width):
        return image
    shrinking = height < image.shape[0] or width < image.shape[1]
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_depth_nearest(depth, height, width):
    """Nearest-neighbour resize of a depth map [h, w] (keeps 0 = invalid meaningful)."""
    import cv2

    if depth.shape == (height, width):
        return depth.astype(np.float32)
    return cv2.resize(depth.astype(np.float32), (width, height),
                      interpolation=cv2.INTER_NEAREST)


class FrameSource:
    """One camera sequence. Subclasses implement :meth:`image_path` or :meth:`load_image`.

    Attributes:
        name: label used in messages.
        K: [3, 3] intrinsics in pixels of the native images (or a callable of the index).
        poses: [N, 4, 4] T_world_cam ground truth or None.
        stereo_side: 'l' or 'r': which camera of a rectified stereo pair this is (frame 's'
            is the other one, :meth:`stereo_source`).
    """

    name = 'source'
    poses = None
    stereo_side = 'l'

    def __len__(self):
        """Return the number of frames."""
        raise NotImplementedError

    def load_image(self, i) -> np.ndarray:
        """Return frame ``i`` as [h, w, 3] uint8 RGB at native resolution."""
        return load_rgb(self.image_path(i))

    def image_path(self, i):
        """Return the file of frame ``i``."""
        raise NotImplementedError

    def intrinsics(self, i) -> np.ndarray:
        """Return K [3, 3] of frame ``i`` in native pixels."""
        return np.asarray(self.K, dtype=np.float64)

    def has_depth(self, i) -> bool:
        """Return True when ground-truth depth exists for frame ``i``."""
        return False

    def load_depth(self, i) -> Optional[np.ndarray]:
        """Return the ground-truth depth [h, w] float32 metres (0 = invalid) of frame ``i``."""
        return None

    def stereo_source(self) -> Optional['FrameSource']:
        """Return the other camera of the stereo pair (same frame indices), or None."""
        return None

    def stereo_baseline_m(self) -> Optional[float]:
        """Return the calibrated stereo baseline in metres, or None when unknown."""
        return None


def sequence_samples(source, frame_ids, require_neighbours=True, step=1):
    """Return ``(source, i)`` samples: every ``step``-th frame whose neighbours exist.

    With ``require_neighbours=False`` every frame is a sample (neighbours are clamped). The
    stereo frame ``'s'`` (same index, other camera) needs no neighbour.
    """
    ids = temporal_ids(frame_ids)
    lo = -min(min(ids), 0)
    hi = max(max(ids), 0)
    n = len(source)
    if require_neighbours:
        return [(source, i) for i in range(lo, n - hi, step)]
    return [(source, i) for i in range(0, n, step)]


class TripletDataset(Dataset):
    """Samples of (source, centre index) -> architecture batch items (module docstring).

    Args:
        samples: list of ``(FrameSource, frame index)``; the index is the target frame 0.
        cfg: ``Config`` (uses model.height/width/frame_ids, train.flip_prob,
            train.color_jitter_prob).
        augment: apply flip and colour jitter (training split only).
        with_depth: include ``depth_gt`` (None: when every sample's source has depth).
    """

    def __init__(self, samples: Sequence[Tuple[FrameSource, int]], cfg, augment=False,
                 with_depth=None):
        """Check the samples and store the settings."""
        if len(samples) == 0:
            raise ValueError('dataset is empty: no frame with the needed neighbours '
                             f'(frame ids {tuple(cfg.model.frame_ids)})')
        self.samples: List[Tuple[FrameSource, int]] = list(samples)
        self.cfg = cfg
        self.height = int(cfg.model.height)
        self.width = int(cfg.model.width)
        self.frame_ids = tuple(cfg.model.frame_ids)
        self.augment = bool(augment)
        self.flip_prob = float(cfg.train.flip_prob) if augment else 0.0
        self.jitter_prob = float(cfg.train.color_jitter_prob) if augment else 0.0
        if with_depth is None:
            with_depth = all(src.has_depth(i) for src, i in self.samples)
        self.with_depth = bool(with_depth)
        self.stereo = has_stereo(self.frame_ids)
        self.stereo_translation = float(getattr(cfg.model, 'stereo_translation', 0.015))
        if self.stereo:
            self._check_stereo()
        # Decoding and resizing a KITTI frame costs ~10 ms, about a fifth of a small CPU
        # training step; every frame is read three times an epoch (as target and neighbour).
        self.cache_bytes = int(getattr(cfg.train, 'frame_cache_mb', 0)) * 2 ** 20
        self._cache = {}
        self._cached_bytes = 0

    def __len__(self):
        """Return the number of samples."""
        return len(self.samples)

    def _check_stereo(self):
        """Raise ``DataError`` naming the first source without the other stereo camera."""
        seen = set()
        for source, _ in self.samples:
            if id(source) in seen:
                continue
            seen.add(id(source))
            other = source.stereo_source()
            if other is None:
                raise DataError(f"{source.name}: frame id 's' (MS training) needs the other "
                                'camera of a stereo pair (KITTI image_02 + image_03; a folder '
                                'with images/ + images_right/, see fmdepth synth --stereo)')
            if len(other) < len(source):
                raise DataError(f'{other.name}: {len(other)} frames for the {len(source)} '
                                f'of {source.name} (a stereo pair needs both cameras)')
            baseline = source.stereo_baseline_m()
            expected = float(getattr(self.cfg.model, 'stereo_baseline_m', baseline or 1.0))
            if baseline is not None and abs(baseline / expected - 1.0) > 0.05:
                LOGGER.warning('%s: calibrated stereo baseline %.4f m, but '
                               'model.stereo_baseline_m is %.4f m: the metric factor of '
                               '--scaling stereo will be off by %.3fx', source.name, baseline,
                               expected, baseline / expected)

    def frame_index(self, idx, frame_id):
        """Index in the source of ``frame_id`` for sample ``idx`` (clamped to the sequence).

        The stereo frame ``'s'`` has the target's index (in :meth:`frame_source`).
        """
        source, i = self.samples[idx]
        if frame_id == STEREO_ID:
            return int(i)
        return int(np.clip(i + frame_id, 0, len(source) - 1))

    def frame_source(self, idx, frame_id):
        """Return the FrameSource of ``frame_id`` of sample ``idx`` (the other camera for 's')."""
        source, _ = self.samples[idx]
        return source.stereo_source() if frame_id == STEREO_ID else source

    def native_image(self, idx) -> np.ndarray:
        """Target frame of sample ``idx`` at native resolution, [h, w, 3] uint8."""
        source, i = self.samples[idx]
        return source.load_image(i)

    def native_depth(self, idx) -> Optional[np.ndarray]:
        """Ground-truth depth [h, w] float32 metres of sample ``idx`` at native size (or None)."""
        source, i = self.samples[idx]
        return source.load_depth(i)

    def _resized_frame(self, source, index):
        """Return frame ``index`` of ``source`` at the network size and its native size.

        The value is ``([H, W, 3] uint8, (h, w))``, kept in memory up to
        ``train.frame_cache_mb`` (per process).
        """
        key = (id(source), index)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        image = source.load_image(index)
        value = (resize_image(image, self.height, self.width), image.shape[:2])
        if self._cached_bytes + value[0].nbytes <= self.cache_bytes:
            self._cache[key] = value
            self._cached_bytes += value[0].nbytes
        return value

    def __getitem__(self, idx):
        """Load, resize and (when augmenting) flip/jitter sample ``idx``."""
        source, i = self.samples[idx]
        frames = []
        native_size = None
        for fid in self.frame_ids:
            image, size = self._resized_frame(self.frame_source(idx, fid),
                                              self.frame_index(idx, fid))
            if native_size is None:
                native_size = size
            frames.append(image)
        h0, w0 = native_size
        K = torch.as_tensor(source.intrinsics(i), dtype=torch.float64)
        K = scale_intrinsics(K, self.width / w0, self.height / h0).float()
        images = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
        depth = None
        if self.with_depth:
            d = source.load_depth(i)
            d = np.zeros((h0, w0), np.float32) if d is None else d
            d = resize_depth_nearest(d, self.height, self.width)
            depth = torch.from_numpy(np.nan_to_num(d, nan=0.0, posinf=0.0)).float()[None]
        flipped = self.flip_prob > 0 and float(torch.rand(())) < self.flip_prob
        if flipped:
            images = flip_horizontal(images)
            K = flip_intrinsics(K, self.width)
            if depth is not None:
                depth = flip_horizontal(depth)
        images_aug = images
        if self.jitter_prob > 0 and float(torch.rand(())) < self.jitter_prob:
            images_aug = apply_color_jitter(images, sample_color_jitter())
        item = {'images': images.contiguous(), 'images_aug': images_aug.contiguous(), 'K': K,
                'index': idx}
        if self.stereo:
            item['stereo_T'] = stereo_T(self.stereo_translation, source.stereo_side, flipped)
        if depth is not None:
            item['depth_gt'] = depth.contiguous()
        return item


def collate_one(item):
    """Turn one dataset item into a batch of size 1 (tensors get a leading dimension)."""
    return {k: (v.unsqueeze(0) if torch.is_tensor(v) else torch.tensor([v]))
            for k, v in item.items()}

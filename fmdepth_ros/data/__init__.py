"""Datasets: synthetic sequences, KITTI raw, folders of frames and rosbag2 bags.

:func:`make_dataset` detects the kind of ``path`` and returns a dataset whose items follow the
architecture batch format (see :mod:`fmdepth_ros.data.triplets`).
"""

import os

SPLITS = ('train', 'val', 'test')


def is_bag(path):
    """Return True for a rosbag2 bag: a .mcap / .db3 file or a directory with metadata.yaml."""
    path = str(path)
    if os.path.isfile(path):
        return path.endswith(('.mcap', '.db3'))
    return os.path.isfile(os.path.join(path, 'metadata.yaml'))


def detect_kind(path):
    """Return 'bag', 'kitti', 'synthetic' or 'folder' for ``path`` (ValueError if none)."""
    from fmdepth_ros.data.folder import find_image_dir
    from fmdepth_ros.data.kitti import resolve_kitti_path
    from fmdepth_ros.data.synth import is_synthetic_dir

    path = str(path)
    if not os.path.exists(path):
        raise ValueError(f'{path}: no such file or directory')
    if is_bag(path):
        return 'bag'
    if os.path.isfile(path):
        raise ValueError(f'{path}: not a dataset (expected a directory or a .mcap/.db3 bag)')
    if resolve_kitti_path(path) is not None:
        return 'kitti'
    if is_synthetic_dir(path):
        return 'synthetic'
    if find_image_dir(path) is not None or any(
            os.path.isdir(os.path.join(path, d)) and find_image_dir(os.path.join(path, d))
            for d in os.listdir(path)):
        return 'folder'
    raise ValueError(f'{path}: not a KITTI raw root, synthetic sequence, folder of frames '
                     'or rosbag2 bag')


def make_samples(path, cfg, split='train', split_file=None, gt_path=None, intrinsics=None):
    """List of (FrameSource, frame index) samples for a KITTI / synthetic / folder ``path``."""
    from fmdepth_ros.data.folder import folder_sources
    from fmdepth_ros.data.kitti import kitti_samples, resolve_kitti_path
    from fmdepth_ros.data.triplets import sequence_samples
    from fmdepth_ros.stereo import temporal_ids

    kind = detect_kind(path)
    if kind == 'bag':
        raise ValueError(f'{path}: a bag has no frame-source samples')
    if kind == 'kitti':
        root, drives = resolve_kitti_path(path)
        samples = kitti_samples(root, split_file, gt_path, drives=drives)
        if split == 'train' and split_file is None:
            ids = temporal_ids(cfg.model.frame_ids)
            lo, hi = -min(min(ids), 0), max(max(ids), 0)
            samples = [(s, i) for s, i in samples if lo <= i < len(s) - hi]
        return samples
    sources = folder_sources(path, intrinsics)
    samples = []
    if split_file is not None:
        with open(split_file, 'r', encoding='utf-8') as f:
            wanted = [ln.split()[0] for ln in f if ln.strip()]
        for src in sources:
            stems = {os.path.splitext(name)[0]: k for k, name in enumerate(src.files)}
            for w in wanted:
                key = os.path.splitext(os.path.basename(w))[0]
                if key in stems:
                    samples.append((src, stems[key]))
                elif w.isdigit() and int(w) < len(src):
                    samples.append((src, int(w)))
        if not samples:
            raise ValueError(f'{split_file}: no line names a frame of {path}')
        return samples
    for src in sources:
        samples += sequence_samples(src, cfg.model.frame_ids,
                                    require_neighbours=(split == 'train'))
    return samples


def make_dataset(path, cfg, split='train', split_file=None, gt_path=None, intrinsics=None):
    """Dataset for ``path``: KITTI raw root, synthetic sequence, folder of frames, or bag.

    Args:
        path: the data location.
        cfg: ``Config`` (network size, frame ids, augmentation probabilities).
        split: 'train' (flip + colour jitter, frames need both neighbours) or 'val' / 'test'
            (no augmentation, every frame; missing neighbours are clamped).
        split_file: KITTI split file (Monodepth2 / FeatDepth format); for folders, a list
            of frame names or indices.
        gt_path: KITTI gt_depths.npz aligned with ``split_file``.
        intrinsics: (fx, fy, cx, cy) or 3x3 overriding a folder's calibration files.

    Returns:
        a ``torch.utils.data.Dataset`` of architecture batch items.
    """
    from fmdepth_ros.data.triplets import TripletDataset

    if split not in SPLITS:
        raise ValueError(f'split must be one of {", ".join(SPLITS)}, got {split!r}')
    if detect_kind(path) == 'bag':
        from fmdepth_ros.data.bag import BagDataset

        return BagDataset(path, cfg, split=split)
    samples = make_samples(path, cfg, split, split_file, gt_path, intrinsics)
    # Projecting velodyne scans for every training item is slow and unused by the losses.
    with_depth = False if (split == 'train' and detect_kind(path) == 'kitti') else None
    return TripletDataset(samples, cfg, augment=(split == 'train'), with_depth=with_depth)


__all__ = ['make_dataset', 'make_samples', 'detect_kind', 'is_bag', 'SPLITS']

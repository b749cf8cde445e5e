"""Picture of a checkpoint on real frames: rows of input | depth | LiDAR (``fmdepth figure``).

Each row is one frame of a folder with ground truth (``images/``, ``depth/``,
``intrinsics.txt``: what ``fmdepth kitti2folder`` writes, or ``data/kitti_city_78``):

* **input**: the frame as stored;
* **depth**: the checkpoint's depth computed as ``fmdepth evaluate --data`` does (network input
  size, scale-0 disparity resized to the ground-truth size,
  :func:`fmdepth_ros.evaluation.predict_eval_depth`), median-scaled to the frame's LiDAR, shown
  as inverse depth;
* **LiDAR**: the ground-truth points, as inverse depth on the same colour scale, each point
  drawn 3x3 pixels wide so the sparse scan is visible at figure size (black = no point).

The row label gives the frame and its AbsRel (Eigen protocol: Garg crop, 80 m cap, median
scaling), the same number ``fmdepth evaluate --data`` averages.
"""

from typing import Dict, List, Sequence

from fmdepth_ros.atomic_io import open_atomic
from fmdepth_ros.errors import DataError
import numpy as np

COLORMAP = 'turbo'          # as the node's depth/colored output
MAX_DEPTH = 80.0            # the KITTI evaluation cap (m)
POINT_SIZE = 3              # LiDAR points are dilated to this many pixels square


def parse_frames(text) -> List[int]:
    """Frame indices from ``'10,40,70'`` (comma-separated, >= 0)."""
    try:
        frames = [int(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise DataError(f'--frames: expected comma-separated frame indices, got {text!r}') \
            from None
    if not frames or min(frames) < 0:
        raise DataError(f'--frames: need at least one index >= 0, got {text!r}')
    return frames


def _frame_source(data):
    from fmdepth_ros.data.folder import folder_sources

    try:
        sources = folder_sources(data)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if len(sources) != 1:
        raise DataError(f'{data}: holds {len(sources)} sequences; give one folder')
    return sources[0]


def predict_frames(model, cfg, data, frames: Sequence[int], device='cpu') -> List[Dict]:
    """Depth of ``model`` on ``frames`` of folder ``data`` against its ground truth.

    Returns one dict per frame: ``frame`` (index), ``image`` [h, w, 3] uint8 as stored,
    ``gt`` [H, W] metres (0 = none), ``depth`` [H, W] median-scaled metres at the GT size,
    ``abs_rel`` (float).

    Raises:
        DataError: ``data`` is not one folder of frames, a frame index is out of range, or a
            frame has no (valid) ground-truth depth.
    """
    import torch

    from fmdepth_ros.data.triplets import resize_image
    from fmdepth_ros.evaluation import predict_eval_depth
    from fmdepth_ros.metrics import evaluate_depth

    source = _frame_source(data)
    rows = []
    for i in frames:
        if i >= len(source):
            raise DataError(f'{data}: frame {i} out of range (it has {len(source)} frames)')
        gt = source.load_depth(i)
        if gt is None:
            raise DataError(f'{data}: frame {i} ({source.files[i]}) has no depth/ file')
        gt = np.nan_to_num(gt, nan=0.0)
        image = source.load_image(i)
        small = resize_image(image, int(cfg.model.height), int(cfg.model.width))
        tensor = torch.from_numpy(small).permute(2, 0, 1)[None].float().div(255.0).to(device)
        depth = predict_eval_depth(model.depth_net, tensor, gt.shape, cfg.model.min_depth,
                                   cfg.model.max_depth)
        errors, ratio = evaluate_depth(gt, depth, max_depth=MAX_DEPTH)
        if errors is None:
            raise DataError(f'{data}: frame {i} has no valid ground-truth pixel')
        rows.append({'frame': i, 'image': image, 'gt': gt, 'depth': depth * ratio,
                     'abs_rel': float(errors['abs_rel'])})
    return rows


def _dilate_points(gt, size=POINT_SIZE):
    """Inverse depth [H, W] of the GT points, each spread over ``size`` x ``size`` pixels.

    Nearer points win where spread points overlap (grey dilation of inverse depth).
    """
    import cv2

    inverse = np.where(gt > 0, 1.0 / np.maximum(gt, 1e-6), 0.0).astype(np.float32)
    return cv2.dilate(inverse, np.ones((size, size), np.uint8))


def render_figure(rows, out_png, title=None, dpi=110) -> None:
    """Write rows of input | depth | LiDAR (dicts of :func:`predict_frames`) as ``out_png``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not rows:
        raise DataError('render_figure: no frames')
    gt_inverse = np.concatenate([1.0 / r['gt'][r['gt'] > 0] for r in rows])
    vmin, vmax = 1.0 / MAX_DEPTH, float(np.percentile(gt_inverse, 99))
    h, w = rows[0]['gt'].shape
    panel_w = 3.2
    fig, axes = plt.subplots(len(rows), 3, squeeze=False,
                             figsize=(3 * panel_w, len(rows) * panel_w * h / w + 0.5))
    cmap = matplotlib.colormaps[COLORMAP].with_extremes(bad='black')
    for ax, row in zip(axes, rows):
        ax[0].imshow(row['image'], cmap='gray' if row['image'].ndim == 2 else None,
                     aspect='auto')
        ax[1].imshow(1.0 / np.maximum(row['depth'], 1e-6), cmap=cmap, vmin=vmin, vmax=vmax,
                     aspect='auto')
        points = _dilate_points(row['gt'])
        ax[2].imshow(np.ma.masked_equal(points, 0.0), cmap=cmap, vmin=vmin, vmax=vmax,
                     aspect='auto')
        ax[0].set_ylabel(f'frame {row["frame"]}\nAbsRel {row["abs_rel"]:.3f}', fontsize=8)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
            a.set_facecolor('black')
    for a, label in zip(axes[0], ('input', 'depth (inverse, median-scaled)', 'LiDAR')):
        a.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    with open_atomic(out_png) as f:
        fig.savefig(f, dpi=dpi, format='png')
    plt.close(fig)


def figure_from_checkpoint(checkpoint, data, out_png, frames=(10, 40, 70), device='cpu',
                           title=None) -> List[Dict]:
    """Load ``checkpoint``, render :func:`render_figure` for ``frames`` of ``data``.

    Returns the rows' ``frame`` and ``abs_rel`` (images left out).
    """
    from fmdepth_ros.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(checkpoint, map_location=device)
    model.eval()
    rows = predict_frames(model, cfg, data, frames, device=device)
    render_figure(rows, out_png, title=title)
    return [{'frame': r['frame'], 'abs_rel': r['abs_rel']} for r in rows]

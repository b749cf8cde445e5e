"""Evaluation metrics: Eigen depth errors (KITTI protocol) and trajectory ATE; KITTI pose I/O.

Depth protocol (Eigen et al. 2014, as run by FeatDepth's ``eval_depth.py``):

* the prediction is resized to the ground-truth size (see :func:`disparity_to_eval_depth`),
* pixels count when ``min_depth < gt < max_depth`` (1e-3 .. 80 m) and, with the Garg crop,
  inside rows ``0.40810811 h .. 0.99189189 h`` and columns ``0.03594771 w .. 0.96405229 w``,
* monocular predictions are scaled per image by ``median(gt) / median(pred)``; stereo-trained
  ones by a fixed factor; then clamped to ``[min_depth, max_depth]``,
* errors are computed per image and averaged over images.

Trajectory protocol: both trajectories are expressed relative to their first pose, the
prediction is aligned to the ground truth (scale only, as the official ``draw_odometry.py`` /
``eval_pose.py``, or a full Sim(3) Umeyama fit), and the ATE is the RMSE of the position errors
in metres.
"""


from fmdepth_ros.atomic_io import write_text_atomic
import numpy as np

DEPTH_METRICS = ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'a1', 'a2', 'a3')
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)   # top, bottom, left, right


def garg_crop_mask(height, width):
    """Boolean mask [height, width], True inside the Garg et al. crop."""
    top, bottom, left, right = GARG_CROP
    mask = np.zeros((height, width), dtype=bool)
    mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = True
    return mask


def compute_depth_errors(gt, pred):
    """Eigen errors of matched valid depths ``gt`` and ``pred`` (1-D arrays, metres, > 0).

    Returns a dict with ``abs_rel`` mean(|gt-pred|/gt), ``sq_rel`` mean((gt-pred)^2/gt),
    ``rmse`` sqrt(mean((gt-pred)^2)), ``rmse_log`` sqrt(mean((log gt - log pred)^2)) and
    ``a1/a2/a3``: fraction of max(gt/pred, pred/gt) < 1.25, 1.25^2, 1.25^3.
    """
    gt = np.asarray(gt, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if gt.shape != pred.shape or gt.size == 0:
        raise ValueError(f'compute_depth_errors: need equal non-empty arrays, got {gt.shape} '
                         f'and {pred.shape}')
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        'abs_rel': float(np.mean(np.abs(gt - pred) / gt)),
        'sq_rel': float(np.mean((gt - pred) ** 2 / gt)),
        'rmse': float(np.sqrt(np.mean((gt - pred) ** 2))),
        'rmse_log': float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        'a1': float(np.mean(thresh < 1.25)),
        'a2': float(np.mean(thresh < 1.25 ** 2)),
        'a3': float(np.mean(thresh < 1.25 ** 3)),
    }


def evaluate_depth(gt_depth, pred_depth, min_depth=1e-3, max_depth=80.0, garg_crop=True,
                   median_scaling=True, scale=1.0):
    """Eigen errors of one image.

    Args:
        gt_depth: [H, W] ground-truth depth in metres, 0 (or <= min_depth) = no measurement.
        pred_depth: [H, W] predicted depth at the same size (metres, up to scale).
        min_depth, max_depth: valid GT range and the clamp applied to the scaled prediction.
        garg_crop: restrict to the Garg crop.
        median_scaling: multiply the prediction by median(gt)/median(pred) over valid pixels.
        scale: fixed factor applied instead when ``median_scaling`` is False (e.g. 36 for MS).

    Returns:
        (errors dict as :func:`compute_depth_errors`, the scale ratio used), or (None, None)
        when the image has no valid pixel.
    """
    gt_depth = np.asarray(gt_depth, dtype=np.float64)
    pred_depth = np.asarray(pred_depth, dtype=np.float64)
    if gt_depth.shape != pred_depth.shape:
        raise ValueError(f'evaluate_depth: prediction {pred_depth.shape} does not match '
                         f'ground truth {gt_depth.shape}; resize it first')
    mask = (gt_depth > min_depth) & (gt_depth < max_depth) & np.isfinite(pred_depth)
    if garg_crop:
        mask &= garg_crop_mask(*gt_depth.shape)
    if not mask.any():
        return None, None
    gt = gt_depth[mask]
    pred = pred_depth[mask]
    ratio = float(np.median(gt) / np.median(pred)) if median_scaling else float(scale)
    pred = np.clip(pred * ratio, min_depth, max_depth)
    return compute_depth_errors(gt, pred), ratio


def mean_errors(per_image):
    """Average a list of per-image error dicts (``None`` entries are skipped)."""
    rows = [e for e in per_image if e is not None]
    if not rows:
        raise ValueError('mean_errors: no image had valid ground truth')
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


class DepthMetricAccumulator:
    """Eigen errors over a set of images: the one accumulator of every depth evaluation.

    ``fmdepth evaluate`` (a dataset), bag evaluation (a recording of the node) and the demo
    feed it one ``(gt, pred)`` pair per image; :meth:`result` gives the per-image means and
    the counts. Settings are those of :func:`evaluate_depth`.

    Result keys (the JSON of ``fmdepth evaluate``, see docs/bags.md): the
    :data:`DEPTH_METRICS` means over scored images, ``num_images`` (scored), ``num_skipped``
    (no valid ground truth, or :meth:`skip`), ``scale_ratio_median`` (median of the
    per-image ratios ``median(gt) / median(pred)``, or the fixed ``scale``) and
    ``scale_ratio_std`` (standard deviation of ``ratio / median ratio``: 0 when every image
    needs the same scale).
    """

    def __init__(self, min_depth=1e-3, max_depth=80.0, garg_crop=True, median_scaling=True,
                 scale=1.0):
        """Store the protocol settings (:func:`evaluate_depth`'s arguments)."""
        self.settings = {'min_depth': min_depth, 'max_depth': max_depth,
                         'garg_crop': garg_crop, 'median_scaling': median_scaling,
                         'scale': scale}
        self.per_image = []
        self.ratios = []
        self.num_skipped = 0

    def add(self, gt_depth, pred_depth, garg_crop=None):
        """Score one image; returns its errors dict, or None (counted as skipped) without GT.

        Args:
            gt_depth: [H, W] metres, 0 / NaN / out of range = no measurement.
            pred_depth: [H, W] predicted depth at the same size (metres, up to scale).
            garg_crop: overrides the accumulator's setting for this image when not None.
        """
        settings = dict(self.settings)
        if garg_crop is not None:
            settings['garg_crop'] = bool(garg_crop)
        errors, ratio = evaluate_depth(gt_depth, pred_depth, **settings)
        if errors is None:
            self.num_skipped += 1
            return None
        self.per_image.append(errors)
        self.ratios.append(ratio)
        return errors

    def skip(self):
        """Count an image that has no ground truth at all."""
        self.num_skipped += 1

    @property
    def num_images(self) -> int:
        """Return the number of images scored so far."""
        return len(self.per_image)

    def result(self) -> dict:
        """Mean errors and counts (keys in the class docstring); ValueError when none scored."""
        if not self.per_image:
            raise ValueError(f'no image had valid ground truth ({self.num_skipped} skipped)')
        ratios = np.asarray(self.ratios, dtype=np.float64)
        median = float(np.median(ratios))
        result = mean_errors(self.per_image)
        result.update(num_images=self.num_images, num_skipped=self.num_skipped,
                      scale_ratio_median=median,
                      scale_ratio_std=float(np.std(ratios / median)) if median else 0.0)
        return result


def disparity_to_eval_depth(disp, gt_shape, min_depth=0.1, max_depth=100.0):
    """Official FeatDepth test-time conversion of a network disparity to depth at GT size.

    Args:
        disp: [h, w] sigmoid disparity in (0, 1) (the scale-0 output).
        gt_shape: (H, W) of the ground truth.
        min_depth, max_depth: the network's depth range (0.1 / 100 m).

    Returns:
        [H, W] float64 depth: scaled disparity ``1/max + (1/min - 1/max) * disp`` resized
        bilinearly (cv2.resize) to the GT size, then inverted.
    """
    import cv2

    disp = np.asarray(disp, dtype=np.float32)
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    height, width = int(gt_shape[0]), int(gt_shape[1])
    resized = cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR)
    return 1.0 / resized.astype(np.float64)


def _relative_to_first(poses):
    poses = np.asarray(poses, dtype=np.float64)
    return np.linalg.inv(poses[0])[None] @ poses


def umeyama_alignment(src, dst, with_scale=True):
    """Least-squares similarity (s, R, t) with ``dst ~ s * R @ src + t`` (Umeyama 1991).

    Args:
        src, dst: [N, 3] corresponding points.
        with_scale: estimate the scale (Sim(3)); else s = 1 (SE(3)).

    Returns:
        (s float, R [3, 3], t [3]).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / src.shape[0]
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    R = u @ sign @ vt
    var_s = (xs ** 2).sum() / src.shape[0]
    s = float(np.trace(np.diag(d) @ sign) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def align_scale(gt_xyz, pred_xyz):
    """Least-squares scale s minimising ||gt - s * pred||^2 (positions [N, 3])."""
    pred_xyz = np.asarray(pred_xyz, dtype=np.float64)
    denom = float(np.sum(pred_xyz ** 2))
    return float(np.sum(np.asarray(gt_xyz) * pred_xyz) / denom) if denom > 0 else 1.0


def compute_ate(gt_poses, pred_poses, alignment='scale'):
    """Absolute trajectory error (RMSE of positions, metres) after alignment.

    Args:
        gt_poses, pred_poses: [N, 4, 4] T_world_cam; each is first re-expressed relative to its
            own first pose.
        alignment: 'scale' (least-squares scale only, the official FeatDepth protocol),
            'sim3' (Umeyama with scale), 'se3' (Umeyama without scale) or 'none'.

    Returns:
        dict ``ate`` (RMSE m), ``ate_mean`` (mean error m), ``scale`` (applied factor).
    """
    gt = _relative_to_first(gt_poses)[:, :3, 3]
    pred = _relative_to_first(pred_poses)[:, :3, 3]
    if gt.shape != pred.shape:
        raise ValueError(f'compute_ate: {len(gt)} ground-truth poses but {len(pred)} predicted')
    if alignment == 'scale':
        s = align_scale(gt, pred)
        aligned = s * pred
    elif alignment in ('sim3', 'se3'):
        s, R, t = umeyama_alignment(pred, gt, with_scale=alignment == 'sim3')
        aligned = s * pred @ R.T + t
    elif alignment == 'none':
        s, aligned = 1.0, pred
    else:
        raise ValueError(f"alignment must be 'scale', 'sim3', 'se3' or 'none', got {alignment!r}")
    err = np.linalg.norm(aligned - gt, axis=1)
    return {'ate': float(np.sqrt(np.mean(err ** 2))), 'ate_mean': float(err.mean()),
            'scale': float(s)}


def snippet_ate(gt_poses, pred_poses, length=5):
    """Mean and std of the scale-aligned ATE over all ``length``-frame snippets (``eval_pose``)."""
    gt_poses = np.asarray(gt_poses)
    pred_poses = np.asarray(pred_poses)
    if len(gt_poses) < length:
        raise ValueError(f'snippet_ate: need at least {length} poses, got {len(gt_poses)}')
    errs = [compute_ate(gt_poses[i:i + length], pred_poses[i:i + length])['ate']
            for i in range(len(gt_poses) - length + 1)]
    return float(np.mean(errs)), float(np.std(errs))


KITTI_SEGMENT_LENGTHS = (100, 200, 300, 400, 500, 600, 700, 800)   # metres


def kitti_segment_errors(gt_poses, pred_poses, lengths=KITTI_SEGMENT_LENGTHS, step=10):
    """KITTI odometry relative errors over segments of fixed travelled length.

    For every ``step``-th start frame and every length L, the segment ends at the first frame
    whose travelled ground-truth distance reaches L; the error of the relative motion
    ``inv(pred_delta) @ gt_delta`` gives a translation error (m / L) and a rotation error
    (rad / L). Apply any scale alignment to ``pred_poses`` first.

    Args:
        gt_poses, pred_poses: [N, 4, 4] T_world_cam.
        lengths: segment lengths in metres.
        step: start-frame stride (10 in the KITTI devkit).

    Returns:
        dict ``t_err`` (%), ``r_err`` (deg / 100 m) and ``num_segments``; errors are NaN when
        the trajectory is shorter than every length.
    """
    gt_poses = np.asarray(gt_poses, dtype=np.float64)
    pred_poses = np.asarray(pred_poses, dtype=np.float64)
    steps = np.linalg.norm(np.diff(gt_poses[:, :3, 3], axis=0), axis=1)
    dist = np.concatenate([[0.0], np.cumsum(steps)])
    t_errs, r_errs = [], []
    for first in range(0, len(gt_poses), step):
        for length in lengths:
            ends = np.nonzero(dist >= dist[first] + length)[0]
            if len(ends) == 0:
                continue
            last = int(ends[0])
            gt_delta = np.linalg.inv(gt_poses[first]) @ gt_poses[last]
            pred_delta = np.linalg.inv(pred_poses[first]) @ pred_poses[last]
            err = np.linalg.inv(pred_delta) @ gt_delta
            cos = np.clip((np.trace(err[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
            t_errs.append(np.linalg.norm(err[:3, 3]) / length)
            r_errs.append(np.arccos(cos) / length)
    if not t_errs:
        return {'t_err': float('nan'), 'r_err': float('nan'), 'num_segments': 0}
    return {'t_err': float(np.mean(t_errs) * 100.0),
            'r_err': float(np.degrees(np.mean(r_errs)) * 100.0),
            'num_segments': len(t_errs)}


def chain_poses(relative):
    """Absolute poses [N+1, 4, 4] from N relative ``T_prev_next`` transforms (first = identity)."""
    poses = [np.eye(4)]
    for T in relative:
        poses.append(poses[-1] @ np.asarray(T, dtype=np.float64))
    return np.stack(poses)


def save_poses_kitti(path, poses):
    """Write poses [N, 4, 4] as KITTI odometry lines (3x4 row-major), atomically."""
    poses = np.asarray(poses, dtype=np.float64)
    lines = [' '.join(f'{v:.9e}' for v in p[:3, :4].ravel()) for p in poses]
    write_text_atomic(path, '\n'.join(lines) + '\n')


def load_poses_kitti(path):
    """Read KITTI odometry poses (12 numbers per line) into [N, 4, 4] float64."""
    data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if data.shape[1] != 12:
        raise ValueError(f'{path}: expected 12 numbers per line (KITTI 3x4 poses), '
                         f'got {data.shape[1]}')
    poses = np.tile(np.eye(4), (data.shape[0], 1, 1))
    poses[:, :3, :4] = data.reshape(-1, 3, 4)
    return poses

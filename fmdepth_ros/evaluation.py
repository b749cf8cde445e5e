"""Eigen depth metrics and odometry ATE of a checkpoint on a dataset (``fmdepth evaluate``).

Depth follows the official FeatDepth protocol (``scripts/eval_depth.py``): the network sees
the target frame at its input size; the scale-0 disparity becomes a scaled disparity in
``[1/max_depth, 1/min_depth]`` (0.01 .. 10), is resized bilinearly to the ground-truth size and
inverted; then :func:`fmdepth_ros.metrics.evaluate_depth` applies the Garg crop, the
1e-3 .. 80 m cap and per-image median scaling (or a fixed scale for stereo-trained models).

With ``--refine-steps N`` every test sample first gets N Adam steps of the self-supervised
losses on its own triplet (``refinement.refine_on_batch``) applied to a fresh copy of the model
(the paper's online refinement); the next sample starts from the checkpoint again.

Odometry: for every sequence with ground-truth poses (a synthetic directory, or a folder with
a KITTI odometry ``poses.txt``), PoseNet runs on consecutive frame pairs, the relative poses
are chained into a trajectory and the ATE is reported after scale alignment (official
protocol) and after a Sim(3) fit, plus the 5-frame snippet ATE of ``eval_pose.py`` and, for
trajectories of at least 100 m, the KITTI devkit segment errors (t_err %, r_err deg/100 m)
of the scale-aligned trajectory.

Bags are evaluated through the node by the ROS tools layer (:mod:`fmdepth_ros.ros.tools.evaluate`).
"""

import copy
import os
import sys

from fmdepth_ros.metrics import DEPTH_METRICS, DepthMetricAccumulator
import numpy as np

METRIC_LABELS = {'abs_rel': 'AbsRel', 'sq_rel': 'SqRel', 'rmse': 'RMSE',
                 'rmse_log': 'RMSElog', 'a1': 'd<1.25', 'a2': 'd<1.25^2', 'a3': 'd<1.25^3'}


# ----------------------------------------------------------------------------- depth

def predict_eval_depth(depth_net, image, gt_shape, min_depth, max_depth):
    """Official test-time depth of one frame at the GT size.

    Args:
        depth_net: DepthNet in eval mode.
        image: [1, 3, H, W] float tensor in [0, 1] at the network input size (on its device).
        gt_shape: (h, w) of the ground truth.
        min_depth, max_depth: the network's depth range (metres).

    Returns:
        [h, w] float64 depth (up to scale).
    """
    import torch

    from fmdepth_ros.metrics import disparity_to_eval_depth

    with torch.no_grad():
        disp = depth_net(image)[0][0, 0].float().cpu().numpy()
    return disparity_to_eval_depth(disp, gt_shape, min_depth, max_depth)


def evaluate_depth_dataset(model, cfg, dataset, refine_steps=0, device='cpu',
                           median_scaling=True, scale=1.0, max_samples=None, progress=True,
                           baselines=None, depth_forward=None):
    """Eigen metrics of ``model`` on every sample of ``dataset`` that has ground truth.

    Args:
        model: FeatDepthModel (eval mode, on ``device``).
        cfg: its Config (depth range, refinement settings).
        dataset: a TripletDataset (test split: no augmentation); ``native_depth(i)`` gives
            the full-resolution ground truth.
        refine_steps: online refinement iterations per sample on a copy of the model.
        median_scaling, scale: per-image median scaling, else the fixed ``scale``.
        max_samples: stop after this many samples.
        progress: show a tqdm bar.
        baselines: {name: DepthNet (eval mode, on ``device``) or None}: further rows scored
            on the same images, always with median scaling and never refined; None is the
            constant-depth guess (after median scaling: the median of each image's GT).
        depth_forward: optional ``image [1,3,h,w] -> {0: disp}`` used for the checkpoint row
            instead of ``model.depth_net`` (e.g. an ONNX backend engine); not with refinement.

    Returns:
        :meth:`fmdepth_ros.metrics.DepthMetricAccumulator.result` (mean metrics,
        ``num_images``, ``num_skipped``, ``scale_ratio_median``, ``scale_ratio_std``) plus
        ``refine`` statistics; with ``baselines``, ``baselines``: {name: the same keys}.
    """
    import torch
    from tqdm import tqdm

    from fmdepth_ros.data.triplets import collate_one
    n = len(dataset) if max_samples is None else min(len(dataset), int(max_samples))
    baselines = dict(baselines or {})
    scores = DepthMetricAccumulator(median_scaling=median_scaling, scale=scale)
    baseline_scores = {name: DepthMetricAccumulator() for name in baselines}
    refine_stats = {'reverted': 0, 'loss_before': [], 'loss_after': []}
    for idx in tqdm(range(n), desc='depth', unit='img', disable=not progress, file=sys.stderr):
        gt = dataset.native_depth(idx)
        if gt is None:
            scores.skip()
            continue
        batch = collate_one(dataset[idx])
        net = model.depth_net if depth_forward is None else depth_forward
        if refine_steps > 0:
            from fmdepth_ros.runtime.refinement import refine_on_batch

            fresh = copy.deepcopy(model)
            stats = refine_on_batch(fresh, batch, iterations=refine_steps, lr=cfg.refine.lr,
                                    target=cfg.refine.target, guard=cfg.refine.guard)
            refine_stats['reverted'] += int(bool(stats['reverted']))
            refine_stats['loss_before'].append(float(stats['loss_before']))
            refine_stats['loss_after'].append(float(stats['loss_after']))
            net = fresh.depth_net.eval()
        image = batch['images'][:, 0].to(device)
        with torch.no_grad():
            pred = predict_eval_depth(net, image, gt.shape, cfg.model.min_depth,
                                      cfg.model.max_depth)
        if scores.add(gt, pred) is None:
            continue
        for name, baseline_net in baselines.items():
            if baseline_net is None:
                guess = np.ones(gt.shape)
            else:
                guess = predict_eval_depth(baseline_net, image, gt.shape, cfg.model.min_depth,
                                           cfg.model.max_depth)
            baseline_scores[name].add(gt, guess)
    if not scores.num_images:
        raise ValueError('no sample had valid ground-truth depth')
    result = scores.result()
    if baselines:
        result['baselines'] = {name: acc.result() for name, acc in baseline_scores.items()}
    if refine_steps > 0:
        result['refine'] = {
            'steps': int(refine_steps), 'reverted': refine_stats['reverted'],
            'loss_before_mean': float(np.mean(refine_stats['loss_before'])),
            'loss_after_mean': float(np.mean(refine_stats['loss_after']))}
    return result


# ----------------------------------------------------------------------------- odometry

def evaluate_trajectory(source, estimate, progress=True):
    """ATE of the trajectory chained from ``estimate`` over all frames of ``source``.

    Args:
        source: a FrameSource with ``poses`` [N, 4, 4] T_world_cam ground truth.
        estimate: callable ``(earlier, later) -> T_earlier_later`` [4, 4] on [H, W, 3] uint8
            frames (e.g. ``PoseEstimator.estimate``).
        progress: show a tqdm bar.

    Returns:
        dict ``ate`` (scale-aligned RMSE, m), ``ate_sim3``, ``snippet_ate_mean/std``
        (5-frame snippets), ``scale`` and ``num_frames``.
    """
    from tqdm import tqdm

    from fmdepth_ros.metrics import (KITTI_SEGMENT_LENGTHS, chain_poses, compute_ate,
                                     kitti_segment_errors, snippet_ate)

    n = len(source)
    if source.poses is None or n < 2:
        raise ValueError(f'{source.name}: needs ground-truth poses and at least 2 frames')
    relative = []
    previous = source.load_image(0)
    for i in tqdm(range(1, n), desc='odometry', unit='pair', disable=not progress,
                  file=sys.stderr):
        current = source.load_image(i)
        relative.append(estimate(previous, current))
        previous = current
    pred = chain_poses(relative)
    gt = np.asarray(source.poses)[:n]
    scale_aligned = compute_ate(gt, pred, 'scale')
    result = {'ate': scale_aligned['ate'], 'ate_sim3': compute_ate(gt, pred, 'sim3')['ate'],
              'scale': scale_aligned['scale'], 'num_frames': n,
              'trajectory_length_m': float(np.sum(np.linalg.norm(
                  np.diff(gt[:, :3, 3], axis=0), axis=1)))}
    if n >= 5:
        result['snippet_ate_mean'], result['snippet_ate_std'] = snippet_ate(gt, pred, 5)
    if result['trajectory_length_m'] >= KITTI_SEGMENT_LENGTHS[0]:
        aligned = pred.copy()
        aligned[:, :3, 3] *= scale_aligned['scale']
        segments = kitti_segment_errors(gt, aligned)
        result.update(t_err_pct=segments['t_err'], r_err_deg_per_100m=segments['r_err'],
                      num_segments=segments['num_segments'])
    return result


def constant_velocity(earlier, later):
    """Odometry baseline: 1 unit straight ahead per frame (T_earlier_later, [4, 4]).

    After scale alignment this is the best straight line at constant speed, the ATE a
    PoseNet has to beat to have learned any motion.
    """
    T = np.eye(4)
    T[2, 3] = 1.0
    return T


def pose_sources(dataset):
    """Distinct sources of ``dataset`` that have ground-truth poses, in order."""
    seen, out = set(), []
    for src, _ in getattr(dataset, 'samples', []):
        if id(src) not in seen and getattr(src, 'poses', None) is not None:
            seen.add(id(src))
            out.append(src)
    return out


# ----------------------------------------------------------------------------- output

BASELINE_LABELS = {'untrained': 'untrained', 'constant': 'constant'}


def _ate_text(name, odo, label=None):
    """Format one ATE line: ``ATE name: ...``, or an indented ``label: ...`` for a baseline."""
    values = f'{odo["ate"]:.4f} m (scale-aligned), {odo["ate_sim3"]:.4f} m (Sim3)'
    if label:
        return f'  {label:>10}: {values}'
    return (f'ATE {name}: {values} over {odo["num_frames"]} frames, '
            f'{odo["trajectory_length_m"]:.1f} m')


def format_table(results):
    """Human-readable table of a results dict (depth rows: checkpoint, baselines; ATE rows)."""
    lines = []
    depth = results.get('depth')
    baselines = results.get('baselines') or {}
    if depth:
        lines.append(f'{"":>10}  ' + '  '.join(f'{METRIC_LABELS[k]:>9}' for k in DEPTH_METRICS))
        lines.append(f'{"checkpoint":>10}  ' + '  '.join(f'{depth[k]:9.4f}'
                                                         for k in DEPTH_METRICS))
        for name, row in baselines.items():
            if row.get('depth'):
                lines.append(f'{BASELINE_LABELS.get(name, name):>10}  ' + '  '.join(
                    f'{row["depth"][k]:9.4f}' for k in DEPTH_METRICS))
        if 'num_images' in depth:
            lines.append(f'({depth["num_images"]} images, {depth.get("num_skipped", 0)} '
                         f'without GT; median scale ratio '
                         f'{depth.get("scale_ratio_median", float("nan")):.3f} '
                         f'± {depth.get("scale_ratio_std", float("nan")):.3f})')
        if 'refine' in depth:
            r = depth['refine']
            lines.append(f'online refinement: {r["steps"]} steps/sample, loss '
                         f'{r["loss_before_mean"]:.4f} -> {r["loss_after_mean"]:.4f}, '
                         f'{r["reverted"]} reverted')
    if baselines and depth:
        lines.append('(untrained: the same config and seed, no training; constant: one depth '
                     'for every pixel; both median-scaled)')
    for name, odo in (results.get('odometry') or {}).items():
        text = _ate_text(name, odo)
        if 'snippet_ate_mean' in odo:
            text += (f'; 5-frame snippets {odo["snippet_ate_mean"]:.4f} '
                     f'± {odo["snippet_ate_std"]:.4f} m')
        if 't_err_pct' in odo:
            text += (f'; KITTI segments: t_err {odo["t_err_pct"]:.2f} %, r_err '
                     f'{odo["r_err_deg_per_100m"]:.2f} deg/100 m')
        lines.append(text)
        for base, row in baselines.items():
            if name in (row.get('odometry') or {}):
                label = BASELINE_LABELS.get(base, base)
                lines.append(_ate_text(name, row['odometry'][name], label))
    return '\n'.join(lines)


def untrained_model(cfg, device='cpu'):
    """Build the network ``cfg`` trains from: seeded with ``cfg.train.seed``, no steps."""
    from fmdepth_ros.checkpoint import build_model
    from fmdepth_ros.trainer import seed_everything

    seed_everything(cfg.train.seed)
    return build_model(cfg).to(device).eval()


def evaluate_data(model, cfg, data, split_file=None, gt_path=None, refine_steps=0,
                  device='cpu', median_scaling=True, scale=1.0, max_samples=None,
                  intrinsics=None, odometry=True, progress=True, baselines=True,
                  depth_forward=None):
    """Depth metrics and ATE of ``model`` on the data directory ``data``; returns a dict.

    With ``baselines`` the same images and trajectories are also scored for the untrained
    network of ``cfg`` (:func:`untrained_model`) and for a constant guess (one depth for every
    pixel; one unit straight ahead per frame, :func:`constant_velocity`): ``results['baselines']
    = {'untrained': {'depth', 'odometry'}, 'constant': {'depth', 'odometry'}}``. The untrained
    row costs one more forward pass per image and per frame pair; the constant row nothing.
    ``depth_forward``: see :func:`evaluate_depth_dataset` (PoseNet stays the torch one).
    """
    from fmdepth_ros.data import make_dataset
    from fmdepth_ros.stereo import has_stereo, temporal_ids

    data_cfg = cfg
    if refine_steps == 0 and has_stereo(cfg.model.frame_ids):
        # Depth and PoseNet need no stereo frame: an MS checkpoint evaluates on mono data too.
        data_cfg = cfg.merged({'model': {'frame_ids': list(temporal_ids(cfg.model.frame_ids))}})
    dataset = make_dataset(data, data_cfg, split='test', split_file=split_file,
                           gt_path=gt_path, intrinsics=intrinsics)
    results = {}
    untrained = untrained_model(cfg, device) if baselines else None
    has_gt = any(src.has_depth(i) for src, i in dataset.samples)
    if has_gt:
        results['depth'] = evaluate_depth_dataset(
            model, cfg, dataset, refine_steps=refine_steps, device=device,
            median_scaling=median_scaling, scale=scale, max_samples=max_samples,
            progress=progress, depth_forward=depth_forward,
            baselines={'untrained': untrained.depth_net, 'constant': None} if baselines else None)
    sources = pose_sources(dataset) if odometry else []
    if sources:
        from fmdepth_ros.runtime.inference import PoseEstimator

        estimators = {'checkpoint': PoseEstimator(model.pose_net, cfg, device=device).estimate}
        if baselines:
            estimators['untrained'] = PoseEstimator(untrained.pose_net, cfg,
                                                    device=device).estimate
            estimators['constant'] = constant_velocity
        odometry_rows = {name: {} for name in estimators}
        for src in sources:
            label = os.path.basename(os.path.normpath(src.name)) or src.name
            for name, estimate in estimators.items():
                odometry_rows[name][label] = evaluate_trajectory(src, estimate,
                                                                 progress=progress)
        results['odometry'] = odometry_rows['checkpoint']
    if not results:
        raise ValueError(f'{data}: no ground truth to evaluate against (no depth maps or '
                         'velodyne scans, and no poses.txt)')
    if baselines:
        results['baselines'] = {
            name: {'depth': (results.get('depth') or {}).get('baselines', {}).get(name),
                   'odometry': odometry_rows[name] if sources else None}
            for name in ('untrained', 'constant')}
        if 'depth' in results:
            results['depth'].pop('baselines', None)
    return results

"""Photometric vs photometric + feature-metric optimisation of depth and pose on a synthetic scene.

The paper's key claim (Shu et al., ECCV 2020, Sec. 3): in textureless regions the photometric
loss has (almost) no gradient w.r.t. depth and pose, so gradient descent stalls there; a
feature-metric loss on features with large first-order and small second-order gradients
gives those pixels a slope towards the right depth.

The experiment, deterministic and CPU-only:

1. :func:`render_scene` ray-casts three views (target 0, sources -1 and +1) of a scene with
   exact depth: a textured back wall holding a large plain poster, a textured floor with a
   plain carpet, and a plain box. Plain surfaces have one constant colour (textureless).
2. :func:`optimise` fits a per-pixel log-depth of the target and the two 6-DoF source poses
   (initialised at a constant depth and at noisy true poses) with Adam, minimising either
   ``photometric (min over sources) + 1e-3 * smoothness`` or the same ``+ w * feature-metric``.
3. Depth is compared with the ground truth after per-image median scaling (monocular
   convention): AbsRel on textureless pixels, on textured pixels and everywhere.

Features: a FeatureNet trained by the paper's discriminative/convergent regularisers cannot be
trained to convergence within the CPU budget, so :func:`edge_distance_features` uses the
closed-form kind of feature those regularisers favour: inside flat image regions, the pixel
distances to the nearest image edge to the left, right, top and bottom. They grow linearly
(``|first-order gradient| = 1`` per pixel, second-order gradient 0) exactly where the image has
no gradient; the script prints their discriminative/convergent loss next to the raw image's.

Run: ``python -m fmdepth_ros.experiments.feature_metric_synthetic`` (table in
``docs/synthetic_experiment.md``).
"""

import argparse
from dataclasses import dataclass
import math
import sys
import time
from typing import Dict, List, Optional, Sequence

from fmdepth_ros import geometry, losses
import numpy as np
import torch
from torch import Tensor
import torch.nn.functional as F

__all__ = ['Scene', 'render_scene', 'edge_distance_features', 'optimise', 'depth_errors',
           'run_experiment', 'format_table', 'main']

_FLAT_COLOURS = {'poster': (0.80, 0.74, 0.58), 'carpet': (0.55, 0.30, 0.30),
                 'box': (0.35, 0.45, 0.70)}


@dataclass
class Scene:
    """Rendered views with exact geometry.

    Attributes:
        images: ``[3, 3, H, W]`` RGB in [0, 1]; index 0 = target, 1 = source -1, 2 = source +1.
        depth: ``[1, 1, H, W]`` target z-depth in metres.
        flat: ``[1, 1, H, W]`` bool, target pixels on textureless surfaces (away from their
            borders by 2 px).
        K: ``[1, 3, 3]`` pixel intrinsics.
        T_src_tgt: ``[2, 4, 4]`` true transforms target -> source for sources -1, +1.
    """

    images: Tensor
    depth: Tensor
    flat: Tensor
    K: Tensor
    T_src_tgt: Tensor


def _value_noise(rng: np.random.Generator, cells: int) -> Tensor:
    """Random grid ``[1, 3, cells, cells]`` for bilinear texture look-ups."""
    return torch.from_numpy(rng.uniform(0, 1, size=(1, 3, cells, cells)).astype(np.float32))


def _texture(grids: Sequence[Tensor], a: Tensor, b: Tensor, period: float) -> Tensor:
    """Multi-octave periodic-free texture at surface coordinates ``a, b`` (metres) -> ``[3, N]``.

    Octave k uses cell size ``period / 2**k``; look-ups wrap around the grid.
    """
    out = torch.zeros(3, a.numel())
    weight_sum = 0.0
    for k, grid in enumerate(grids):
        cells = grid.shape[-1]
        cell = period / 2 ** k
        ga = torch.remainder(a / (cell * cells), 1.0) * 2 - 1
        gb = torch.remainder(b / (cell * cells), 1.0) * 2 - 1
        pts = torch.stack([ga, gb], -1).view(1, 1, -1, 2)
        w = 0.6 ** k
        out += w * F.grid_sample(grid, pts, mode='bilinear', align_corners=False)[0, :, 0]
        weight_sum += w
    return out / weight_sum


def _cast(origin: Tensor, dirs: Tensor, grids: Dict[str, List[Tensor]]):
    """Intersect rays with the scene. ``dirs [3, N]`` world, camera-frame z component 1.

    Returns colour ``[3, N]``, ray parameter ``t [N]`` (= camera z-depth) and flat flag
    ``[N]`` (hit on a textureless surface, inner part).
    """
    n = dirs.shape[1]
    inf = torch.full((n,), float('inf'))
    # back wall z = 12 (always hit: rays look forward)
    t_wall = (12.0 - origin[2]) / dirs[2]
    # floor y = 1.6 (y down)
    t_floor = torch.where(dirs[1] > 1e-6, (1.6 - origin[1]) / dirs[1].clamp(min=1e-6), inf)
    # box front face z = 6, x in [1.0, 3.0], y in [-1.5, 1.6]
    t_box = (6.0 - origin[2]) / dirs[2]
    bx, by = origin[0] + t_box * dirs[0], origin[1] + t_box * dirs[1]
    t_box = torch.where((bx >= 1.0) & (bx <= 3.0) & (by >= -1.5) & (by <= 1.6), t_box, inf)
    t = torch.stack([t_wall, t_floor, t_box], 0)
    t_min, which = t.min(0)
    p = origin[:, None] + t_min * dirs                                  # 3 x N
    colour = torch.zeros(3, n)
    flat = torch.zeros(n, dtype=torch.bool)
    margin = 0.12  # metres; ~2 px, keeps anti-aliased borders out of the "flat" mask

    wall = which == 0
    colour[:, wall] = _texture(grids['wall'], p[0, wall], p[1, wall], 0.6)
    poster = wall & (p[0] >= -5.0) & (p[0] <= -0.5) & (p[1] >= -3.0) & (p[1] <= 0.5)
    colour[:, poster] = torch.tensor(_FLAT_COLOURS['poster'])[:, None]
    flat |= wall & (p[0] >= -5.0 + margin) & (p[0] <= -0.5 - margin) \
        & (p[1] >= -3.0 + margin) & (p[1] <= 0.5 - margin)

    floor = which == 1
    colour[:, floor] = _texture(grids['floor'], p[0, floor], p[2, floor], 0.6)
    carpet = floor & (p[0] >= -3.5) & (p[0] <= 0.5) & (p[2] >= 6.0) & (p[2] <= 9.5)
    colour[:, carpet] = torch.tensor(_FLAT_COLOURS['carpet'])[:, None]
    flat |= floor & (p[0] >= -3.5 + margin) & (p[0] <= 0.5 - margin) \
        & (p[2] >= 6.0 + 4 * margin) & (p[2] <= 9.5 - 4 * margin)

    box = which == 2
    colour[:, box] = torch.tensor(_FLAT_COLOURS['box'])[:, None]
    flat |= box & (p[0] >= 1.0 + margin) & (p[0] <= 3.0 - margin) & (p[1] >= -1.5 + margin)
    return colour, t_min, flat


def _pose(axisangle, translation) -> Tensor:
    """``T_world_cam [4, 4]`` float64 from a rotation vector and a camera centre (metres)."""
    aa = torch.tensor([axisangle], dtype=torch.float64)
    t = torch.tensor([translation], dtype=torch.float64)
    return geometry.pose_from_axisangle(aa, t)[0]


def render_scene(height: int = 96, width: int = 288, seed: int = 0,
                 supersample: int = 2) -> Scene:
    """Ray-cast the three views (see module docstring) with ``supersample**2`` rays per pixel.

    The cameras move laterally (+-0.3 m), a little forward/backward (+-0.15 m) and yaw
    +-1 degree; intrinsics ``fx = fy = 0.6 W``, principal point at the image centre.
    """
    rng = np.random.default_rng(seed)
    grids = {name: [_value_noise(rng, 64) for _ in range(3)] for name in ('wall', 'floor')}
    f = 0.6 * width
    K = torch.tensor([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    deg = math.pi / 180
    T_world = [torch.eye(4, dtype=torch.float64),
               _pose([0.0, 1.0 * deg, 0.0], [-0.3, 0.02, -0.15]),
               _pose([0.0, -1.0 * deg, 0.2 * deg], [0.3, -0.02, 0.15])]
    offsets = (torch.arange(supersample, dtype=torch.float32) + 0.5) / supersample - 0.5
    images = []
    depth = flat = None
    for view, T in enumerate(T_world):
        R, c = T[:3, :3].float(), T[:3, 3].float()
        acc = torch.zeros(3, height * width)
        for dv in offsets:
            for du in offsets:
                pix = geometry.pixel_grid(height, width)
                pix[0] += du
                pix[1] += dv
                dirs = R @ (torch.linalg.inv(K) @ pix)
                colour, _, _ = _cast(c, dirs, grids)
                acc += colour
        images.append((acc / supersample ** 2).view(3, height, width))
        if view == 0:
            dirs = torch.linalg.inv(K) @ geometry.pixel_grid(height, width)
            _, t, is_flat = _cast(c, dirs, grids)
            depth = t.view(1, 1, height, width)
            flat = is_flat.view(1, 1, height, width)
    T_src_tgt = torch.stack([geometry.invert_pose(T_world[i][None])[0] for i in (1, 2)]).float()
    return Scene(torch.stack(images), depth, flat, K[None], T_src_tgt)


def edge_distance_features(images: Tensor, threshold: float = 0.01,
                           max_distance: float = 64.0, scale: float = 0.125) -> Tensor:
    """Directional distance-to-edge features, a fixed stand-in for FeatureNet features.

    A pixel is an *edge* when the largest absolute forward/backward difference to a
    4-neighbour, over the colour channels, exceeds ``threshold``. For every pixel the features
    are its distances (pixels, clipped at ``max_distance``) to the nearest edge pixel to the
    left, right, above and below, times ``scale``. In textured areas they are ~0; inside flat
    areas they are ramps with ``|first-order gradient| = scale`` and zero second-order gradient,
    which is what the discriminative (large 1st order) and convergent (small 2nd order)
    regularisers of FeatureNet ask for.

    Args:
        images: ``[B, 3, H, W]`` in [0, 1].

    Returns:
        ``[B, 4, H, W]`` float32.
    """
    x = images.detach()
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().amax(1)                  # B x H x W-1
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().amax(1)                  # B x H-1 x W
    edge = torch.zeros(x.shape[0], x.shape[2], x.shape[3], dtype=torch.bool)
    edge[..., :, 1:] |= dx > threshold
    edge[..., :, :-1] |= dx > threshold
    edge[..., 1:, :] |= dy > threshold
    edge[..., :-1, :] |= dy > threshold
    feats = [_distance_along(edge, dim=2, reverse=False, cap=max_distance),
             _distance_along(edge, dim=2, reverse=True, cap=max_distance),
             _distance_along(edge, dim=1, reverse=False, cap=max_distance),
             _distance_along(edge, dim=1, reverse=True, cap=max_distance)]
    return torch.stack(feats, 1) * scale


def _distance_along(edge: Tensor, dim: int, reverse: bool, cap: float) -> Tensor:
    """Distance (pixels) to the previous edge pixel along ``dim`` (``cap`` when none)."""
    if reverse:
        edge = edge.flip(dim)
    n = edge.shape[dim]
    shape = [1, 1, 1]
    shape[dim] = n
    idx = torch.arange(n, dtype=torch.float32).view(shape).expand(edge.shape)
    last = torch.where(edge, idx, torch.full_like(idx, -1e6))
    last = torch.cummax(last, dim)[0]
    dist = (idx - last).clamp(max=cap)
    return dist.flip(dim) if reverse else dist


def depth_errors(depth: Tensor, gt: Tensor, masks: Dict[str, Tensor]) -> Dict[str, float]:
    """Median-scaled AbsRel per mask, plus overall RMSE (metres)."""
    ratio = gt.median() / depth.median()
    scaled = depth * ratio
    out = {}
    for name, mask in masks.items():
        out[f'absrel_{name}'] = float(((scaled - gt).abs() / gt)[mask].mean())
    out['rmse'] = float(torch.sqrt(((scaled - gt) ** 2).mean()))
    return out


def optimise(scene: Scene, fm_weight: float = 0.0, iterations: int = 300, lr: float = 0.05,
             pose_lr: float = 2e-3, init_depth: float = 8.0, smoothness_weight: float = 1e-3,
             pose_noise: float = 0.03, param_stride: int = 4, seed: int = 0) -> Dict[str, object]:
    """Fit target log-depth and source poses; ``fm_weight = 0`` is the photometric baseline.

    Returns:
        dict with ``depth [1, 1, H, W]`` (metres, before scaling), ``pose_error`` (mean
        translation error, metres), ``seconds`` and the final loss terms.
    """
    gen = torch.Generator().manual_seed(seed)
    images, K = scene.images, scene.K
    target, sources = images[:1], images[1:]
    _, _, h, w = images.shape
    # log-depth on a grid ``param_stride`` times coarser, bilinearly upsampled to H x W
    log_depth = torch.full((1, 1, h // param_stride, w // param_stride), math.log(init_depth),
                           requires_grad=True)
    true_aa, true_t = _pose_params(scene.T_src_tgt)
    aa = (true_aa + 0.2 * pose_noise * torch.randn(true_aa.shape, generator=gen)).requires_grad_()
    t = (true_t + pose_noise * torch.randn(true_t.shape, generator=gen)).requires_grad_()
    feats = edge_distance_features(images) if fm_weight > 0 else None
    opt = torch.optim.Adam([{'params': [log_depth], 'lr': lr},
                            {'params': [aa, t], 'lr': pose_lr}])
    start = time.perf_counter()
    terms = {}
    for _ in range(iterations):
        depth = _upsample(log_depth, h, w).exp()
        T = geometry.pose_from_axisangle(aa, t)                           # 2 x 4 x 4
        errors = []
        for i in range(2):
            warped, _ = geometry.warp(sources[i:i + 1], depth, T[i:i + 1], K)
            errors.append(losses.photometric_error(warped, target))
        photo = losses.min_reprojection(errors)[0].mean()
        smooth = losses.smoothness_loss(1.0 / depth, target)
        loss = photo + smoothness_weight * smooth
        terms = {'photometric': float(photo.detach()), 'smoothness': float(smooth.detach())}
        if feats is not None:
            warped_f = [geometry.warp(feats[i + 1:i + 2], depth, T[i:i + 1], K)[0]
                        for i in range(2)]
            fm = losses.feature_metric_loss(feats[:1], warped_f)
            loss = loss + fm_weight * fm
            terms['feature_metric'] = float(fm.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    pose_error = float((t.detach() - true_t).norm(dim=1).mean())
    return {'depth': _upsample(log_depth.detach(), h, w).exp(), 'pose_error': pose_error,
            'seconds': seconds, **terms}


def _upsample(x: Tensor, h: int, w: int) -> Tensor:
    """Bilinear resize ``[B, C, h', w']`` -> ``[B, C, h, w]`` (identity when equal)."""
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode='bilinear', align_corners=False)


def _pose_params(T: Tensor):
    """Axis-angle ``[N, 3]`` and translation ``[N, 3]`` of rigid transforms ``[N, 4, 4]``."""
    from kornia.geometry.conversions import rotation_matrix_to_axis_angle
    return rotation_matrix_to_axis_angle(T[:, :3, :3].contiguous()), T[:, :3, 3].clone()


def run_experiment(seeds: Sequence[int] = (0, 1, 2), fm_weights: Sequence[float] = (0.05,),
                   iterations: int = 300, height: int = 96, width: int = 288,
                   smoothness_weight: float = 1e-3, log=None) -> List[Dict[str, object]]:
    """Run the baseline and each feature-metric weight for every scene seed; one row per run."""
    rows = []
    for seed in seeds:
        scene = render_scene(height, width, seed=seed)
        masks = {'flat': scene.flat, 'textured': ~scene.flat,
                 'all': torch.ones_like(scene.flat)}
        init_err = depth_errors(torch.full_like(scene.depth, 8.0), scene.depth, masks)
        rows.append({'seed': seed, 'method': 'initial depth (constant)', 'fm_weight': None,
                     **init_err, 'pose_error': float('nan'), 'seconds': 0.0})
        for weight in (0.0,) + tuple(fm_weights):
            result = optimise(scene, fm_weight=weight, iterations=iterations, seed=seed,
                              smoothness_weight=smoothness_weight)
            name = 'photometric + smoothness' if weight == 0 else 'photometric + smoothness + FM'
            row = {'seed': seed, 'method': name, 'fm_weight': weight,
                   **depth_errors(result['depth'], scene.depth, masks),
                   'pose_error': result['pose_error'], 'seconds': result['seconds']}
            rows.append(row)
            if log:
                log(f"seed {seed} {name} (w={weight}): AbsRel flat {row['absrel_flat']:.4f} "
                    f"textured {row['absrel_textured']:.4f} all {row['absrel_all']:.4f} "
                    f"({row['seconds']:.1f} s)")
    return rows


def feature_regulariser_report(height: int = 96, width: int = 288) -> Dict[str, Dict[str, float]]:
    """Discriminative / convergent losses (unweighted) of raw RGB vs the edge-distance features."""
    scene = render_scene(height, width, seed=0)
    image = scene.images[:1]
    out = {}
    for name, feat in (('raw RGB', image), ('edge-distance features',
                                            edge_distance_features(image))):
        out[name] = {'discriminative': float(losses.discriminative_loss(feat, image)),
                     'convergent': float(losses.convergent_loss(feat, image))}
    return out


def format_table(rows: List[Dict[str, object]]) -> str:
    """Markdown table: mean (and per-seed values) of each method's errors."""
    methods = []
    for row in rows:
        key = (row['method'], row['fm_weight'])
        if key not in methods:
            methods.append(key)
    lines = ['| method | FM weight | AbsRel textureless | AbsRel textured | AbsRel all | '
             'RMSE (m) | pose err (m) | seeds |',
             '|---|---|---|---|---|---|---|---|']
    for method, weight in methods:
        sel = [r for r in rows if r['method'] == method and r['fm_weight'] == weight]

        def mean(key):
            return float(np.mean([r[key] for r in sel]))

        flat_vals = ', '.join(f"{r['absrel_flat']:.3f}" for r in sel)
        lines.append(f"| {method} | {'-' if weight is None else weight} | "
                     f"**{mean('absrel_flat'):.3f}** ({flat_vals}) | "
                     f"{mean('absrel_textured'):.3f} | {mean('absrel_all'):.3f} | "
                     f"{mean('rmse'):.3f} | "
                     f"{'-' if weight is None else format(mean('pose_error'), '.4f')} | "
                     f'{len(sel)} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: run the experiment and print the markdown table."""
    parser = argparse.ArgumentParser(
        prog='python -m fmdepth_ros.experiments.feature_metric_synthetic',
        description='Photometric vs photometric + feature-metric depth/pose optimisation '
                    'on a synthetic scene with textureless regions (CPU).')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--fm-weights', type=float, nargs='+', default=[0.05])
    parser.add_argument('--iterations', type=int, default=300)
    parser.add_argument('--height', type=int, default=96)
    parser.add_argument('--width', type=int, default=288)
    parser.add_argument('--smoothness-weight', type=float, default=1e-3,
                        help='edge-aware smoothness weight (paper: 1e-3)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (1 is fastest on small shared CPUs)')
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.height < 16 or args.width < 16:
        parser.error('need --iterations >= 1 and --height/--width >= 16')
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    for name, vals in feature_regulariser_report(args.height, args.width).items():
        print(f"{name}: discriminative {vals['discriminative']:.4f}, "
              f"convergent {vals['convergent']:.4f}")
    rows = run_experiment(args.seeds, args.fm_weights, args.iterations, args.height,
                          args.width, args.smoothness_weight,
                          log=lambda msg: print(msg, flush=True))
    print()
    print(format_table(rows))
    print(f'\ntotal time {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""``fmdepth evaluate --data``: Eigen depth metrics and ATE (:mod:`fmdepth_ros.evaluation`).

The ROS tools layer registers ``evaluate`` (:mod:`fmdepth_ros.ros.tools.evaluate`): it adds
``--bag`` (the node run on a bag) and hands ``--data`` to :func:`run` here.
"""

import argparse
import os
import sys
import time

from fmdepth_ros import evaluation
from fmdepth_ros.atomic_io import write_json_atomic
from fmdepth_ros.data import is_bag
from fmdepth_ros.errors import CliError

HELP = 'KITTI Eigen depth metrics and odometry ATE'
SCALINGS = ('median', 'stereo', 'none', 'fixed')


def configure_parser(parser):
    """Add the ``fmdepth evaluate`` arguments."""
    add_data_argument(parser, required=True)
    add_common_arguments(parser)


def add_data_argument(container, required):
    """Add ``--data`` to a parser or a (mutually exclusive) argument group."""
    container.add_argument('--data', required=required,
                           help='KITTI raw root, synthetic sequence or folder of frames')


def add_common_arguments(parser):
    """Add every ``fmdepth evaluate`` argument but ``--data`` (and the ROS layer's ``--bag``)."""
    parser.add_argument('--checkpoint', required=True, help='checkpoint file (fmdepth format)')
    parser.add_argument('--split', default=None,
                        help='test split: a shipped name (eigen: the 697-frame Eigen test '
                             'list, odom_09, odom_10) or a file (KITTI "folder frame side" '
                             'lines; for folders: frame names)')
    parser.add_argument('--gt-depths', default=None,
                        help='KITTI gt_depths.npz aligned with --split (default: the one '
                             'beside the split file, else velodyne projection)')
    parser.add_argument('--refine-steps', type=int, default=0,
                        help='online refinement iterations per test sample (paper: 20)')
    parser.add_argument('--refine-target', choices=('all', 'decoder'), default='all',
                        help='what refinement updates: all = DepthNet + PoseNet (default, the '
                             'official code), decoder = the depth decoder only')
    parser.add_argument('--refine-lr', type=float, default=1e-4,
                        help='Adam learning rate of the refinement (default 1e-4, official)')
    parser.add_argument('--json', default=None, help='write the results to this JSON file')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--scaling', choices=SCALINGS, default='median',
                        help='median: per-image median scaling (monocular, default); stereo: '
                             'the fixed metric factor of a stereo (MS) checkpoint, '
                             'model.stereo_baseline_m / model.stereo_translation of its '
                             'config (official MS: 0.54 / 0.015 = 36); none: depth as '
                             'predicted; fixed: multiply by --scale')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='fixed depth scale for --scaling fixed')
    parser.add_argument('--max-samples', type=int, default=None,
                        help='evaluate only the first N depth samples')
    parser.add_argument('--intrinsics', type=float, nargs=4, default=None,
                        metavar=('FX', 'FY', 'CX', 'CY'),
                        help='intrinsics of a folder of frames without calibration file')
    parser.add_argument('--no-odometry', action='store_true', help='skip the ATE evaluation')
    parser.add_argument('--backend', default='torch',
                        choices=('torch', 'onnxruntime', 'openvino', 'tensorrt'),
                        help='--data: run the DepthNet on this backend (its ONNX export; '
                             'default torch, the checkpoint as trained); with --bag use '
                             '--param backend:=B')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'fp16', 'bf16', 'int8'),
                        help='--data with --backend: the backend precision (int8 needs '
                             '--calibration)')
    parser.add_argument('--calibration', default=None, metavar='DIR',
                        help='int8: folder of camera images calibrating the quantised graph '
                             '(use frames other than the evaluated ones)')
    parser.add_argument('--baselines', action=argparse.BooleanOptionalAction, default=True,
                        help='also score the untrained network of the same config and seed and '
                             'a constant guess (depth: one value per image after median '
                             'scaling; odometry: straight ahead at constant speed) in the same '
                             'table (default on; costs one more forward pass per image and '
                             'frame pair)')


def _resolve_device(requested):
    from fmdepth_ros.runtime.inference import select_device

    try:
        device, warning = select_device(requested)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if warning:
        print(f'fmdepth evaluate: warning: {warning}', file=sys.stderr)
    return device


def _load_model(path, device):
    from fmdepth_ros.checkpoint import CheckpointError, load_checkpoint

    if not os.path.isfile(path):
        raise CliError(f'--checkpoint: no such file: {path}')
    try:
        return load_checkpoint(path, map_location=device)
    except CheckpointError as exc:
        raise CliError(str(exc)) from None


def depth_scale(scaling, scale, cfg):
    """``(median_scaling, fixed scale, label)`` of ``--scaling`` for a checkpoint's ``cfg``."""
    from fmdepth_ros.stereo import has_stereo, stereo_depth_factor

    if scaling == 'median':
        return True, 1.0, 'median'
    if scaling == 'none':
        return False, 1.0, 'none'
    if scaling == 'fixed':
        if not scale > 0:
            raise CliError(f'--scale must be > 0, got {scale}')
        return False, float(scale), f'fixed x{scale}'
    if not has_stereo(cfg.model.frame_ids):
        raise CliError('--scaling stereo: the checkpoint was not trained with stereo pairs '
                       f"(frame_ids {tuple(cfg.model.frame_ids)} has no 's'); use median")
    factor = stereo_depth_factor(cfg.model.stereo_translation, cfg.model.stereo_baseline_m)
    return False, factor, f'stereo x{factor:g}'


def run(args):
    """Evaluate a checkpoint on ``--data``; print the table, optionally write JSON; exit code."""
    if args.refine_steps < 0:
        raise CliError(f'--refine-steps must be >= 0, got {args.refine_steps}')
    if not args.refine_lr > 0:
        raise CliError(f'--refine-lr must be > 0, got {args.refine_lr}')
    if args.max_samples is not None and args.max_samples < 1:
        raise CliError(f'--max-samples must be >= 1, got {args.max_samples}')
    if not os.path.isfile(args.checkpoint):
        raise CliError(f'--checkpoint: no such file: {args.checkpoint}')
    if os.path.exists(args.data) and is_bag(args.data):
        raise CliError(f'--data {args.data} is a bag: bags are evaluated by running the node '
                       '(fmdepth evaluate --bag, with ROS 2 installed)')
    if not os.path.exists(args.data):
        raise CliError(f'--data: no such file or directory: {args.data}')
    if args.split is not None:
        from fmdepth_ros.data.splits import resolve_split
        try:
            args.split = resolve_split(args.split, 'test')
        except ValueError as exc:
            raise CliError(f'--split: {exc}') from None
    if args.gt_depths is not None and not os.path.isfile(args.gt_depths):
        raise CliError(f'--gt-depths: no such file: {args.gt_depths}')
    device = _resolve_device(args.device)
    model, cfg, info = _load_model(args.checkpoint, device)
    cfg = cfg.merged({'refine': {'target': args.refine_target, 'lr': args.refine_lr}})
    median_scaling, scale, scaling = depth_scale(args.scaling, args.scale, cfg)
    depth_forward, backend = _backend_forward(args, model, cfg, device)
    start = time.perf_counter()
    try:
        results = evaluation.evaluate_data(
            model, cfg, args.data, split_file=args.split, gt_path=args.gt_depths,
            refine_steps=args.refine_steps, device=device,
            median_scaling=median_scaling, scale=scale,
            max_samples=args.max_samples, intrinsics=args.intrinsics,
            odometry=not args.no_odometry, progress=sys.stderr.isatty(),
            baselines=args.baselines, depth_forward=depth_forward)
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    results.update(checkpoint=os.path.abspath(args.checkpoint), step=info.get('step', 0),
                   data=os.path.abspath(args.data), split=args.split,
                   refine_steps=args.refine_steps, device=str(device),
                   refine_target=args.refine_target, refine_lr=args.refine_lr,
                   scaling=scaling, backend=backend,
                   seconds=round(time.perf_counter() - start, 3))
    if depth_forward is not None:
        print(f'checkpoint row: DepthNet on {backend} (PoseNet and baselines: torch)')
    print(evaluation.format_table(results))
    if args.json:
        write_json_atomic(args.json, results)
        print(f'wrote {args.json}')
    return 0


def _backend_forward(args, model, cfg, device):
    """``(depth_forward or None, description)`` of ``--backend`` / ``--precision``.

    ``depth_forward(image [1,3,h,w]) -> {0: disp}`` runs the checkpoint's DepthNet through the
    backend's engine, as the node would; None keeps the torch checkpoint.
    """
    backend = getattr(args, 'backend', 'torch')
    precision = getattr(args, 'precision', 'fp32')
    if backend == 'torch':
        if precision != 'fp32':
            raise CliError('--precision applies to --backend onnxruntime, openvino or tensorrt')
        return None, 'torch fp32'
    if args.refine_steps > 0:
        raise CliError('--refine-steps refines the torch network: use --backend torch')
    calibration = None
    if precision == 'int8':
        from fmdepth_ros.commands.predict import int8_calibration
        calibration = int8_calibration(getattr(args, 'calibration', None), cfg)
    from fmdepth_ros.errors import BackendUnavailable
    from fmdepth_ros.runtime.backends import build_predictor, engine_options
    try:
        predictor = build_predictor(model.depth_net, cfg, backend, device, precision,
                                    engine_options=engine_options(args.checkpoint, calibration))
    except BackendUnavailable as exc:     # no silent fallback: the table names its backend
        raise CliError(f'--backend {backend} {precision}: {exc}') from None
    engine = predictor.engine

    def depth_forward(image):
        return {0: engine(image)}
    return depth_forward, engine.describe()

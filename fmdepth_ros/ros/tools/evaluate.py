"""``fmdepth evaluate``, as registered by the ROS tools layer: ``--data`` or ``--bag``.

``--data`` is the core command (:mod:`fmdepth_ros.commands.evaluate`, no ROS). ``--bag`` runs
the ``fmdepth`` node in-process on the bag (:func:`fmdepth_ros.ros.tools.record.record_bag`,
lock-step, every frame answered), stores its depth images and odometry in a bag (kept with
``output=``, else a temporary one) and scores that recording against the bag's ground truth
(:func:`fmdepth_ros.bag_eval.evaluate_bag`). A bag given as ``--data`` is evaluated as
``--bag``. rclpy is imported only when a bag is evaluated.

``--passes N`` plays the bag N times through one node (refinement carries over) and scores each
pass; with refinement on, lock-step playback also waits for the node's refiner after every
frame (``--no-refine-sync`` to let it run freely), so the per-pass numbers do not depend on
the machine's speed. ``--untrained`` starts the node from the untrained network of the
checkpoint's config and seed instead of the checkpoint's weights.
"""

import argparse
import os
from pathlib import Path
import shutil
import tempfile
from typing import Dict

from fmdepth_ros import bag_eval
from fmdepth_ros.commands import evaluate as core_evaluate
from fmdepth_ros.data import is_bag
from fmdepth_ros.errors import BagError, CliError

HELP = core_evaluate.HELP + '; --bag: of the node run on a bag'


def configure_parser(parser):
    """Add the core ``fmdepth evaluate`` arguments with ``--data`` or ``--bag``."""
    source = parser.add_mutually_exclusive_group(required=True)
    core_evaluate.add_data_argument(source, required=False)
    source.add_argument('--bag', help='rosbag2 bag (image + camera_info, optional GT topics): '
                                      'runs the node on it')
    core_evaluate.add_common_arguments(parser)
    bag_only = parser.add_argument_group('--bag only')
    bag_only.add_argument('--passes', type=int, default=1,
                          help='play the bag N times through the same node and score each '
                               'pass (online refinement carries over)')
    bag_only.add_argument('--refine-sync', action=argparse.BooleanOptionalAction, default=True,
                          help='with --refine-steps: wait for the refiner after every frame '
                               '(default; results independent of machine speed)')
    bag_only.add_argument('--untrained', action='store_true',
                          help="start from the untrained network of the checkpoint's config "
                               'and seed (random weights) instead of its weights')
    bag_only.add_argument('--param', nargs='+', default=[], metavar='NAME:=VALUE',
                          help='node parameters, e.g. refine_lr:=1e-4 refine_target:=all')


def evaluate_bag(checkpoint, bag, refine_steps=0, json_path=None, output=None,
                 node_parameters=None, log=print, passes=1, refine_sync=True,
                 **scoring) -> Dict:
    """Run the node on ``bag``, record its outputs and score them (see the module docstring).

    Args:
        checkpoint: node weights (None/'' = random initialisation).
        bag: input bag with camera, camera_info, /tf_static and ground truth.
        refine_steps: > 0 turns on the node's online refinement with this many iterations
            per window (background thread: results depend on the machine's speed).
        json_path: write the result dict there (atomically).
        output: keep the recording at this path (default: a temporary folder, deleted).
        node_parameters: further node parameters.
        log: callable(str) for progress.
        passes: play the bag this many times through one node; > 1 scores every pass
            (``result['passes']``, one dict per pass; the top-level ``depth`` / ``odometry``
            are the last pass's).
        refine_sync: with refinement, lock-step playback waits for the refiner per frame.
        scoring: ``gt_tolerance_s``, ``max_depth``, ``garg_crop`` of
            :func:`fmdepth_ros.bag_eval.evaluate_bag`.

    Returns:
        the dict of :func:`fmdepth_ros.bag_eval.evaluate_bag`.
    """
    from fmdepth_ros.ros.tools.record import record_passes

    if refine_steps < 0:
        raise BagError('refine_steps must be >= 0')
    if passes < 1:
        raise BagError(f'passes must be >= 1, got {passes}')
    params = dict(node_parameters or {})
    if refine_steps > 0:
        params.update(refine=True, refine_iterations=int(refine_steps))
    tmp_dir = None
    try:
        if output is None:
            tmp_dir = tempfile.mkdtemp(prefix='fmdepth_eval_')
            output = Path(tmp_dir) / 'record'
        log(f'running the fmdepth node on {bag} ...')
        records = record_passes(bag, output, passes, checkpoint=checkpoint or None,
                                node_parameters=params, log=log,
                                refine_sync=refine_sync and bool(params.get('refine')))
        if passes == 1:
            rec = records[0]
            return bag_eval.evaluate_bag(
                checkpoint, bag, output, refine_steps=refine_steps, json_path=json_path,
                frames_in=rec.frames_in, frames_answered=rec.frames_in - len(rec.missing),
                temporary_predictions=tmp_dir is not None, log=log, **scoring)
        rows = []
        for k, rec in enumerate(records, 1):
            row = bag_eval.evaluate_bag(
                checkpoint, bag, rec.out_bag, refine_steps=refine_steps, frames_in=rec.frames_in,
                frames_answered=rec.frames_in - len(rec.missing),
                temporary_predictions=tmp_dir is not None, log=lambda text: None, **scoring)
            row.update(pass_index=k, wall_s=round(rec.wall_s, 2), refiner=_refiner_counts(
                rec.refiner, rows[-1]['refiner'] if rows else None))
            rows.append(row)
        result = dict(rows[-1], passes=rows, node_parameters=params,
                      refine_sync=bool(refine_sync))
        result.pop('pass_index')
        log(format_passes(result))
        if json_path:
            from fmdepth_ros.atomic_io import write_json_atomic
            write_json_atomic(json_path, result)
        return result
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)


REFINER_COUNTERS = ('processed', 'static', 'improved', 'reverted', 'swaps', 'dropped',
                    'errors')


def _refiner_counts(stats, previous) -> Dict:
    """Return the refiner counters of one pass (the node's counters run over all passes)."""
    if not stats:
        return {}
    out = {k: int(stats.get(k, 0)) - int((previous or {}).get(f'{k}_total', 0))
           for k in REFINER_COUNTERS}
    out.update({f'{k}_total': int(stats.get(k, 0)) for k in REFINER_COUNTERS})
    out['last_seconds'] = stats.get('last_seconds')
    return out


def format_passes(result) -> str:
    """One line per pass: depth metrics against the bag's ground truth and refiner counters."""
    lines = [f"bag {result['bag']}: {len(result['passes'])} passes through one node"]
    names = ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'a1')
    lines.append(f'{"pass":>4}  ' + '  '.join(f'{n:>8}' for n in names)
                 + '  windows  static  swaps  reverted  wall_s')
    for row in result['passes']:
        depth, ref = row.get('depth') or {}, row.get('refiner') or {}
        values = '  '.join(f'{depth[n]:8.4f}' if n in depth else f'{"-":>8}' for n in names)
        lines.append(f'{row["pass_index"]:>4}  {values}  {ref.get("processed", 0):>7}  '
                     f'{ref.get("static", 0):>6}  {ref.get("swaps", 0):>5}  '
                     f'{ref.get("reverted", 0):>8}  '
                     f'{row["wall_s"]:>6.1f}')
    return '\n'.join(lines)


def run(args):
    """Evaluate ``--bag`` through the node, or ``--data`` with the core command."""
    bag = args.bag
    if bag is None and os.path.exists(args.data) and is_bag(args.data):
        bag = args.data   # a bag given as --data is evaluated the bag way
    if bag is None:
        return core_evaluate.run(args)
    if args.refine_steps < 0:
        raise CliError(f'--refine-steps must be >= 0, got {args.refine_steps}')
    if not os.path.isfile(args.checkpoint):
        raise CliError(f'--checkpoint: no such file: {args.checkpoint}')
    if not os.path.exists(bag):
        raise CliError(f'--bag: no such file or directory: {bag}')
    if args.passes < 1:
        raise CliError(f'--passes must be >= 1, got {args.passes}')
    from fmdepth_ros.ros.tools.record import parse_param_values

    params = parse_param_values(args.param)
    tmp_dir = tempfile.mkdtemp(prefix='fmdepth_untrained_') if args.untrained else None
    try:
        checkpoint = args.checkpoint
        if args.untrained:
            checkpoint = _untrained_checkpoint(args.checkpoint, Path(tmp_dir) / 'untrained.pt')
        evaluate_bag(checkpoint, bag, args.refine_steps, args.json,   # prints its table
                     node_parameters=params, passes=args.passes,
                     refine_sync=args.refine_sync)
    except ImportError as exc:
        raise CliError(f'evaluating a bag runs the fmdepth node, but ROS 2 is not importable '
                       f'({exc}); run scripts/setup_env.sh') from None
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return 0


def _untrained_checkpoint(checkpoint, path) -> str:
    """Save the untrained network of ``checkpoint``'s config and seed to ``path``."""
    from fmdepth_ros.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from fmdepth_ros.evaluation import untrained_model

    try:
        _, cfg, _ = load_checkpoint(checkpoint, map_location='cpu')
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    save_checkpoint(path, untrained_model(cfg), cfg, step=0)
    return str(path)

"""``fmdepth evaluate``, as registered by the ROS tools layer: ``--data`` or ``--bag``.

``--data`` is the core command (:mod:`fmdepth_ros.commands.evaluate`, no ROS). ``--bag`` runs
the ``fmdepth`` node in-process on the bag (:func:`fmdepth_ros.ros.tools.record.record_bag`,
lock-step, every frame answered), stores its depth images and odometry in a bag (kept with
``output=``, else a temporary one) and scores that recording against the bag's ground truth
(:func:`fmdepth_ros.bag_eval.evaluate_bag`). A bag given as ``--data`` is evaluated as
``--bag``. rclpy is imported only when a bag is evaluated.
"""

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


def evaluate_bag(checkpoint, bag, refine_steps=0, json_path=None, output=None,
                 node_parameters=None, log=print, **scoring) -> Dict:
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
        scoring: ``gt_tolerance_s``, ``max_depth``, ``garg_crop`` of
            :func:`fmdepth_ros.bag_eval.evaluate_bag`.

    Returns:
        the dict of :func:`fmdepth_ros.bag_eval.evaluate_bag`.
    """
    from fmdepth_ros.ros.tools.record import record_bag

    if refine_steps < 0:
        raise BagError('refine_steps must be >= 0')
    params = dict(node_parameters or {})
    if refine_steps > 0:
        params.update(refine=True, refine_iterations=int(refine_steps))
    tmp_dir = None
    try:
        if output is None:
            tmp_dir = tempfile.mkdtemp(prefix='fmdepth_eval_')
            output = Path(tmp_dir) / 'record'
        log(f'running the fmdepth node on {bag} ...')
        rec = record_bag(bag, output, checkpoint=checkpoint or None, node_parameters=params,
                         log=log)
        return bag_eval.evaluate_bag(
            checkpoint, bag, output, refine_steps=refine_steps, json_path=json_path,
            frames_in=rec.frames_in, frames_answered=rec.frames_in - len(rec.missing),
            temporary_predictions=tmp_dir is not None, log=log, **scoring)
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)


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
    try:
        evaluate_bag(args.checkpoint, bag, args.refine_steps, args.json)   # prints its table
    except ImportError as exc:
        raise CliError(f'evaluating a bag runs the fmdepth node, but ROS 2 is not importable '
                       f'({exc}); run scripts/setup_env.sh') from None
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    return 0

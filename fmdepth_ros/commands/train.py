r"""``fmdepth train``: self-supervised training, single process or multi-GPU via ``torchrun``.

Examples::

    fmdepth train --data kitti_raw --split eigen_zhou --config config/featdepth_kitti.yaml \\
        --out runs/kitti
    fmdepth train --data runs/kitti_synth --config config/synthetic_cpu.yaml --out runs/s \\
        --max-steps 300 --feature-steps 50
    torchrun --nproc_per_node 8 -m fmdepth_ros.cli train --data kitti_raw --split eigen_zhou \\
        --out runs/kitti8

Ctrl-C (SIGINT) or SIGTERM saves ``RUN_DIR/checkpoint.pt`` and exits with code 130; the run
continues bit-exactly with ``--resume``. See docs/training.md.
"""

import logging
import os
import signal
import sys

from fmdepth_ros.errors import CliError

HELP = 'train FeatureNet, then DepthNet+PoseNet, self-supervised'

LOG = logging.getLogger(__name__)


def configure_parser(parser):
    """Add the ``fmdepth train`` arguments to ``parser``."""
    parser.add_argument('--data', required=True,
                        help='KITTI raw root, `fmdepth synth` sequence, folder of frames or bag')
    parser.add_argument('--config', default=None,
                        help='YAML config (missing keys take the paper defaults)')
    parser.add_argument('--out', required=True, help='run directory (checkpoint, config, tb/)')
    parser.add_argument('--max-steps', type=int, default=None,
                        help='stop at this global optimisation step (both stages count)')
    parser.add_argument('--device', choices=('cpu', 'cuda', 'auto'), default='auto',
                        help='training device (default: cuda when available)')
    parser.add_argument('--resume', action='store_true',
                        help='continue bit-exactly from RUN_DIR/checkpoint.pt')
    parser.add_argument('--stage', choices=('feature', 'depth', 'both'), default='both',
                        help='feature: FeatureNet only; depth: DepthNet+PoseNet only; both')
    parser.add_argument('--feature-steps', type=int, default=None,
                        help='length of the FeatureNet stage in steps (default: config)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='length of the depth stage in epochs (default: config '
                             'train.epochs; e.g. the offline refinement protocol)')
    parser.add_argument('--init', default=None, metavar='CKPT',
                        help='start from the weights of this checkpoint (e.g. a feature run)')
    split = parser.add_mutually_exclusive_group()
    split.add_argument('--split', '--split-file', dest='split', default=None,
                       help='training split: a shipped name (eigen_zhou, odom) or a file '
                            '(KITTI "folder frame side" lines; for a folder of frames, a list '
                            'of frame names). Required for a KITTI raw root unless --no-split')
    split.add_argument('--no-split', action='store_true',
                       help='train a KITTI raw root on every drive in it (this includes the '
                            'Eigen test drives when the root is the full KITTI raw set)')
    parser.add_argument('--intrinsics', type=float, nargs=4, default=None,
                        metavar=('FX', 'FY', 'CX', 'CY'),
                        help="pixel intrinsics of a folder's frames (overrides its calib files)")
    parser.add_argument('--log-every', type=int, default=None,
                        help='TensorBoard scalar interval in steps (default: config)')
    parser.add_argument('--checkpoint-every', type=int, default=None,
                        help='checkpoint interval in steps (default: config; 0: end only)')
    parser.add_argument('--image-every', type=int, default=None,
                        help='TensorBoard image interval in steps (default: 25 x log-every)')
    parser.add_argument('--num-workers', type=int, default=None,
                        help='data loader workers per process (default: config)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='images per process (default: config; paper: 2 per GPU)')
    parser.add_argument('--find-unused-parameters', action='store_true',
                        help='DistributedDataParallel option, for modified networks')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def resolve_device(requested):
    """'auto' | 'cpu' | 'cuda' -> 'cpu' or 'cuda'; CUDA requested but absent is a CliError."""
    import torch
    if requested == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if requested == 'cuda' and not torch.cuda.is_available():
        raise CliError('--device cuda: no CUDA device is available (use --device cpu)')
    return requested


def _load_cfg(args):
    from fmdepth_ros.config import load_config
    overrides = {'train': {}}
    if args.num_workers is not None:
        overrides['train']['num_workers'] = args.num_workers
    if args.batch_size is not None:
        overrides['train']['batch_size'] = args.batch_size
    if args.epochs is not None:
        if args.epochs < 1:
            raise CliError(f'--epochs must be >= 1, got {args.epochs}')
        overrides['train']['epochs'] = args.epochs
    if args.config and not os.path.isfile(args.config):
        raise CliError(f'--config: no such file: {args.config}')
    try:
        return load_config(args.config, overrides=overrides)
    except (ValueError, OSError) as exc:
        raise CliError(f'--config {args.config}: {exc}') from None


def _check_args(args):
    if args.max_steps is not None and args.max_steps < 0:
        raise CliError('--max-steps must be >= 0')
    if args.feature_steps is not None and args.feature_steps < 0:
        raise CliError('--feature-steps must be >= 0')
    if not os.path.exists(args.data):
        raise CliError(f'--data: no such file or directory: {args.data}')
    from fmdepth_ros.trainer import CHECKPOINT_NAME
    existing = os.path.join(args.out, CHECKPOINT_NAME)
    if args.resume and not os.path.isfile(existing):
        raise CliError(f'--resume: no checkpoint at {existing}')
    if not args.resume and os.path.isfile(existing):
        raise CliError(f'{existing} exists: pass --resume to continue it or choose another --out')
    if args.split:
        from fmdepth_ros.data.splits import resolve_split
        try:
            args.split = resolve_split(args.split, 'train')
        except ValueError as exc:
            raise CliError(f'--split: {exc}') from None
    else:
        _refuse_kitti_without_split(args)
    if args.init and not os.path.isfile(args.init):
        raise CliError(f'--init: no such checkpoint: {args.init}')


def _refuse_kitti_without_split(args):
    """KITTI raw without a split trains on every drive, the Eigen test drives included."""
    from fmdepth_ros.data import detect_kind
    try:
        kind = detect_kind(args.data)
    except ValueError:
        return                       # reported with the dataset
    if kind == 'kitti' and not args.no_split:
        raise CliError(f'--data {args.data} is KITTI raw: pass --split eigen_zhou (or another '
                       'training split); --no-split trains on every drive, the Eigen test '
                       'drives included')


def _run_config(out):
    """Return the configuration of an existing run (RUN_DIR/config.yaml, else the checkpoint)."""
    from fmdepth_ros.checkpoint import CheckpointError, load_checkpoint
    from fmdepth_ros.config import load_config
    from fmdepth_ros.trainer import CHECKPOINT_NAME
    path = os.path.join(out, 'config.yaml')
    try:
        if os.path.isfile(path):
            return load_config(path)
        return load_checkpoint(os.path.join(out, CHECKPOINT_NAME))[1]
    except (CheckpointError, ValueError, OSError) as exc:
        raise CliError(f'--resume: {exc}') from None


def _make_dataset(args, cfg):
    from fmdepth_ros.data import make_dataset
    try:
        dataset = make_dataset(args.data, cfg, split='train', split_file=args.split,
                               intrinsics=args.intrinsics)
    except CliError:
        raise
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise CliError(f'--data {args.data}: {exc}') from None
    if len(dataset) == 0:
        raise CliError(f'--data {args.data}: no training samples found')
    return dataset


def _install_stop_handlers(trainer):
    """SIGINT / SIGTERM ask the trainer to checkpoint and stop; a second Ctrl-C aborts."""
    def handler(signum, _frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.request_stop()
        print(f'\nfmdepth train: signal {signum}: saving a checkpoint after this step '
              '(Ctrl-C again to abort)', file=sys.stderr, flush=True)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    return previous


def run(args):
    """Train; returns 0 when done, 130 when stopped by a signal (checkpoint saved)."""
    from fmdepth_ros.distributed import cleanup_distributed, init_distributed
    from fmdepth_ros.checkpoint import CheckpointError
    from fmdepth_ros.trainer import CHECKPOINT_NAME, Trainer, TrainingError

    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    _check_args(args)
    device = resolve_device(args.device)
    if args.resume and args.config:
        LOG.warning('--resume: the configuration stored in the checkpoint is used, '
                    '--config is ignored')
    cfg = _load_cfg(args)
    info = init_distributed(device)
    try:
        if args.resume:
            # The dataset must be built with the run's own configuration (input size).
            cfg = _run_config(args.out)
        dataset = _make_dataset(args, cfg)
        try:
            trainer = Trainer(cfg, dataset, args.out, dist=info, stage=args.stage,
                              max_steps=args.max_steps, feature_steps=args.feature_steps,
                              resume=args.resume, init_checkpoint=args.init,
                              log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                              image_every=args.image_every, progress=not args.no_progress,
                              find_unused_parameters=args.find_unused_parameters)
        except (TrainingError, CheckpointError) as exc:
            raise CliError(str(exc)) from None
        previous = _install_stop_handlers(trainer)
        try:
            outcome = trainer.run()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        if info.is_main:
            where = os.path.join(args.out, CHECKPOINT_NAME)
            if outcome == 'interrupted':
                print(f'fmdepth train: stopped at step {trainer.step}; checkpoint {where}; '
                      f'continue with --resume', file=sys.stderr)
            else:
                print(f'fmdepth train: done at step {trainer.step}; checkpoint {where}')
        return 130 if outcome == 'interrupted' else 0
    finally:
        cleanup_distributed(info)

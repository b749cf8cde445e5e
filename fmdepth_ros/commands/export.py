"""``fmdepth export``: a deployable copy of a training checkpoint (weights and config only).

A checkpoint written by ``fmdepth train`` also holds the Adam state (two tensors per
parameter of the trained networks) and scheduler/RNG extras: 359 MiB for the demo's small
model, whose weights alone are 154 MiB. The node and ``fmdepth predict``/``evaluate`` only
need the weights and the config, so ``export`` writes a checkpoint of the same format without
the optimizer state; with ``--half`` the network parameters are stored as float16 (halving the
file again; they are cast back to float32 when loaded, BatchNorm statistics stay float32).

The result is an ordinary fmdepth_ros checkpoint: ``load_checkpoint`` reads it, the node takes
it as ``weights``, ``fmdepth predict``/``evaluate`` as ``--checkpoint``. It cannot resume a
training run (the trainer state is not in it): keep the run's own checkpoint for that.
"""

from fmdepth_ros.checkpoint import export_checkpoint

HELP = 'deployable checkpoint: weights + config, no optimizer'


def configure_parser(parser) -> None:
    """Add the ``fmdepth export`` arguments."""
    parser.add_argument('src', help='checkpoint from fmdepth train or fmdepth convert')
    parser.add_argument('dst', help='output checkpoint (weights + config, written atomically)')
    parser.add_argument('--half', action='store_true',
                        help='store the network parameters as float16 (half the size again; '
                             'loaded back as float32)')


def run(args) -> int:
    """Run ``fmdepth export``; a bad source raises ``CheckpointError``."""
    summary = export_checkpoint(args.src, args.dst, half=args.half)
    mib = 1024.0 * 1024.0
    print(f'wrote {args.dst}: {summary["dst_bytes"] / mib:.1f} MiB '
          f'(from {summary["src_bytes"] / mib:.1f} MiB; step {summary["step"]}, '
          f'{summary["parameters"] / 1e6:.1f} M parameters, '
          f'{"float16" if summary["half"] else "float32"} weights, no optimizer state)')
    return 0

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

``fmdepth export --onnx SRC DST.onnx`` writes the DepthNet's scale-0 disparity graph to
``DST.onnx`` and the PoseNet's to ``DST_pose.onnx`` (opset 18, torch's dynamo exporter; see
:mod:`fmdepth_ros.runtime.onnx_export`), at the checkpoint's network size, another fixed size
(``--width``/``--height``) or a dynamic one (``--dynamic``), and checks both against torch on
the same random inputs with onnxruntime.
"""

from fmdepth_ros.checkpoint import export_checkpoint
from fmdepth_ros.errors import CliError

HELP = 'deployable checkpoint: weights + config, no optimizer'


def configure_parser(parser) -> None:
    """Add the ``fmdepth export`` arguments."""
    parser.add_argument('src', help='checkpoint from fmdepth train or fmdepth convert')
    parser.add_argument('dst', help='output checkpoint (weights + config, written atomically)')
    parser.add_argument('--half', action='store_true',
                        help='store the network parameters as float16 (half the size again; '
                             'loaded back as float32)')
    parser.add_argument('--onnx', action='store_true',
                        help='write ONNX graphs instead: DST (DepthNet scale-0 disparity) and '
                             'DST_pose.onnx (PoseNet), checked against torch')
    parser.add_argument('--dynamic', action='store_true',
                        help='with --onnx: symbolic height and width (multiples of 32)')
    parser.add_argument('--width', type=int, default=0,
                        help="with --onnx: input width (default: the checkpoint's)")
    parser.add_argument('--height', type=int, default=0,
                        help="with --onnx: input height (default: the checkpoint's)")
    parser.add_argument('--opset', type=int, default=None,
                        help='with --onnx: ONNX opset (default 18)')
    parser.add_argument('--no-pose', action='store_true', help='with --onnx: DepthNet only')
    parser.add_argument('--no-check', action='store_true',
                        help='with --onnx: skip the onnxruntime-vs-torch check')


def run_onnx(args) -> int:
    """``fmdepth export --onnx``: write and check the graphs; print one line per graph."""
    from fmdepth_ros.runtime.onnx_export import export_checkpoint_onnx, OPSET
    if args.half:
        raise CliError('--half applies to checkpoints; ONNX graphs are float32')
    summary = export_checkpoint_onnx(
        args.src, args.dst, width=args.width, height=args.height, dynamic=args.dynamic,
        opset=args.opset or OPSET, pose=not args.no_pose, check=not args.no_check)
    size = 'dynamic size' if summary['dynamic'] else '{}x{}'.format(*summary['size'])
    for name, entry in summary['files'].items():
        checks = '; '.join(f'{c["size"][0]}x{c["size"][1]}: max rel diff to torch '
                           f'{c["max_rel_diff"]:.1e}' for c in entry.get('check', []))
        print(f'wrote {entry["path"]}: {name} graph, opset {summary["opset"]}, {size}, '
              f'{entry["bytes"] / 2**20:.1f} MiB, inputs {", ".join(entry["inputs"])} -> '
              f'{", ".join(entry["outputs"])}' + (f' ({checks}, onnxruntime)' if checks else ''))
    return 0


def run(args) -> int:
    """Run ``fmdepth export``; a bad source raises ``CheckpointError``."""
    if args.onnx:
        return run_onnx(args)
    summary = export_checkpoint(args.src, args.dst, half=args.half)
    mib = 1024.0 * 1024.0
    print(f'wrote {args.dst}: {summary["dst_bytes"] / mib:.1f} MiB '
          f'(from {summary["src_bytes"] / mib:.1f} MiB; step {summary["step"]}, '
          f'{summary["parameters"] / 1e6:.1f} M parameters, '
          f'{"float16" if summary["half"] else "float32"} weights, no optimizer state)')
    return 0

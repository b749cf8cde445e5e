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

import os

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .cli import CliError


def export_checkpoint(src, dst, half=False) -> dict:
    """Write ``dst``: the model weights and config of checkpoint ``src``, no optimizer state.

    Args:
        src: checkpoint written by ``save_checkpoint`` (``fmdepth train`` / ``convert``).
        dst: output file, written atomically (a failed export leaves no partial file).
        half: store floating-point *parameters* as float16 (buffers stay as they are).

    Returns:
        dict: ``src_bytes``, ``dst_bytes``, ``step``, ``parameters`` (count), ``half``.

    Raises:
        CheckpointError: ``src`` is missing, corrupt or not an fmdepth_ros checkpoint.
    """
    if os.path.abspath(os.fspath(src)) == os.path.abspath(os.fspath(dst)):
        raise CheckpointError(f'{dst}: export would overwrite its source; choose another file')
    model, cfg, info = load_checkpoint(src, map_location='cpu')
    extra = {'exported_from': os.path.basename(os.fspath(src)),
             'exported_precision': 'fp16' if half else 'fp32'}
    if half:   # parameters only: BatchNorm statistics keep float32
        for param in model.parameters():
            if param.is_floating_point():
                param.data = param.data.half()
    save_checkpoint(dst, model, cfg, step=info['step'], optimizer=None, extra=extra)
    return {'src_bytes': os.path.getsize(src), 'dst_bytes': os.path.getsize(dst),
            'step': info['step'], 'half': bool(half),
            'parameters': sum(p.numel() for p in model.parameters())}


def configure_parser(parser) -> None:
    """Add the ``fmdepth export`` arguments."""
    parser.add_argument('src', help='checkpoint from fmdepth train or fmdepth convert')
    parser.add_argument('dst', help='output checkpoint (weights + config, written atomically)')
    parser.add_argument('--half', action='store_true',
                        help='store the network parameters as float16 (half the size again; '
                             'loaded back as float32)')


def run(args) -> int:
    """Run ``fmdepth export``; user errors become ``CliError``."""
    try:
        summary = export_checkpoint(args.src, args.dst, half=args.half)
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    mib = 1024.0 * 1024.0
    print(f'wrote {args.dst}: {summary["dst_bytes"] / mib:.1f} MiB '
          f'(from {summary["src_bytes"] / mib:.1f} MiB; step {summary["step"]}, '
          f'{summary["parameters"] / 1e6:.1f} M parameters, '
          f'{"float16" if summary["half"] else "float32"} weights, no optimizer state)')
    return 0


__all__ = ['export_checkpoint']

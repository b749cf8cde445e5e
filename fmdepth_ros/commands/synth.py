"""``fmdepth synth``: render a synthetic sequence with ground truth (``data/synth.py``)."""

import os

from fmdepth_ros.data.synth import render_sequence, write_sequence
from fmdepth_ros.errors import CliError
from fmdepth_ros.stereo import KITTI_BASELINE_M

HELP = 'render a synthetic sequence with ground truth'


def configure_parser(parser):
    """Add the ``fmdepth synth`` arguments."""
    parser.add_argument('out_dir', metavar='OUT_DIR', help='output directory')
    parser.add_argument('--frames', type=int, default=100, help='number of frames (default 100)')
    parser.add_argument('--width', type=int, default=192, help='image width in pixels')
    parser.add_argument('--height', type=int, default=64, help='image height in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed (deterministic output)')
    parser.add_argument('--stereo', action='store_true',
                        help='also render the right camera of a rectified stereo pair into '
                             'OUT_DIR/images_right/ (frame "s" of MS training) and write '
                             'OUT_DIR/stereo.txt')
    parser.add_argument('--baseline', type=float, default=KITTI_BASELINE_M,
                        help='stereo baseline in metres for --stereo (default 0.54, KITTI)')


def run(args):
    """Render and write a synthetic sequence; returns the exit code."""
    if args.frames < 1:
        raise CliError(f'--frames must be >= 1, got {args.frames}')
    if args.width < 8 or args.height < 8:
        raise CliError(f'image must be at least 8x8 pixels, got {args.width}x{args.height}')
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise CliError(f'{args.out_dir} exists and is not a directory')
    if args.stereo and not args.baseline > 0:
        raise CliError(f'--baseline must be > 0 m, got {args.baseline}')
    seq = render_sequence(args.frames, width=args.width, height=args.height, seed=args.seed,
                          stereo_baseline=args.baseline if args.stereo else None)
    write_sequence(seq, args.out_dir)
    stereo = f', right camera at {seq.baseline:g} m' if args.stereo else ''
    print(f'wrote {len(seq)} frames {args.width}x{args.height} to {args.out_dir} '
          f'(depth {seq.depths.min():.2f}-{seq.depths.max():.2f} m{stereo})')
    return 0

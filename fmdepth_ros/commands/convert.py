"""``fmdepth convert``: import official FeatDepth or Monodepth2 weights into our checkpoint.

Argument parsing only; the conversion is :func:`fmdepth_ros.weights_import.convert`.
"""

from fmdepth_ros.config import load_config
from fmdepth_ros.errors import CliError
from fmdepth_ros.weights_import import convert

HELP = 'import official FeatDepth / Monodepth2 weights'


def configure_parser(parser) -> None:
    """Add the ``fmdepth convert`` arguments."""
    parser.add_argument('src', help='official FeatDepth .pth, or a Monodepth2 model folder '
                                    '(or its encoder.pth)')
    parser.add_argument('dst', help='output checkpoint (written atomically)')
    parser.add_argument('--autoencoder', metavar='AE_FILE', default=None,
                        help='official FeatDepth autoencoder .pth (FeatureNet decoder)')
    parser.add_argument('--format', dest='fmt', choices=('auto', 'featdepth', 'monodepth2'),
                        default='auto', help='source layout (default: detect)')
    parser.add_argument('--height', type=int, default=None,
                        help="network input height (default: the source model's)")
    parser.add_argument('--width', type=int, default=None,
                        help="network input width (default: the source model's)")
    parser.add_argument('--config', default=None,
                        help='YAML config for the non-network settings stored in DST')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='allow arbitrary pickled objects in SRC (only for trusted files)')


def run(args) -> int:
    """Run ``fmdepth convert``; a bad source raises ``ConversionError`` / ``CheckpointError``."""
    try:
        base = load_config(args.config) if args.config else None
    except (OSError, ValueError) as exc:
        raise CliError(f'--config {args.config}: {exc}') from None
    summary = convert(args.src, args.dst, autoencoder=args.autoencoder, fmt=args.fmt,
                      height=args.height, width=args.width, base_config=base,
                      trust_pickle=args.trust_pickle)
    m = summary['config'].model
    print(f'converted {summary["format"]} {args.src} -> {args.dst}: depth ResNet-'
          f'{m.depth_layers} ({m.depth_decoder} decoder) at {m.width}x{m.height}, pose ResNet-'
          f'{m.pose_layers} at {m.pose_width}x{m.pose_height}, feature ResNet-'
          f'{m.feature_layers}')
    for note in summary['notes']:
        print(f'note: {note}')
    return 0

"""``fmdepth figure``: input | depth | LiDAR rows of a checkpoint on a folder (``figures.py``)."""

import os

from fmdepth_ros.errors import CliError

HELP = 'picture of a checkpoint on frames with LiDAR: rows of input | depth | LiDAR'


def configure_parser(parser):
    """Add the ``fmdepth figure`` arguments."""
    parser.add_argument('--checkpoint', required=True, help='checkpoint file (fmdepth format)')
    parser.add_argument('--data', required=True,
                        help='folder with images/, depth/ and intrinsics.txt (fmdepth '
                             'kitti2folder output, e.g. data/kitti_city_78)')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--frames', default='10,40,70',
                        help='comma-separated frame indices, one row each (default 10,40,70)')
    parser.add_argument('--title', default=None, help='figure title')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default cpu)')


def run(args) -> int:
    """Render the figure; print each row's AbsRel."""
    from fmdepth_ros.figures import figure_from_checkpoint, parse_frames

    if not os.path.isfile(args.checkpoint):
        raise CliError(f'--checkpoint: no such file: {args.checkpoint}')
    if not os.path.isdir(args.data):
        raise CliError(f'--data: no such folder: {args.data}')
    rows = figure_from_checkpoint(args.checkpoint, args.data, args.out,
                                  parse_frames(args.frames), device=args.device,
                                  title=args.title)
    for row in rows:
        print(f'frame {row["frame"]}: AbsRel {row["abs_rel"]:.3f}')
    print(f'wrote {args.out}')
    return 0

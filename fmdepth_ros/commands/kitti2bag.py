"""``fmdepth kitti2bag``: KITTI raw drive -> rosbag2 bag (:mod:`fmdepth_ros.data.kitti2bag`)."""

from pathlib import Path
import sys

from fmdepth_ros.data.kitti2bag import COMPRESSED_TOPIC, open_drive, write_bag
from fmdepth_ros.errors import CliError

HELP = 'convert a KITTI raw drive to a rosbag2 bag'


def add_drive_arguments(parser, out_name, out_help):
    """Add ``DRIVE_DIR``, the output positional ``out_name`` and ``--camera``.

    Shared by the KITTI converters (``kitti2bag``, ``kitti2folder``).
    """
    parser.add_argument('drive_dir', metavar='DRIVE_DIR',
                        help='KITTI raw drive, e.g. .../2011_09_26/2011_09_26_drive_0001_sync '
                             '(calibration files in its parent folder)')
    parser.add_argument(out_name, metavar=out_name.upper(), help=out_help)
    parser.add_argument('--camera', type=int, choices=(0, 1, 2, 3), default=2,
                        help='KITTI camera: 2 = left colour (default), 3 = right colour, '
                             '0/1 = grey')


def configure_parser(parser):
    """Add the ``fmdepth kitti2bag`` arguments."""
    add_drive_arguments(parser, 'out_bag', 'output bag folder (must not exist)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='rosbag2 storage plugin (default: mcap)')
    parser.add_argument('--compressed', action='store_true',
                        help=f'write sensor_msgs/CompressedImage on {COMPRESSED_TOPIC} '
                             "(the drive's PNG bytes, lossless) instead of raw Image")
    parser.add_argument('--jpeg-quality', type=int, default=None, metavar='Q',
                        help='with --compressed: re-encode as JPEG of quality Q (1-100)')
    parser.add_argument('--no-velodyne', action='store_true', help='skip the velodyne scans')
    parser.add_argument('--no-oxts', action='store_true', help='skip the OXTS ground truth')
    parser.add_argument('--no-depth', action='store_true',
                        help='skip the proj_depth/velodyne_raw ground-truth depth maps')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT_BAG if it exists')


def run(args) -> int:
    """Convert the drive; prints one summary line per topic."""
    out_bag = Path(args.out_bag)
    if args.jpeg_quality is not None and not (1 <= args.jpeg_quality <= 100):
        raise CliError('--jpeg-quality must be in 1..100')
    if args.jpeg_quality is not None and not args.compressed:
        raise CliError('--jpeg-quality needs --compressed')
    if out_bag.exists():
        if not args.overwrite:
            raise CliError(f'{out_bag} exists (use --overwrite to replace it)')
    drive = open_drive(args.drive_dir, args.camera, velodyne=not args.no_velodyne,
                       oxts=not args.no_oxts, depth=not args.no_depth,
                       log=lambda text: print(f'fmdepth kitti2bag: warning: {text}',
                                              file=sys.stderr))

    def progress(done, total):
        if done % 100 == 0 and done < total:
            print(f'  {done}/{total} frames', flush=True)

    counts = write_bag(drive, out_bag, storage=args.storage, compressed=args.compressed,
                       jpeg_quality=args.jpeg_quality, progress=progress)
    print(f'wrote {out_bag} ({args.storage}):')
    for topic, count in counts.items():
        print(f'  {topic}: {count} messages')
    return 0

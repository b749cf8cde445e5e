"""``fmdepth kitti2folder``: KITTI raw drive -> evaluation folder (``data/kitti_folder.py``)."""

from fmdepth_ros.commands.kitti2bag import add_drive_arguments
from fmdepth_ros.data.kitti_folder import drive_to_folder

HELP = 'write a KITTI raw drive as images/, depth/ (LiDAR) and intrinsics.txt for evaluate --data'


def configure_parser(parser):
    """Add the ``fmdepth kitti2folder`` arguments."""
    add_drive_arguments(parser, 'out_dir', 'output folder (must not exist)')
    parser.add_argument('--copy', action='store_true',
                        help='copy the images and depth maps (default: symlinks)')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT_DIR if it exists')


def run(args) -> int:
    """Write the folder; prints where each frame's depth came from."""
    summary = drive_to_folder(args.drive_dir, args.out_dir, camera=args.camera, copy=args.copy,
                              overwrite=args.overwrite)
    print(f'wrote {summary.out_dir}: {summary.frames} frames; depth from proj_depth '
          f'{summary.depth_from_proj}, projected velodyne {summary.depth_from_velodyne}, '
          f'none {summary.without_depth}')
    return 0

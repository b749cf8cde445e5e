"""``fmdepth kitti2folder``: KITTI raw drive -> evaluation folder (``data/kitti_folder.py``)."""

from fmdepth_ros.data.kitti_folder import drive_to_folder

HELP = 'write a KITTI raw drive as images/, depth/ (LiDAR) and intrinsics.txt for evaluate --data'


def configure_parser(parser):
    """Add the ``fmdepth kitti2folder`` arguments."""
    parser.add_argument('drive_dir', metavar='DRIVE_DIR',
                        help='KITTI raw drive, e.g. .../2011_09_26/2011_09_26_drive_0001_sync '
                             '(calibration files in its parent folder)')
    parser.add_argument('out_dir', metavar='OUT_DIR', help='output folder (must not exist)')
    parser.add_argument('--camera', type=int, choices=(0, 1, 2, 3), default=2,
                        help='KITTI camera: 2 = left colour (default), 3 = right colour, '
                             '0/1 = grey')
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

r"""``fmdepth export-gt``: the Eigen ground truth of a KITTI split as ``gt_depths.npz``.

Example::

    fmdepth export-gt --data /data/kitti_raw --split eigen --out splits_gt/gt_depths.npz
    fmdepth evaluate --checkpoint ckpt.pt --data /data/kitti_raw --split eigen \\
        --gt-depths splits_gt/gt_depths.npz

The file is what Monodepth2's ``export_gt_depth.py`` writes (see
:func:`fmdepth_ros.data.kitti.export_gt_depths`).
"""

import os
import sys

from fmdepth_ros.errors import CliError

HELP = 'write the velodyne ground truth of a KITTI split (gt_depths.npz, Monodepth2 format)'


def configure_parser(parser):
    """Add the ``fmdepth export-gt`` arguments."""
    parser.add_argument('--data', required=True, help='KITTI raw root (date folders)')
    parser.add_argument('--split', required=True,
                        help='split name (eigen, odom_09 ...) or file; one map per line')
    parser.add_argument('--out', required=True, help='output .npz (key "data")')


def run(args) -> int:
    """Project every split line's scan; write the file atomically; exit code."""
    from fmdepth_ros.data.kitti import export_gt_depths, is_kitti_raw_root
    from fmdepth_ros.data.splits import resolve_split

    if not is_kitti_raw_root(args.data):
        raise CliError(f'--data {args.data}: not a KITTI raw root (date folders with '
                       'calib_cam_to_cam.txt)')
    try:
        split = resolve_split(args.split, 'test')
    except ValueError as exc:
        raise CliError(f'--split: {exc}') from None
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise CliError(f'--out: no such folder: {out_dir}')

    def progress(k):
        if sys.stderr.isatty():
            print(f'\rexport-gt: line {k + 1}', end='', file=sys.stderr, flush=True)

    try:
        count = export_gt_depths(args.data, split, args.out, progress=progress)
    except (ValueError, OSError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    print(f'wrote {args.out}: {count} depth maps ({split})')
    return 0

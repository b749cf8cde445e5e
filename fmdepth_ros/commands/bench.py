"""``fmdepth bench``: latency / throughput table (:mod:`fmdepth_ros.runtime.benchmark`).

The ROS tools layer registers ``bench`` (:mod:`fmdepth_ros.ros.tools.bench`): it runs this
command with the node's end-to-end measurement added.
"""

import os

from fmdepth_ros.atomic_io import write_json_atomic
from fmdepth_ros.errors import CliError
from fmdepth_ros.runtime import benchmark
from fmdepth_ros.runtime.inference import select_device
import torch

HELP = 'latency / throughput benchmark table'


def configure_parser(parser):
    """Add the ``fmdepth bench`` arguments."""
    parser.add_argument('--device', default='auto',
                        help='auto, cuda, cuda:N or cpu (default auto; falls back to the CPU '
                             'with a warning)')
    parser.add_argument('--frames', type=int, default=None,
                        help='timed frames per measurement (default 1000 on CUDA, 20 on CPU)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed frames first (default 50 on CUDA, 3 on CPU)')
    parser.add_argument('--sizes', default=None,
                        help='network sizes WxH, comma-separated (default 640x192,1024x320 on '
                             'CUDA, 640x192 on CPU); multiples of 32')
    parser.add_argument('--encoders', default=None,
                        help='ResNet depths of the DepthNet encoder, comma-separated (default '
                             '18,50 on CUDA, 18 on CPU)')
    parser.add_argument('--decoder', default='featdepth', choices=('featdepth', 'monodepth2'),
                        help="depth decoder (default featdepth, the paper's CRP decoder; "
                             'monodepth2 is much lighter)')
    parser.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'),
                        help='optimised path autocast (auto: fp16 on CUDA, bf16 on a CPU with '
                             'native bf16, else fp32)')
    parser.add_argument('--no-channels-last', action='store_true',
                        help='optimised path without channels_last')
    parser.add_argument('--compile', action='store_true',
                        help='optimised path with torch.compile (slow to start; falls back to '
                             'eager on failure)')
    parser.add_argument('--no-cuda-graphs', action='store_true',
                        help='optimised path without CUDA graphs (CUDA only)')
    parser.add_argument('--node-frames', type=int, default=None,
                        help='frames for the node end-to-end latency (0 = skip)')
    parser.add_argument('--node-sizes', default=None,
                        help='camera image sizes WxH fed to the node, comma-separated, each '
                             'timed stage by stage (default: the first network size and '
                             '1242x375, a KITTI frame); the network runs at the first --sizes')
    parser.add_argument('--refine-frames', type=int, default=None,
                        help='inference frames while refining (0 = skip the refinement row)')
    parser.add_argument('--refine-iterations', type=int, default=None,
                        help='Adam steps per refinement window (default 20 on CUDA, 2 on CPU)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--backend', default=None,
                        choices=('all', 'torch', 'onnxruntime', 'openvino', 'tensorrt'),
                        help='also compare inference backends side by side (all: every '
                             'backend x precision x memory format that auto would time)')
    parser.add_argument('--calibration', default=None, metavar='DIR',
                        help='with --backend: also time onnxruntime and OpenVINO int8, '
                             'calibrated on the camera images of DIR')
    parser.add_argument('--json', default=None, metavar='FILE',
                        help='also write every number to FILE (JSON, atomically)')


def run(args, node_latency=None):
    """Run the benchmark; print the table; write ``--json``. Returns 0.

    ``node_latency``: the node measurement of the ROS tools layer (None: the node row is
    skipped); see :func:`fmdepth_ros.runtime.benchmark.bench_node`.
    """
    if args.threads is not None:
        if args.threads < 1:
            raise CliError('--threads must be >= 1')
        torch.set_num_threads(args.threads)
    if args.calibration and not args.backend:
        raise CliError('--calibration adds int8 rows to --backend: give --backend too')
    try:
        device, warning = select_device(args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if warning:
        print(f'warning: {warning}')
    defaults = benchmark.DEFAULTS['cuda' if device.startswith('cuda') else 'cpu']
    value = {k: (getattr(args, k) if getattr(args, k) is not None else v)
             for k, v in defaults.items()}
    for key in ('frames', 'warmup', 'node_frames', 'refine_frames', 'refine_iterations'):
        if value[key] < (1 if key in ('frames', 'refine_iterations') else 0):
            raise CliError(f'--{key.replace("_", "-")} must be >= '
                           f'{1 if key in ("frames", "refine_iterations") else 0}')
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise CliError(f'--json: directory {parent} does not exist')
    sizes = benchmark.parse_sizes(value['sizes'])
    node_sizes = benchmark.parse_camera_sizes(
        args.node_sizes or f'{sizes[0][0]}x{sizes[0][1]},{benchmark.KITTI_SIZE}')
    encoders = benchmark.parse_encoders(value['encoders'])
    opts = benchmark.optimised_options(device, args)
    result = {'device': device, 'device_name': benchmark.describe_device(device),
              'torch': torch.__version__, 'frames': value['frames'], 'warmup': value['warmup'],
              'decoder': args.decoder,
              'optimised_path': benchmark.describe_options(opts), 'optimised_options': opts,
              'load_average_start': benchmark.load_average(), 'models': []}
    frames_by_size = {}
    for width, height in sizes:
        frames_by_size[(width, height)] = benchmark.sample_frames(width, height)
        for encoder in encoders:
            print(f'... {width}x{height} ResNet-{encoder}', flush=True)
            result['models'].append(benchmark.bench_model(
                width, height, encoder, device, opts, value['frames'], value['warmup'],
                frames_by_size[(width, height)][0], args.decoder))
    (width, height), encoder = sizes[0], encoders[0]
    images, K = frames_by_size[(width, height)]
    result['backends'] = []
    for (w, h), enc in ([(size, e) for size in sizes for e in encoders] if args.backend else []):
        print(f'... backends ({args.backend}) {w}x{h} ResNet-{enc}', flush=True)
        result['backends'].append(benchmark.bench_backends(
            w, h, enc, device, value['frames'], value['warmup'], frames_by_size[(w, h)][0],
            args.decoder, args.backend, args.calibration))
    result['node'] = None
    result['node_overhead'] = []
    for camera in (node_sizes if value['node_frames'] > 0 else []):
        print(f'... node end-to-end, {camera[0]}x{camera[1]} camera, {width}x{height} '
              f'ResNet-{encoder}', flush=True)
        cam_images, cam_K = ((images, K) if camera == (width, height)
                             else benchmark.sample_frames(*camera))
        result['node_overhead'].append(benchmark.bench_node(
            width, height, encoder, device, opts, value['node_frames'],
            min(value['warmup'], 10), cam_images, cam_K, args.decoder, node_latency))
    result.update(benchmark.node_overhead_summary(result))
    result['refinement'] = None
    if value['refine_frames'] > 0:
        print(f'... online refinement {width}x{height} ResNet-{encoder}', flush=True)
        result['refinement'] = benchmark.bench_refinement(
            width, height, encoder, device, opts, value['refine_frames'], value['warmup'],
            images, K, value['refine_iterations'], args.decoder)
    result['load_average_end'] = benchmark.load_average()
    print(benchmark.format_table(result))
    if args.json:
        write_json_atomic(args.json, result)
        print(f'wrote {args.json}')
    return 0

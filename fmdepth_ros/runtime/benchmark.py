"""``fmdepth bench``: latency / throughput of the depth path, eager reference vs optimised.

For every (network size, depth encoder) pair, batch 1, it measures per-frame latency (median and
p99 in ms) and frames/s of

(a) the eager fp32 reference, run the way the reference implementations run (a new float tensor
    per frame, pre-processing on the CPU, ``.to(device)``, fp32 forward, result back with
    ``.cpu()``), and
(b) :class:`fmdepth_ros.runtime.inference.DepthPredictor`, the optimised path (autocast fp16/bf16,
    channels_last, optionally ``torch.compile`` and CUDA graphs, preallocated buffers,
    device-side pre/post-processing),

both from a ``[H, W, 3]`` uint8 frame to a ``[H, W]`` float32 depth array. It reports the speed-up
b/a, the memory of each run in the first and the last window of frames (peak GPU memory on CUDA,
process RSS on the CPU; flat = no per-frame allocation growth), and the max relative depth
difference of (b) against (a). Then, for the first size and encoder:

* the end-to-end node latency through real rclpy, in-process: a probe node publishes
  ``sensor_msgs/Image`` on ``image`` and times the arrival of ``depth/image`` from
  :class:`fmdepth_ros.ros.depth_node.DepthNode` (skipped with a note when rclpy is missing),
  for each camera size of ``--node-sizes`` (default the network size and a 1242x375 KITTI
  frame), stage by stage inside the node; the node overhead of a frame is its end-to-end
  latency minus its own network forward (:mod:`fmdepth_ros.ros.tools.bench_node`);
* online refinement (:class:`runtime.refinement.OnlineRefiner`) iterations/s while inference
  runs, and the inference slow-down it causes.

Weights are random (latency does not depend on them). Bench goals are in docs/benchmarks.md.
"""

import os
import tempfile
import time

from fmdepth_ros.config import Config
from fmdepth_ros.errors import CliError
from fmdepth_ros.networks.depth_net import DepthNet, disp_to_depth
from fmdepth_ros.runtime.backends.auto import cpu_model_name
from fmdepth_ros.runtime.inference import DepthPredictor, fast_options
import numpy as np
import torch
import torch.nn.functional as F

ENCODERS = (18, 34, 50)

#: camera size of a KITTI raw frame (W x H), the second default ``--node-sizes`` entry
KITTI_SIZE = '1242x375'

#: defaults per device type: on the CPU small enough to finish in a couple of minutes
DEFAULTS = {
    'cuda': {'sizes': '640x192,1024x320', 'encoders': '18,50', 'frames': 1000, 'warmup': 50,
             'node_frames': 300, 'refine_frames': 300, 'refine_iterations': 20},
    'cpu': {'sizes': '640x192', 'encoders': '18', 'frames': 20, 'warmup': 3,
            'node_frames': 10, 'refine_frames': 10, 'refine_iterations': 2},
}


# ----------------------------------------------------------------------------- arguments
def _wxh_items(text, option, example):
    """Yield ``(width, height)`` of a ``'WxH,WxH'`` list; CliError names ``option``."""
    for item in str(text).split(','):
        parts = item.strip().lower().split('x')
        try:
            width, height = (int(v) for v in parts)
        except ValueError:
            raise CliError(f'{option}: {item.strip()!r} is not WxH (e.g. {example})') from None
        yield width, height


def parse_sizes(text):
    """``'640x192,1024x320'`` -> ``[(640, 192), (1024, 320)]`` (W, H); CliError when invalid."""
    sizes = []
    for width, height in _wxh_items(text, '--sizes', '640x192'):
        if width <= 0 or height <= 0 or width % 32 or height % 32:
            raise CliError(f'--sizes: {width}x{height} must be positive multiples of 32')
        sizes.append((width, height))
    return sizes


def parse_camera_sizes(text):
    """``'640x192,1242x375'`` -> ``[(640, 192), (1242, 375)]``: camera sizes, any >= 8x8."""
    sizes = []
    for width, height in _wxh_items(text, '--node-sizes', '1242x375'):
        if width < 8 or height < 8:
            raise CliError(f'--node-sizes: {width}x{height} is smaller than 8x8')
        if (width, height) not in sizes:
            sizes.append((width, height))
    return sizes


def parse_encoders(text):
    """``'18,50'`` -> ``[18, 50]``; CliError for anything but 18, 34, 50."""
    try:
        encoders = [int(v) for v in str(text).split(',')]
    except ValueError:
        raise CliError(f'--encoders: {text!r} is not a list of 18, 34, 50') from None
    bad = [e for e in encoders if e not in ENCODERS]
    if bad:
        raise CliError(f'--encoders: {bad[0]} is not one of 18, 34, 50')
    return encoders


def optimised_options(device, args):
    """Return the DepthPredictor keyword arguments of the optimised path for ``device``."""
    opts = fast_options(device, args.precision)
    opts['channels_last'] = not args.no_channels_last
    opts['compile'] = bool(args.compile)
    opts['cuda_graphs'] = opts['cuda_graphs'] and not args.no_cuda_graphs
    return opts


def describe_options(opts):
    """One-line description of the optimised path's settings."""
    parts = [f'{opts["precision"]} autocast' if opts['precision'] != 'fp32' else 'fp32']
    if opts.get('cast_weights'):
        parts[0] = f'{opts["precision"]} weights'
    if opts['channels_last']:
        parts.append('channels_last')
    if opts['compile']:
        parts.append('torch.compile')
    if opts['cuda_graphs']:
        parts.append('CUDA graphs')
    return ', '.join(parts + ['preallocated buffers', 'device-side pre/post-processing'])


def load_average():
    """1-minute load average (None where unknown): other processes skew CPU timings."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def describe_device(device):
    """Human-readable description of ``device`` (GPU name, or CPU model and threads)."""
    if device.startswith('cuda'):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f'{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}'
    return (f'{cpu_model_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} '
            'torch threads')


# ----------------------------------------------------------------------------- paths
class EagerReference:
    """The eager fp32 reference path: how the reference implementations run a frame.

    A new float tensor per frame, resize on the CPU (antialiased bilinear, like PIL),
    ``.to(device)``, fp32 NCHW forward, ``disp_to_depth`` and the resize back on the device,
    ``.cpu().numpy()``. Same maths as :class:`DepthPredictor` in fp32.
    """

    def __init__(self, depth_net, cfg, device):
        """Keep the network in eval mode on ``device`` (the module is moved, not copied)."""
        self.net = depth_net.to(device).eval()
        self.cfg = cfg
        self.device = torch.device(device)

    def predict(self, image):
        """``[H, W, 3]`` uint8 -> ``[H, W]`` float32 depth (metres, up to scale)."""
        x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        size = (self.cfg.model.height, self.cfg.model.width)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False,
                              antialias=True)
        with torch.no_grad():
            disp = self.net(x.to(self.device))[0]
        scaled, _ = disp_to_depth(disp, self.cfg.model.min_depth, self.cfg.model.max_depth)
        scaled = F.interpolate(scaled, size=image.shape[:2], mode='bilinear',
                               align_corners=False)
        return (1.0 / scaled)[0, 0].cpu().numpy()


# ----------------------------------------------------------------------------- measuring
def _rss_mb():
    """Resident set size of this process in MiB (Linux /proc; 0 when unavailable)."""
    try:
        with open('/proc/self/statm', encoding='ascii') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE') / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def measure(predict, images, frames, warmup, device):
    """Time ``predict(image)`` over ``frames`` frames (cycling ``images``) after ``warmup``.

    Returns a dict: ``median_ms``, ``p99_ms``, ``mean_ms``, ``fps`` (1000 / mean), ``frames``,
    ``process_cpu_ms_median`` (CPU time of the whole process per frame: on a shared CPU it
    tells the work apart from the waiting), and memory per window of frames (10 windows): on
    CUDA the peak allocated GPU memory of the first / last window and the overall peak (MiB);
    on the CPU the RSS after the first / last window (MiB).
    """
    cuda = device.startswith('cuda')
    for i in range(warmup):
        predict(images[i % len(images)])
    window = max(1, frames // 10)
    latencies = []
    cpu_times = []
    memory = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for i in range(frames):
        image = images[i % len(images)]
        start, cpu_start = time.perf_counter(), time.process_time()
        predict(image)
        latencies.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        if (i + 1) % window == 0 or i + 1 == frames:
            if cuda:
                memory.append(torch.cuda.max_memory_allocated() / 2**20)
                torch.cuda.reset_peak_memory_stats()
            else:
                memory.append(_rss_mb())
    ms = np.asarray(latencies) * 1000.0
    return {'frames': int(frames), 'median_ms': float(np.median(ms)),
            'p99_ms': float(np.percentile(ms, 99)), 'mean_ms': float(ms.mean()),
            'fps': float(1000.0 / ms.mean()),
            'process_cpu_ms_median': float(np.median(cpu_times) * 1000.0),
            'memory_kind': 'gpu_peak_allocated' if cuda else 'cpu_rss',
            'memory_first_mb': float(memory[0]), 'memory_last_mb': float(memory[-1]),
            'memory_peak_mb': float(max(memory)),
            'memory_growth_mb': float(memory[-1] - memory[0])}


def max_relative_difference(a_fn, b_fn, images):
    """Max over ``images`` and pixels of ``|b - a| / a`` (a: reference depth)."""
    worst = 0.0
    for image in images:
        a = a_fn(image).astype(np.float64)
        b = b_fn(image).astype(np.float64)
        worst = max(worst, float(np.max(np.abs(b - a) / np.abs(a))))
    return worst


def bench_config(width, height, encoder, device, decoder='featdepth'):
    """Paper config at ``width x height`` with a ResNet-``encoder`` DepthNet and ``decoder``.

    On the CPU the FeatureNet (only used by refinement) is ResNet-18 to keep it affordable.
    """
    cfg = Config()
    cfg.model.width, cfg.model.height, cfg.model.depth_layers = width, height, encoder
    cfg.model.depth_decoder = decoder
    if not device.startswith('cuda'):
        cfg.model.feature_layers = 18
    return cfg


def sample_frames(width, height, count=8):
    """``count`` synthetic corridor frames ``[H, W, 3]`` uint8 and their intrinsics K [3, 3]."""
    from fmdepth_ros.data.synth import render_sequence
    seq = render_sequence(count, width=width, height=height, seed=0, supersample=1)
    return [np.ascontiguousarray(im) for im in seq.images], np.asarray(seq.K, np.float64)


def bench_model(width, height, encoder, device, opts, frames, warmup, images,
                decoder='featdepth'):
    """One table row: eager reference vs optimised path for one size and encoder."""
    cfg = bench_config(width, height, encoder, device, decoder)
    torch.manual_seed(0)
    net = DepthNet(encoder, decoder=cfg.model.depth_decoder, min_depth=cfg.model.min_depth,
                   max_depth=cfg.model.max_depth).eval()
    optimised = DepthPredictor(net, cfg, device=device, **opts)
    eager = EagerReference(net, cfg, device)
    row = {'size': f'{width}x{height}', 'encoder': encoder}
    row['eager'] = measure(eager.predict, images, frames, warmup, device)
    row['optimised'] = measure(optimised.predict, images, frames, warmup, device)
    row['speedup'] = row['eager']['mean_ms'] / row['optimised']['mean_ms']
    row['speedup_median'] = row['eager']['median_ms'] / row['optimised']['median_ms']
    row['max_rel_depth_diff'] = max_relative_difference(eager.predict, optimised.predict,
                                                        images[:4])
    row['notes'] = list(optimised.notes)
    del optimised, eager, net
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------- backends
def backend_candidates(device, backend='all', int8=False):
    """``[(backend, precision, channels_last)]`` to compare: every candidate, or one backend's.

    ``'all'``: what ``backend=auto`` times (:func:`runtime.backends.auto.candidates`) plus the
    backends this device cannot run (shown as unavailable with the reason); ``int8`` adds the
    int8 candidates (:func:`~runtime.backends.auto.candidates` with precision 'int8').
    """
    from fmdepth_ros.runtime.backends import BACKENDS, default_precision
    from fmdepth_ros.runtime.backends.auto import candidates
    found = candidates(device)
    found += candidates(device, 'int8') if int8 else []
    names = {c[0] for c in found}
    found += [(b, default_precision(b, device), False) for b in BACKENDS if b not in names]
    if backend != 'all':
        found = [c for c in found if c[0] == backend]
    return found


def bench_backends(width, height, encoder, device, frames, warmup, images, decoder='featdepth',
                   backend='all', calibration=None):
    """Side-by-side rows of every backend candidate against the eager fp32 reference.

    ``calibration``: a folder of camera images; adds the int8 rows, calibrated on its frames
    (weights here are random: their depth difference to eager says nothing of a trained
    model's, see docs/benchmarks.md "int8" for the accuracy on real LiDAR).

    Each row (keyed by its label, e.g. ``'openvino bf16'``): ``median_ms``, ``p99_ms``,
    ``memory_last_mb``, ``max_rel_depth_diff`` (to eager fp32), ``speedup`` (eager median /
    its median), ``build_s`` (export + engine build); or ``unavailable`` with the reason.
    """
    from fmdepth_ros.errors import BackendUnavailable
    from fmdepth_ros.runtime.backends import GraphSource
    from fmdepth_ros.runtime.backends.auto import _build, label
    cfg = bench_config(width, height, encoder, device, decoder)
    torch.manual_seed(0)
    net = DepthNet(encoder, decoder=cfg.model.depth_decoder, min_depth=cfg.model.min_depth,
                   max_depth=cfg.model.max_depth).eval()
    eager = EagerReference(copy_module(net), cfg, device)
    rows = {'eager fp32': measure(eager.predict, images, frames, warmup, device)}
    rows['eager fp32'].update(speedup=1.0, max_rel_depth_diff=0.0)
    reference = rows['eager fp32']['median_ms']
    graph = GraphSource(net, cfg)
    # int8 rows share one quantised graph (same graph and frames): the first row quantises,
    # the others read it from this run's cache folder
    cache = tempfile.TemporaryDirectory(prefix='fmdepth-bench-int8-') if calibration else None
    engine_options = {'cache_dir': cache.name, 'stem': 'bench'} if cache else {}
    try:
        for candidate in backend_candidates(device, backend, int8=bool(calibration)):
            name = label(*candidate)
            start = time.perf_counter()
            try:
                if candidate[1] == 'int8' and 'calibration' not in engine_options:
                    from fmdepth_ros.runtime.quantize import calibration_inputs
                    engine_options['calibration'] = calibration_inputs(calibration, height, width)
                predictor = _build(net, cfg, device, candidate, graph, None, engine_options)
            except BackendUnavailable as exc:
                rows[name] = {'unavailable': str(exc)}
                continue
            build_s = time.perf_counter() - start
            row = measure(predictor.predict, images, frames, warmup, device)
            row.update(speedup=reference / row['median_ms'], build_s=build_s,
                       max_rel_depth_diff=max_relative_difference(eager.predict, predictor.predict,
                                                                  images[:4]),
                       describe=predictor.describe())
            if predictor.engine is not None:
                row.update(measure_swap(predictor, net.state_dict(), images))
            rows[name] = row
            del predictor
    finally:
        if cache is not None:
            cache.cleanup()
    return {'size': f'{width}x{height}', 'encoder': encoder, 'rows': rows}


def measure_swap(predictor, state_dict, images):
    """Refit delay of an engine and the frame latency meanwhile (refinement weight push).

    ``load_depth_state`` runs on a thread of its own (as in the refiner) while frames keep
    being predicted here. Returns ``swap_s`` (kept weights -> the engine using them) and
    ``frames_during_swap`` / ``median_ms_during_swap`` of the frames predicted meanwhile.
    """
    import threading
    done = threading.Event()

    def swap():
        try:
            predictor.load_depth_state(state_dict)
        finally:
            done.set()

    thread = threading.Thread(target=swap, name='fmdepth-bench-swap')
    thread.start()
    latencies = []
    i = 0
    while not done.is_set():
        start = time.perf_counter()
        predictor.predict(images[i % len(images)])
        latencies.append((time.perf_counter() - start) * 1e3)
        i += 1
    thread.join()
    return {'swap_s': predictor.swap_seconds[-1], 'frames_during_swap': len(latencies),
            'median_ms_during_swap': float(np.median(latencies)) if latencies else None}


def copy_module(module):
    """Deep copy of ``module`` (the eager reference moves its network; keep ours intact)."""
    import copy
    return copy.deepcopy(module)


def format_backends(result):
    """Text table of :func:`bench_backends`' result."""
    header = (f'{"backend":>28} {"median ms":>10} {"p99 ms":>8} {"RSS MiB":>8} '
              f'{"max rel diff":>13} {"x eager":>8} {"weight swap s":>14}')
    lines = [f'backends side by side ({result["size"]} R{result["encoder"]}, same frames):',
             header, '-' * len(header)]
    for name, row in result['rows'].items():
        if 'unavailable' in row:
            lines.append(f'{name:>28}  unavailable: {row["unavailable"]}')
            continue
        lines.append(f'{name:>28} {row["median_ms"]:>10.1f} {row["p99_ms"]:>8.1f} '
                     f'{row["memory_last_mb"]:>8.0f} {row["max_rel_depth_diff"]:>13.2e} '
                     f'{row["speedup"]:>7.2f}x '
                     + (f'{row["swap_s"]:>14.2f}' if 'swap_s' in row else f'{"-":>14}'))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- node
def bench_node(width, height, encoder, device, opts, frames, warmup, images, K,
               decoder='featdepth', node_latency=None):
    """End-to-end node latency, measured by ``node_latency`` (the ROS tools layer's).

    ``node_latency(cfg, device, opts, frames, warmup, images, K) -> dict`` is
    :func:`fmdepth_ros.ros.tools.bench_node.node_latency` when ``fmdepth bench`` runs with ROS 2;
    None (no ROS) gives a ``skipped`` row.
    """
    if node_latency is None:
        return {'skipped': 'rclpy / the node is not importable; install ROS 2 or the '
                           'ros-rclpy wheels (scripts/setup_env.sh) to measure it'}
    cfg = bench_config(width, height, encoder, device, decoder)
    return node_latency(cfg, device, opts, frames, warmup, images, K)


def node_overhead_summary(result):
    """Return the node keys of a bench ``result`` from its ``node_overhead`` rows (per camera).

    ``node``: the row whose camera size is the network size (else the first); ``node_overhead_ms``:
    its overhead, end-to-end minus the same frames' network forward (medians of per-frame
    differences); ``node_overhead_ms_by_size``: the same per camera size;
    ``node_overhead_subtracted_ms``: the older estimate, node end-to-end median minus the
    optimised path's median of the model table (two runs: noisy on a shared CPU).
    """
    rows = [r for r in result.get('node_overhead') or [] if 'overhead_ms' in r]
    out = {'node': None, 'node_overhead_ms': None, 'node_overhead_ms_by_size': {},
           'node_overhead_subtracted_ms': None}
    skipped = [r for r in result.get('node_overhead') or [] if 'skipped' in r]
    if not rows:
        out['node'] = skipped[0] if skipped else None
        return out
    node = next((r for r in rows if r['camera_size'] == r['size']), rows[0])
    out['node'] = node
    out['node_overhead_ms'] = node['overhead_ms']
    out['node_overhead_ms_by_size'] = {r['camera_size']: r['overhead_ms'] for r in rows}
    models = result.get('models') or []
    if node['camera_size'] == node['size'] and models:
        out['node_overhead_subtracted_ms'] = (node['median_ms']
                                              - models[0]['optimised']['median_ms'])
    return out


def format_node_overhead(rows):
    """Text table of the per-stage node medians: one column pair (wall / cpu ms) per camera."""
    names = []
    for row in rows:
        names += [n for n in row['stages'] if n not in names]
    width = 22
    header = f'{"stage (median ms)":<{width}}' + ''.join(
        f' {row["camera_size"] + " wall/cpu":>22}' for row in rows)
    lines = [f'node stages (network {rows[0]["size"]} R{rows[0]["encoder"]}, one frame in '
             f'flight, {rows[0]["frames"]} frames; cpu = the stage thread\'s CPU time):',
             header, '-' * len(header)]

    def cell(stage):
        if stage is None:
            return f' {"-":>22}'
        cpu = '-' if stage['cpu_ms'] is None else f'{stage["cpu_ms"]:.2f}'
        return f' {stage["wall_ms"]:>13.2f} / {cpu:>6}'

    for after in (False, True):
        if after:
            lines.append('after depth/image is published (frame rate, not latency):')
        for name in names:
            if any(row['stages'].get(name, {}).get('after_publish') != after
                   for row in rows if name in row['stages']):
                continue
            cells = ''.join(cell(row['stages'].get(name)) for row in rows)
            lines.append(f'{name:<{width}}{cells}')
    for label, key in (('end-to-end', 'median_ms'), ('network', 'network_ms'),
                       ('overhead (e2e-network)', 'overhead_ms'),
                       ('overhead p99', 'overhead_p99_ms'),
                       ('= transport+handoff', 'transport_ms'),
                       ('+ node work', 'node_work_ms'),
                       ('node work, cpu', 'node_work_cpu_ms'),
                       ('after-publish work', 'after_publish_ms')):
        if all(key in row for row in rows):
            lines.append(f'{label:<{width}}' + ''.join(f' {row[key]:>22.2f}' for row in rows))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- refinement
def bench_refinement(width, height, encoder, device, opts, frames, warmup, images, K,
                     iterations, decoder='featdepth'):
    """Refinement iterations/s while inference runs, and the inference slow-down it causes."""
    from fmdepth_ros.checkpoint import build_model
    from fmdepth_ros.runtime.refinement import OnlineRefiner
    cfg = bench_config(width, height, encoder, device, decoder)
    cfg.refine.iterations = int(iterations)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    predictor = DepthPredictor(model.depth_net, cfg, device=device, **opts)
    refiner = OnlineRefiner(model, cfg, device=device, on_weights=predictor.load_depth_state)
    order = {fid: i for i, fid in enumerate(sorted(cfg.model.frame_ids))}
    window = {'images': np.stack([images[order[fid]] for fid in cfg.model.frame_ids]), 'K': K}
    alone = measure(predictor.predict, images, frames, warmup, device)
    refiner.start()
    try:
        refiner.submit(window)
        while not refiner.stats()['busy'] and refiner.stats()['queue']:
            time.sleep(0.001)
        latencies = []
        window_seconds = []
        last = refiner.stats()
        start = time.perf_counter()
        cap = start + (600.0 if device == 'cpu' else 120.0)
        i = 0
        while i < frames or (not window_seconds and time.perf_counter() < cap):
            image = images[i % len(images)]
            t0 = time.perf_counter()
            predictor.predict(image)
            latencies.append(time.perf_counter() - t0)
            refiner.submit(window)
            stats = refiner.stats()
            if stats['processed'] > last['processed'] and stats['last_seconds']:
                window_seconds.append(stats['last_seconds'])
            last = stats
            i += 1
        while not window_seconds and time.perf_counter() < cap:   # finish the first window
            time.sleep(0.01)
            stats = refiner.stats()
            if stats['processed'] > last['processed'] and stats['last_seconds']:
                window_seconds.append(stats['last_seconds'])
        stats = refiner.stats()
    finally:
        refiner.stop()
    ms = np.asarray(latencies) * 1000.0
    during = {'frames': int(len(ms)), 'median_ms': float(np.median(ms)),
              'p99_ms': float(np.percentile(ms, 99)), 'fps': float(1000.0 / ms.mean())}
    its = (iterations * len(window_seconds) / sum(window_seconds)) if window_seconds else None
    return {'size': f'{width}x{height}', 'encoder': encoder, 'iterations_per_window': iterations,
            'windows': len(window_seconds), 'iterations_per_s': its,
            'inference_alone': alone, 'inference_during': during,
            'slowdown': during['median_ms'] / alone['median_ms'] - 1.0,
            'swaps': int(stats.get('swaps', 0)), 'errors': int(stats.get('errors', 0)),
            'last_error': stats.get('last_error')}


# ----------------------------------------------------------------------------- output
def format_table(result):
    """Return the human-readable report of a bench ``result`` dict."""
    lines = [f'fmdepth bench: {result["device"]} ({result["device_name"]}), torch '
             f'{result["torch"]}, batch 1, {result["frames"]} timed frames after '
             f'{result["warmup"]} warm-up',
             f'{result["decoder"]} decoder; (a) eager fp32 reference; (b) optimised: '
             f'{result["optimised_path"]}']
    loads = [v for v in (result.get('load_average_start'), result.get('load_average_end'))
             if v is not None]
    cores = os.cpu_count() or 1
    if loads and not result['device'].startswith('cuda') and max(loads) > 0.5 * cores:
        lines.append(f'warning: 1-min load average {max(loads):.1f} on {cores} cores: other '
                     'processes share the CPU, wall-clock times are inflated (see cpu ms)')
    lines.append('')
    cpu = not result['device'].startswith('cuda')
    mem_unit = 'GPU peak MiB' if result['device'].startswith('cuda') else 'RSS MiB'
    header = (f'{"size":>9} {"enc":>4} {"path":>10} {"median ms":>10} {"p99 ms":>8} '
              f'{"frames/s":>9} {mem_unit + " first/last":>22} {"b/a":>6} {"max rel diff":>13}')
    if cpu:
        header += f' {"cpu ms":>8}'
    lines += [header, '-' * len(header)]
    for row in result['models']:
        for key, name in (('eager', '(a) eager'), ('optimised', '(b) optim')):
            r = row[key]
            memory = f'{r["memory_first_mb"]:.0f} / {r["memory_last_mb"]:.0f}'
            extra = (f'{row["speedup"]:>5.2f}x {row["max_rel_depth_diff"]:>13.2e}'
                     if key == 'optimised' else f'{"":>6} {"":>13}')
            if cpu:
                extra += f' {r["process_cpu_ms_median"]:>8.1f}'
            lines.append(f'{row["size"]:>9} {"R" + str(row["encoder"]):>4} {name:>10} '
                         f'{r["median_ms"]:>10.2f} {r["p99_ms"]:>8.2f} {r["fps"]:>9.1f} '
                         f'{memory:>22} {extra}')
        for note in row.get('notes', []):
            lines.append(f'{"":>15} note: {note}')
    node = result.get('node')
    lines.append('')
    if node is None:
        lines.append('node end-to-end: not run (--node-frames 0)')
    elif 'skipped' in node:
        lines.append(f'node end-to-end: skipped: {node["skipped"]}')
    else:
        for row in result.get('node_overhead') or [node]:
            if 'skipped' in row:
                lines.append(f'node end-to-end, {row.get("camera_size", "?")} camera: '
                             f'skipped: {row["skipped"]}')
                continue
            lines.append(f'node end-to-end (Image published -> depth/image received, rclpy '
                         f'in-process, {row["camera_size"]} camera, {row["size"]} '
                         f'R{row["encoder"]}, optimised path): median {row["median_ms"]:.2f} '
                         f'ms, p99 {row["p99_ms"]:.2f} ms, {row["frames"]} frames; overhead '
                         f'(minus the same frames\' network) {row["overhead_ms"]:.2f} ms')
        rows = [r for r in result.get('node_overhead') or [] if 'stages' in r]
        if rows:
            lines += ['', format_node_overhead(rows), '']
    for backends in result.get('backends') or []:
        lines += ['', format_backends(backends)]
    if result.get('node_overhead_subtracted_ms') is not None:
        lines.append(f'node overhead, older estimate (node end-to-end median minus the '
                     f'optimised path median of the table): '
                     f'{result["node_overhead_subtracted_ms"]:.1f} ms')
    ref = result.get('refinement')
    if ref is None:
        lines.append('online refinement: not run (--refine-frames 0)')
    else:
        its = ('n/a (no window finished)' if ref['iterations_per_s'] is None
               else f'{ref["iterations_per_s"]:.2f} it/s')
        lines.append(f'online refinement ({ref["size"]} R{ref["encoder"]}, '
                     f'{ref["iterations_per_window"]} it/window, {ref["windows"]} windows): '
                     f'{its}; inference median {ref["inference_alone"]["median_ms"]:.2f} -> '
                     f'{ref["inference_during"]["median_ms"]:.2f} ms while refining '
                     f'({100 * ref["slowdown"]:+.0f}%)'
                     + (f'; errors: {ref["last_error"]}' if ref['errors'] else ''))
    return '\n'.join(lines)

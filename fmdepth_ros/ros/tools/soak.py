"""``fmdepth soak``: a long-run reliability check of the ``fmdepth`` node, in one process.

A probe node publishes synthetic frames (``image`` + ``camera_info``) into a
:class:`~fmdepth_ros.ros.depth_node.DepthNode` of the same process (both on one
``MultiThreadedExecutor`` spinning in a background thread, real rclpy and DDS) and waits for the
answers on ``depth/image``, ``depth/camera_info`` and ``odom`` with at most ``in_flight`` frames
outstanding. A short sequence from :func:`fmdepth_ros.data.synth.render_sequence` is rendered
once and cycled with monotonically increasing stamps; with ``loop=True`` the stamps jump back in
time once in the middle, like a looping bag (the stamps stay unique, so every answer can still
be matched to exactly one published frame).

Measured and checked (:func:`check_soak` lists the failures):

* resident memory (RSS; psutil, else ``/proc/self/statm``) after the warm-up and at the end;
* every published frame answered exactly once on ``depth/image`` and ``depth/camera_info``, in
  publication order; ``odom`` never twice nor out of order;
* the refinement queue length never above its bound (``OnlineRefiner.stats()``);
* no processing error, no refinement error, no warning other than the expected bag-loop one.

Thread and file-descriptor counts at start and end are reported too (a leak shows there).
"""

import collections
import ctypes
import gc
import os
import tempfile
import threading
import time

from fmdepth_ros.atomic_io import write_json_atomic
from fmdepth_ros.errors import CliError

HELP = 'long-run reliability check of the node'

MIB = 1024.0 * 1024.0
FRAME_PERIOD_NS = 100_000_000          # 10 Hz
FIRST_STAMP_NS = 1_000_000_000_000     # 1000 s: room to loop back in time
EXPECTED_LOOP_WARNING = 'stamp_backwards'


def rss_bytes():
    """Resident set size of this process in bytes (psutil, else /proc/self/statm)."""
    try:
        import psutil
    except ImportError:
        with open('/proc/self/statm') as statm:
            return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    return int(psutil.Process().memory_info().rss)


def settled_rss_bytes():
    """RSS after ``gc.collect()`` and glibc ``malloc_trim(0)``: live memory, less allocator cache.

    Without the trim, memory freed by a refinement step may stay in the allocator's free
    lists and make RSS jump by tens of MiB between samples, hiding a slow leak.
    """
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: plain RSS
        pass
    return rss_bytes()


def open_fds():
    """Open file descriptors of this process (-1 when /proc is missing)."""
    try:
        return len(os.listdir('/proc/self/fd'))
    except OSError:
        return -1


def soak_stamps(frames, loop=True):
    """Stamps in nanoseconds of the ``frames`` published frames, int list.

    10 Hz, increasing; with ``loop`` the second half starts before the first frame (one jump
    back in time in the middle, as when a bag loops) and increases again. All stamps are unique.
    """
    if not loop or frames < 4:
        return [FIRST_STAMP_NS + i * FRAME_PERIOD_NS for i in range(frames)]
    half = frames // 2
    back = FIRST_STAMP_NS - (frames - half + 10) * FRAME_PERIOD_NS
    return ([FIRST_STAMP_NS + i * FRAME_PERIOD_NS for i in range(half)]
            + [back + i * FRAME_PERIOD_NS for i in range(frames - half)])


class AnswerTracker:
    """Matches the answers of one output topic to the published frames (thread-safe).

    ``expect_all``: every published frame must be answered (depth/image, depth/camera_info);
    otherwise only duplicates, order and unknown stamps are checked (odom skips the first frame
    of each window).
    """

    def __init__(self, name, expect_all=True):
        """``name``: the topic name used in reports."""
        self.name = name
        self.expect_all = expect_all
        self.index_of = {}            # stamp_ns -> publication index
        self.answered = set()
        self.count = 0
        self.duplicates = 0
        self.order_violations = 0
        self.unknown = 0
        self._last_index = -1
        self._lock = threading.Lock()

    def sent(self, stamp_ns, index):
        """Record that frame ``index`` with ``stamp_ns`` was published."""
        with self._lock:
            self.index_of[stamp_ns] = index

    def answer(self, stamp_ns):
        """Record one answer; returns the publication index or None when unknown."""
        with self._lock:
            index = self.index_of.get(stamp_ns)
            if index is None:
                self.unknown += 1
                return None
            if stamp_ns in self.answered:
                self.duplicates += 1
                return index
            self.answered.add(stamp_ns)
            self.count += 1
            if index < self._last_index:
                self.order_violations += 1
            self._last_index = max(self._last_index, index)
            return index

    def missing(self):
        """Return the number of published frames without an answer (0 unless ``expect_all``)."""
        with self._lock:
            return len(self.index_of) - len(self.answered) if self.expect_all else 0

    def report(self):
        """Return the counts as a dict."""
        return {'answered': self.count, 'missing': self.missing(),
                'duplicates': self.duplicates, 'order_violations': self.order_violations,
                'unknown': self.unknown}


def _make_probe(context, on_answer):
    """Create the probe node: image/camera_info publishers, answer subscriptions."""
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    probe = rclpy.create_node('fmdepth_soak_probe', context=context)
    image_pub = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    info_pub = probe.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
    for msg_type, topic in ((Image, 'depth/image'), (CameraInfo, 'depth/camera_info'),
                            (Odometry, 'odom')):
        probe.create_subscription(msg_type, topic,
                                  lambda msg, t=topic: on_answer(t, msg), 50)
    return probe, image_pub, info_pub


def write_soak_config(path, width, height, decoder='monodepth2'):
    """Write the soak's network config (small CPU config, ``decoder``, PoseNet at WxH) to ``path``.

    The PoseNet input is the image size (the small config resizes to 64x192) and the
    Monodepth2 decoder is the default: both only make each frame cheaper, so more frames fit
    in the same time; the node code exercised is the same. ``decoder='featdepth'`` soaks the
    paper's decoder.
    """
    from fmdepth_ros.config import save_config, small_cpu_config
    cfg = small_cpu_config()
    cfg.model.height, cfg.model.width = int(height), int(width)
    cfg.model.pose_height, cfg.model.pose_width = int(height), int(width)
    cfg.model.depth_decoder = decoder
    save_config(cfg, path)


def _node_parameters(width, height, refine, refine_every, refine_iterations, device,
                     config_file, extra=None):
    from rclpy.parameter import Parameter
    values = {'device': device, 'config_file': config_file,
              'width': int(width), 'height': int(height),
              'refine': bool(refine), 'refine_every': int(refine_every),
              'refine_iterations': int(refine_iterations), 'publish_colored': False,
              'publish_tf': True}
    values.update(extra or {})
    return [Parameter(k, value=v) for k, v in values.items()]


def run_soak(frames=10000, width=64, height=64, refine=True, refine_every=200,
             refine_iterations=1, sequence_length=20, in_flight=4, warmup=500, loop=True,
             frame_timeout=60.0, device='cpu', torch_threads=None, sample_every=500,
             decoder='monodepth2', node_params=None, progress=None, seed=0):
    """Publish ``frames`` synthetic frames into an in-process DepthNode and check the answers.

    Args:
        frames: frames published in total (warm-up included).
        width, height: image and network input size in pixels (multiples of 32, at least
            64: the ResNet bottleneck is 1/32 of the input and must be >= 2 pixels).
        refine, refine_every, refine_iterations: the node's online refinement settings.
        sequence_length: frames rendered once and cycled.
        in_flight: frames published but not yet answered on depth/image, at most (1 =
            lock-step; keep it <= the node's ``queue_size``).
        warmup: frames before the start RSS is taken.
        loop: jump back in time once in the middle (bag loop).
        frame_timeout: seconds to wait for the oldest outstanding frame before it is given up
            (it then counts as missing).
        device: node device ('cpu').
        torch_threads: the node's ``cpu_threads`` (torch intra-op threads, process-wide;
            None = the node's default, half the cores).
        sample_every: RSS sample period in frames (``rss_samples_mb``); each sample waits
            for the refiner to be idle and is taken with :func:`settled_rss_bytes`.
        decoder: depth decoder of the soak network config (:func:`write_soak_config`).
        node_params: extra node parameters {name: value}.
        progress: optional callable(done_frames, result_so_far_dict) every ``sample_every``.
        seed: synthetic sequence seed.

    Returns:
        dict: ``frames``, ``wall_s``, ``fps``, ``rss_start_mb``/``rss_end_mb``/
        ``rss_growth_mb`` (settled RSS after the warm-up and at the end),
        ``rss_growth_from_min_mb`` (end minus the lowest sample: a leak shows here even when
        the start sample was high by chance), ``rss_peak_mb``
        (plain RSS, highest sample), ``rss_slope_kib_per_1k`` (least-squares slope of the
        samples after the warm-up), ``rss_samples_mb`` [(frame, MiB)], per-topic answer
        counts (``depth``, ``info``, ``odom``: answered, missing, duplicates,
        order_violations, unknown), ``given_up``, ``refine`` (queue_max, queue_size and the
        refiner counters), ``node_errors``, ``warnings`` {kind: count},
        ``threads_start``/``threads_end``, ``fds_start``/``fds_end`` and the settings.
    """
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from std_msgs.msg import Header

    from fmdepth_ros.data.synth import render_sequence
    from fmdepth_ros.messages import stamp_to_ns
    from fmdepth_ros.ros import conversions as conv
    from fmdepth_ros.ros.depth_node import DepthNode

    if frames < 1 or in_flight < 1 or sample_every < 1:
        raise ValueError('frames, in_flight and sample_every must be >= 1')
    warmup = min(max(int(warmup), 0), frames - 1)
    if torch_threads:
        node_params = dict(node_params or {}, cpu_threads=int(torch_threads))
    seq = render_sequence(max(int(sequence_length), 3), width=width, height=height, seed=seed)
    head = Header(frame_id='camera_optical')
    images = [conv.rgb_to_image(im, head) for im in seq.images]
    info = conv.camera_info_for(head, seq.K, width, height)
    stamps = soak_stamps(frames, loop)
    trackers = {'depth/image': AnswerTracker('depth/image'),
                'depth/camera_info': AnswerTracker('depth/camera_info'),
                'odom': AnswerTracker('odom', expect_all=False)}
    outstanding = collections.OrderedDict()   # stamp -> publication time, depth/image
    cond = threading.Condition()

    def on_answer(topic, msg):
        stamp = stamp_to_ns(msg.header.stamp)
        trackers[topic].answer(stamp)
        if topic == 'depth/image':
            with cond:
                outstanding.pop(stamp, None)
                cond.notify_all()

    tmp = tempfile.TemporaryDirectory(prefix='fmdepth-soak-')
    config_file = os.path.join(tmp.name, 'soak_config.yaml')
    write_soak_config(config_file, width, height, decoder)
    context = rclpy.Context()
    rclpy.init(args=[], context=context)  # not sys.argv: fmdepth's own options
    node = probe = executor = thread = None
    result = {'frames': int(frames), 'width': int(width), 'height': int(height),
              'decoder': decoder, 'refine': bool(refine), 'refine_every': int(refine_every),
              'refine_iterations': int(refine_iterations), 'in_flight': int(in_flight),
              'warmup': warmup, 'loop': bool(loop), 'sequence_length': len(seq)}
    try:
        node = DepthNode(context=context, parameter_overrides=_node_parameters(
            width, height, refine, refine_every, refine_iterations, device, config_file,
            node_params))
        probe, image_pub, info_pub = _make_probe(context, on_answer)
        executor = MultiThreadedExecutor(num_threads=3, context=context)
        executor.add_node(node)
        executor.add_node(probe)
        thread = threading.Thread(target=executor.spin, name='fmdepth-soak-executor',
                                  daemon=True)
        thread.start()
        _wait_for_discovery(node, image_pub, info_pub)
        refiner = node.refiner
        queue_max = 0
        given_up = 0
        samples = []
        rss_start = rss_peak = None
        threads_start = fds_start = None
        start = time.monotonic()
        for i, stamp in enumerate(stamps):
            if i == warmup:
                rss_start = _settled_sample(refiner, frame_timeout)
                samples.append((i, round(rss_start / MIB, 2)))
                threads_start, fds_start = threading.active_count(), open_fds()
                start = time.monotonic()
            with cond:
                given_up += _wait_for_room(cond, outstanding, in_flight, frame_timeout)
                outstanding[stamp] = time.monotonic()
            for tracker in trackers.values():
                tracker.sent(stamp, i)
            ros_stamp = conv.stamp_from_ns(stamp)
            msg = images[i % len(images)]
            msg.header.stamp = ros_stamp
            info.header.stamp = ros_stamp
            info_pub.publish(info)
            image_pub.publish(msg)
            if refiner is not None:
                queue_max = max(queue_max, refiner.stats()['queue'])
            if (i + 1) % sample_every == 0 and i + 1 > warmup and i + 1 < frames:
                rss_peak = max(rss_peak or 0, rss_bytes())
                rss = _settled_sample(refiner, frame_timeout)
                samples.append((i + 1, round(rss / MIB, 2)))
                if progress is not None:
                    progress(i + 1, {'rss_mb': rss / MIB, 'given_up': given_up,
                                     **trackers['depth/image'].report()})
        with cond:
            given_up += _wait_for_room(cond, outstanding, 1, frame_timeout, drain=True)
        wall = time.monotonic() - start
        _wait_for_last_answers(node, trackers)
        rss_peak = max(rss_peak or 0, rss_bytes())
        rss_end = _settled_sample(refiner, frame_timeout)
        samples.append((frames, round(rss_end / MIB, 2)))
        rss_start = rss_start if rss_start is not None else rss_end
        refine_stats = refiner.stats() if refiner is not None else {}
        result.update({
            'wall_s': round(wall, 2),
            'fps': round((frames - warmup) / wall, 2) if wall > 0 else None,
            'rss_start_mb': round(rss_start / MIB, 2), 'rss_end_mb': round(rss_end / MIB, 2),
            'rss_growth_mb': round((rss_end - rss_start) / MIB, 2),
            'rss_peak_mb': round(max(rss_peak, max(r for _, r in samples) * MIB) / MIB, 2),
            'rss_growth_from_min_mb': round(rss_end / MIB - min(r for _, r in samples), 2),
            'rss_slope_kib_per_1k': _slope_kib_per_1k(samples),
            'rss_samples_mb': samples,
            'depth': trackers['depth/image'].report(),
            'info': trackers['depth/camera_info'].report(),
            'odom': trackers['odom'].report(),
            'given_up': given_up,
            'refine_stats': {'queue_max': queue_max,
                             **{k: refine_stats.get(k) for k in (
                                 'queue_size', 'submitted', 'dropped', 'processed',
                                 'improved', 'reverted', 'swaps', 'errors', 'last_error')}},
            'node_errors': node.stats.errors,
            'node_published': node.stats.published,
            'warnings': dict(node.warnings.counts),
            'threads_start': threads_start, 'threads_end': threading.active_count(),
            'fds_start': fds_start, 'fds_end': open_fds(),
        })
    finally:
        if executor is not None:
            executor.shutdown()
        if thread is not None:
            thread.join(10.0)
        for n in (probe, node):
            if n is not None:
                n.destroy_node()
        rclpy.try_shutdown(context=context)
        tmp.cleanup()
    return result


def _settled_sample(refiner, timeout):
    """Settled RSS in bytes once the refiner is idle (no half-done window counted)."""
    if refiner is not None:
        refiner.wait_idle(timeout=timeout)
    return settled_rss_bytes()


def _slope_kib_per_1k(samples):
    """Least-squares RSS slope of ``samples`` [(frame, MiB)] in KiB per 1000 frames (or None)."""
    if len(samples) < 3:
        return None
    import numpy as np
    frames, mib = np.asarray(samples, dtype=np.float64).T
    slope = np.polyfit(frames, mib, 1)[0]      # MiB per frame
    return round(float(slope) * 1024.0 * 1000.0, 1)


def _wait_for_discovery(node, image_pub, info_pub, timeout=20.0):
    """Block until the probe and the node see each other on every soak topic."""
    deadline = time.monotonic() + timeout
    while True:
        ready = (image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0
                 and node.depth_pub.get_subscription_count() > 0
                 and node.info_pub.get_subscription_count() > 0
                 and node.odom_pub.get_subscription_count() > 0)
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f'the soak probe and the node did not discover each other within '
                               f'{timeout:.0f} s')
        time.sleep(0.01)


def _wait_for_last_answers(node, trackers, timeout=5.0):
    """Let the last frame's camera_info and odom answers (sent after its depth) arrive."""
    deadline = time.monotonic() + timeout
    depth = trackers['depth/image'].count
    while time.monotonic() < deadline:
        # The node counts a frame (and a pose) just after publishing it.
        if (node.stats.published >= depth and trackers['depth/camera_info'].count >= depth
                and trackers['odom'].count >= node.stats.poses):
            return
        time.sleep(0.01)


def _wait_for_room(cond, outstanding, limit, timeout, drain=False):
    """With ``cond`` held: wait until fewer than ``limit`` frames are outstanding.

    With ``drain`` wait until none is. A frame outstanding for more than ``timeout`` seconds
    is given up (removed). Returns the number of frames given up.
    """
    given_up = 0
    while outstanding and (drain or len(outstanding) >= limit):
        oldest = next(iter(outstanding.values()))
        remaining = oldest + timeout - time.monotonic()
        if remaining <= 0:
            outstanding.popitem(last=False)
            given_up += 1
            continue
        cond.wait(min(remaining, 1.0))
    return given_up


def check_soak(result, max_rss_growth_mb=None):
    """Return the list of failed soak checks of ``result`` (empty = all good), one line each."""
    problems = []
    for key in ('depth', 'info'):
        counts = result[key]
        for what in ('missing', 'duplicates', 'order_violations', 'unknown'):
            if counts[what]:
                problems.append(f'{key}: {counts[what]} {what.replace("_", " ")}')
    for what in ('duplicates', 'order_violations', 'unknown'):
        if result['odom'][what]:
            problems.append(f'odom: {result["odom"][what]} {what.replace("_", " ")}')
    refine = result['refine_stats']
    if refine.get('queue_size') is not None and refine['queue_max'] > refine['queue_size']:
        problems.append(f'refinement queue reached {refine["queue_max"]} '
                        f'> bound {refine["queue_size"]}')
    if refine.get('errors'):
        problems.append(f'refinement errors: {refine["errors"]} ({refine.get("last_error")})')
    if result['node_errors']:
        problems.append(f'node processing errors: {result["node_errors"]}')
    expected = {EXPECTED_LOOP_WARNING: 1} if result['loop'] and result['frames'] >= 4 else {}
    if result['warnings'] != expected:
        problems.append(f'warnings {result["warnings"]}, expected {expected}')
    if max_rss_growth_mb is not None and result['rss_growth_mb'] > max_rss_growth_mb:
        problems.append(f'RSS grew by {result["rss_growth_mb"]:.1f} MiB '
                        f'> {max_rss_growth_mb:.1f} MiB')
    return problems


def format_soak(result):
    """Human-readable multi-line summary of a :func:`run_soak` result."""
    refine = result['refine_stats']
    lines = [
        f'soak: {result["frames"]} frames {result["width"]}x{result["height"]} '
        f'({result["decoder"]} decoder), refinement '
        f'{"on" if result["refine"] else "off"} (every {result["refine_every"]} frames, '
        f'{result["refine_iterations"]} iterations), in flight {result["in_flight"]}, '
        f'loop {"yes" if result["loop"] else "no"}',
        f'time: {result["wall_s"]:.1f} s after {result["warmup"]} warm-up frames '
        f'({result["fps"]} frames/s)',
        f'RSS (settled): start {result["rss_start_mb"]:.1f} MiB, end '
        f'{result["rss_end_mb"]:.1f} MiB, growth {result["rss_growth_mb"]:+.1f} MiB (from the '
        f'lowest sample {result["rss_growth_from_min_mb"]:+.1f} MiB), slope '
        f'{result["rss_slope_kib_per_1k"]} KiB/1000 frames; peak {result["rss_peak_mb"]:.1f} MiB',
        'RSS samples (frame: MiB): ' + ', '.join(f'{f}: {m:.0f}'
                                                 for f, m in result['rss_samples_mb']),
    ]
    for key, topic in (('depth', 'depth/image'), ('info', 'depth/camera_info'),
                       ('odom', 'odom')):
        c = result[key]
        lines.append(f'{topic}: {c["answered"]} answered, {c["missing"]} missing, '
                     f'{c["duplicates"]} duplicates, {c["order_violations"]} out of order, '
                     f'{c["unknown"]} unknown')
    lines.append(f'refinement: queue max {refine["queue_max"]} (bound {refine["queue_size"]}), '
                 f'{refine["submitted"]} submitted, {refine["dropped"]} dropped, '
                 f'{refine["processed"]} processed, {refine["improved"]} improved, '
                 f'{refine["reverted"]} reverted, {refine["swaps"]} swaps, '
                 f'{refine["errors"]} errors')
    lines.append(f'node: {result["node_published"]} published, {result["node_errors"]} errors, '
                 f'warnings {result["warnings"]}; threads {result["threads_start"]} -> '
                 f'{result["threads_end"]}, fds {result["fds_start"]} -> {result["fds_end"]}')
    return '\n'.join(lines)


def configure_parser(parser):
    """Add the ``fmdepth soak`` arguments."""
    parser.add_argument('--frames', type=int, default=10000, help='frames to publish (10000)')
    parser.add_argument('--width', type=int, default=64,
                        help='image width, multiple of 32, >= 64 (64)')
    parser.add_argument('--height', type=int, default=64,
                        help='image height, multiple of 32, >= 64 (64)')
    parser.add_argument('--decoder', choices=('monodepth2', 'featdepth'), default='monodepth2',
                        help='depth decoder of the soak network (monodepth2: cheaper frames)')
    parser.add_argument('--no-refine', action='store_true', help='turn online refinement off')
    parser.add_argument('--refine-every', type=int, default=200, metavar='N',
                        help='submit a refinement window every N frames (200)')
    parser.add_argument('--refine-iterations', type=int, default=1, metavar='N',
                        help='Adam steps per refinement window (1)')
    parser.add_argument('--in-flight', type=int, default=4, metavar='N',
                        help='frames published but not yet answered, at most (4; 1 = lock-step; '
                        "keep it <= the node's queue_size, 5)")
    parser.add_argument('--warmup', type=int, default=500, metavar='N',
                        help='frames before the start RSS is taken (500: two refinement windows)')
    parser.add_argument('--no-loop', action='store_true',
                        help='no jump back in time in the middle (bag loop)')
    parser.add_argument('--sample-every', type=int, default=500, metavar='N',
                        help='RSS sample period in frames (500)')
    parser.add_argument('--threads', type=int, default=None, metavar='N',
                        help="torch threads (the node's cpu_threads; default: half the cores)")
    parser.add_argument('--max-rss-growth', type=float, default=None, metavar='MIB',
                        help='fail when RSS grows by more than MIB after the warm-up')
    parser.add_argument('--json', default=None, metavar='PATH',
                        help='also write the result as JSON (atomically)')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')


def run(args):
    """Run the soak; print the summary; exit code 0 when every check passed, 1 otherwise."""
    if min(args.frames, args.in_flight, args.refine_every, args.sample_every) < 1:
        raise CliError('--frames, --in-flight, --refine-every and --sample-every must be >= 1')
    if args.width < 64 or args.height < 64 or args.width % 32 or args.height % 32:
        raise CliError(f'--width and --height must be multiples of 32 and at least 64, '
                       f'got {args.width}x{args.height}')
    if args.refine_iterations < 1:
        raise CliError('--refine-iterations must be >= 1')

    def progress(done, now):
        print(f'{done}/{args.frames} frames, RSS {now["rss_mb"]:.1f} MiB, '
              f'{now["answered"]} answered, {now["duplicates"]} duplicates, '
              f'{now["order_violations"]} out of order', flush=True)

    try:
        import rclpy  # noqa: F401 - only checks that ROS is there
    except ImportError as exc:
        raise CliError(f'fmdepth soak needs rclpy and the ROS messages: {exc}') from None
    from fmdepth_ros.ros.model_setup import StartupError
    try:
        result = run_soak(frames=args.frames, width=args.width, height=args.height,
                          decoder=args.decoder,
                          refine=not args.no_refine, refine_every=args.refine_every,
                          refine_iterations=args.refine_iterations, in_flight=args.in_flight,
                          warmup=args.warmup, loop=not args.no_loop,
                          torch_threads=args.threads, sample_every=args.sample_every,
                          progress=None if args.quiet else progress)
    except StartupError as exc:
        raise CliError(f'the node did not start: {exc}') from None
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    problems = check_soak(result, args.max_rss_growth)
    result['problems'] = problems
    print(format_soak(result))
    if args.json:
        write_json_atomic(args.json, result, sort_keys=False)
    for problem in problems:
        print(f'FAILED: {problem}')
    print('soak: OK' if not problems else f'soak: {len(problems)} check(s) failed')
    return 0 if not problems else 1


if __name__ == '__main__':
    import argparse
    import sys
    _parser = argparse.ArgumentParser(prog='fmdepth soak', description=__doc__.splitlines()[0])
    configure_parser(_parser)
    try:
        sys.exit(run(_parser.parse_args()))
    except CliError as _exc:
        print(f'fmdepth soak: error: {_exc}', file=sys.stderr)
        sys.exit(2)

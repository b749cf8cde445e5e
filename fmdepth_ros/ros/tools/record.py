"""``fmdepth record``: run the ``fmdepth`` node in-process on a bag and store its outputs.

The input bag's camera stream (and ``/tf_static``) is played through rclpy by
:class:`ros.tools.replay.BagPlayer` into a :class:`~fmdepth_ros.ros.depth_node.DepthNode`
living in a private namespace of the same process. Playback is **lock-step** by default: after
each image the player waits until the node has published that frame's depth (same stamp), so
every input frame is answered however slow the machine is (``--rate R`` plays with the recorded
timing instead, like a live robot, and frames the node cannot keep up with are dropped).

Output: a rosbag2 bag (MCAP by default, written with ``rosbags``) holding the node's outputs as
published (CDR bytes, header stamps = input stamps)::

    /fmdepth/depth/image         sensor_msgs/Image 32FC1, metres (NaN = invalid)
    /fmdepth/depth/camera_info   sensor_msgs/CameraInfo
    /fmdepth/odom                nav_msgs/Odometry (odom -> base_link)

and in ``metadata.yaml``'s ``custom_data``: ``fmdepth.source_bag``, ``fmdepth.checkpoint``,
``fmdepth.frames_in``, ``fmdepth.frames_answered``. The bag is written to a temporary folder and
renamed into place when complete. ``fmdepth evaluate --bag`` reads it (see bag_eval.py).

``passes=N`` (:func:`record_passes`) plays the bag N times through the same node, so online
refinement carries its weights from one pass to the next (the node resets its frame window and
odometry when the stamps jump back); each pass goes to its own bag ``OUT/pass_K``.
``refine_sync=True`` makes lock-step playback also wait until the node's refiner has finished
the windows of each frame, so what the refinement achieves does not depend on the machine's
speed or load (a robot gets the same when its refiner keeps up with ``refine_every``).
"""

from dataclasses import dataclass, field
import os
from pathlib import Path
import re
import shutil
import threading
import time
from typing import Dict, List, Optional

from fmdepth_ros.atomic_io import replace_atomic
from fmdepth_ros.errors import CliError

HELP = 'run the node on a bag and store its outputs'

OUTPUT_TOPICS = {
    'depth/image': ('/fmdepth/depth/image', 'sensor_msgs/msg/Image'),
    'depth/camera_info': ('/fmdepth/depth/camera_info', 'sensor_msgs/msg/CameraInfo'),
    'odom': ('/fmdepth/odom', 'nav_msgs/msg/Odometry'),
}
DEPTH_TOPIC = OUTPUT_TOPICS['depth/image'][0]
RESEND_AFTER_S = 5.0     # lock-step: resend a frame not answered within this many seconds
ODOM_TOPIC = OUTPUT_TOPICS['odom'][0]
SCIENTIFIC = re.compile(r'[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+')


@dataclass
class RecordResult:
    """What a recording produced.

    Attributes:
        out_bag: path of the output bag.
        frames_in: images published to the node.
        input_stamps: [frames_in] header stamps (ns) of those images, in order.
        depth_stamps: stamps (ns) of the depth images received, in order.
        odom_count: odometry messages received.
        missing: input stamps without a depth answer.
        wall_s: seconds the playback took.
        refiner: the node's refinement counters at the end of the pass (``processed``,
            ``improved``, ``reverted``, ``swaps``, ...; empty with refinement off).
    """

    out_bag: Path
    frames_in: int = 0
    input_stamps: List[int] = field(default_factory=list)
    depth_stamps: List[int] = field(default_factory=list)
    odom_count: int = 0
    missing: List[int] = field(default_factory=list)
    wall_s: float = 0.0
    refiner: Dict[str, object] = field(default_factory=dict)

    @property
    def all_answered(self) -> bool:
        """True when every input frame got a depth image with its own stamp."""
        return not self.missing and self.frames_in > 0


class _OutputRecorder:
    """Subscribes (raw CDR) to the node's outputs; :meth:`flush` writes them to the bag.

    Callbacks only queue messages: the rosbags writer (sqlite3 in particular) must be used from
    the thread that opened it, so the playback thread flushes after every frame.
    """

    def __init__(self, node, namespace):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

        from fmdepth_ros.ros.tools.replay import resolve_message_class
        self.writer = None
        self.lock = threading.Condition()
        self.pending = []
        self.depth_stamps: List[int] = []
        self.counts: Dict[str, int] = {}
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=ReliabilityPolicy.RELIABLE)
        group = MutuallyExclusiveCallbackGroup()
        self.conns = {}
        for relative, (stored, msgtype) in OUTPUT_TOPICS.items():
            node.create_subscription(
                resolve_message_class(msgtype), f'{namespace}/{relative}',
                lambda raw, stored=stored: self._on_message(stored, raw), qos, raw=True,
                callback_group=group)

    def attach(self, writer, typestore) -> None:
        """Record into ``writer`` from now on (one per pass); counters start from zero."""
        with self.lock:
            self.writer = writer
            self.pending, self.depth_stamps, self.counts = [], [], {}
            self.conns = {stored: writer.add_connection(stored, msgtype, typestore=typestore)
                          for stored, msgtype in OUTPUT_TOPICS.values()}

    def _on_message(self, stored, raw):
        from fmdepth_ros.data.bag import header_stamp_ns
        stamp = header_stamp_ns(raw)
        with self.lock:
            if self.writer is None:
                return
            self.pending.append((self.conns[stored], stamp if stamp is not None else
                                 time.time_ns(), raw))
            self.counts[stored] = self.counts.get(stored, 0) + 1
            if stored == DEPTH_TOPIC:
                self.depth_stamps.append(stamp)
            self.lock.notify_all()

    def flush(self) -> None:
        """Write the queued messages (call from the thread that opened the writer)."""
        with self.lock:
            pending, self.pending = self.pending, []
        for conn, stamp, raw in pending:
            self.writer.write(conn, stamp, raw)

    def wait_for(self, predicate, timeout) -> bool:
        """Wait until ``predicate()`` (called under the lock) is true, or ``timeout`` s."""
        with self.lock:
            return self.lock.wait_for(predicate, timeout)


def record_bag(bag, out_bag, checkpoint: Optional[str] = None, node_parameters=None,
               image_topic=None, info_topic=None, rate: Optional[float] = None,
               frame_timeout: float = 60.0, storage: str = 'mcap', context=None,
               log=print, refine_sync: bool = False) -> RecordResult:
    """Run the depth node on ``bag`` and write its outputs to ``out_bag`` (see module docstring).

    Args:
        bag: input bag (folder, .mcap or .db3).
        out_bag: output bag folder (must not exist).
        checkpoint: weights for the node (``weights`` parameter); None = its default.
        node_parameters: further node parameters {name: value}.
        image_topic, info_topic: input topics (auto-detected when None).
        rate: None = lock-step (every frame answered); else play at this speed factor.
        frame_timeout: lock-step: seconds to wait for one frame's depth before giving up on it.
        storage: 'mcap' or 'sqlite3'.
        context: an initialised rclpy Context to use (None: a private one is created).
        log: callable(str) for progress and warnings.
        refine_sync: lock-step: also wait for the node's refiner after every frame.
    """
    return record_passes(bag, out_bag, 1, checkpoint, node_parameters, image_topic,
                         info_topic, rate, frame_timeout, storage, context, log, refine_sync)[0]


def record_passes(bag, out_dir, passes: int, checkpoint: Optional[str] = None,
                  node_parameters=None, image_topic=None, info_topic=None,
                  rate: Optional[float] = None, frame_timeout: float = 60.0,
                  storage: str = 'mcap', context=None, log=print,
                  refine_sync: bool = False) -> List[RecordResult]:
    """Play ``bag`` ``passes`` times through one node; pass K goes to ``out_dir/pass_K``.

    With ``passes == 1`` the recording is ``out_dir`` itself (what :func:`record_bag` writes).
    Arguments as :func:`record_bag`; returns one :class:`RecordResult` per pass.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.exceptions import ParameterException
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from fmdepth_ros.data.bag import (COMPRESSED_TYPE, choose_camera_topics, header_stamp_ns,
                                      open_bag)
    from fmdepth_ros.ros.depth_node import DepthNode
    from fmdepth_ros.ros.model_setup import StartupError
    from fmdepth_ros.ros.tools.replay import BagPlayer

    out_dir = Path(out_dir)
    if passes < 1:
        raise CliError(f'passes must be >= 1, got {passes}')
    if out_dir.exists():
        raise CliError(f'{out_dir} exists already')
    with open_bag(bag) as reader:
        image_topic, info_topic = choose_camera_topics(reader, image_topic, info_topic)
        compressed = any(c.topic == image_topic and c.msgtype == COMPRESSED_TYPE
                         for c in reader.connections)
        has_tf_static = any(c.topic == '/tf_static' for c in reader.connections)
    if info_topic is None:
        raise CliError(f'no camera_info topic in {bag}: the node needs intrinsics')

    own_context = context is None
    if own_context:
        context = Context()
        rclpy.init(args=[], context=context)  # not sys.argv: fmdepth's own options
    namespace = f'/fmdepth_record_{os.getpid()}'
    params = {'skip_without_subscribers': False, 'publish_colored': False,
              'use_compressed': compressed, 'max_frame_gap': 3600.0,
              'camera_info_wait': 0.5 if rate is None else 0.05}
    if checkpoint:
        params['weights'] = str(checkpoint)
    params.update(node_parameters or {})
    tmp_parent = out_dir.with_name(f'.{out_dir.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp_parent, ignore_errors=True)
    tmp_parent.mkdir(parents=True)
    tmp_out = tmp_parent / out_dir.name
    pass_paths = [tmp_out] if passes == 1 else [tmp_out / f'pass_{k + 1}'
                                                for k in range(passes)]
    if passes > 1:
        tmp_out.mkdir()
    results: List[RecordResult] = []
    nodes, executor, spinner = [], None, None
    try:
        try:
            depth_node = DepthNode(context=context, namespace=namespace, parameter_overrides=[
                Parameter(k, value=v) for k, v in params.items()])
        except (StartupError, ParameterException) as exc:
            raise CliError(f'depth node: {exc}') from None
        nodes.append(depth_node)
        io_node = rclpy.create_node('fmdepth_record', context=context)
        nodes.append(io_node)
        typestore = get_typestore(Stores.ROS2_JAZZY)
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        recorder = _OutputRecorder(io_node, namespace)
        image_out = f'{namespace}/image' + ('/compressed' if compressed else '')
        topics = [image_topic, info_topic] + (['/tf_static'] if has_tf_static else [])
        player = BagPlayer(io_node, bag, rate=rate, topics=topics,
                           remap={image_topic: image_out,
                                  info_topic: f'{namespace}/camera_info'},
                           log=lambda text: log(f'warning: {text}'))
        executor = MultiThreadedExecutor(num_threads=4, context=context)
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, name='fmdepth_record_spin',
                                   daemon=True)
        spinner.start()
        if not player.wait_for_subscribers([image_out, f'{namespace}/camera_info'], 10.0):
            raise CliError('the depth node did not subscribe to the replayed topics')
        _wait_until(lambda: all(io_node.count_publishers(f'{namespace}/{t}') > 0
                                for t in OUTPUT_TOPICS), 10.0)
        time.sleep(0.5)  # discovery completes on both sides (best-effort inputs drop early)
        for k, path in enumerate(pass_paths):
            if passes > 1:
                log(f'pass {k + 1}/{passes}')
            with Writer(path, version=8, storage_plugin=plugin) as writer:
                recorder.attach(writer, typestore)
                result = _play_once(player, recorder, depth_node, spinner, image_topic,
                                    info_topic, image_out, namespace, rate, frame_timeout,
                                    refine_sync, log, RecordResult(out_dir if passes == 1
                                                                   else out_dir / path.name),
                                    header_stamp_ns)
                recorder.flush()
                for key, value in (('source_bag', str(bag)), ('checkpoint', str(checkpoint)),
                                   ('frames_in', str(result.frames_in)),
                                   ('frames_answered', str(result.frames_in
                                                           - len(result.missing))),
                                   ('pass', str(k + 1))):
                    writer.set_custom_data(f'fmdepth.{key}', value)
            results.append(result)
        executor.shutdown(timeout_sec=5.0)
        replace_atomic(tmp_out, out_dir)
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if spinner is not None:
            spinner.join(timeout=5.0)
        for node in nodes:
            node.destroy_node()
        if own_context:
            rclpy.try_shutdown(context=context)
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return results


def _play_once(player, recorder, depth_node, spinner, image_topic, info_topic, image_out,
               namespace, rate, frame_timeout, refine_sync, log, result, header_stamp_ns):
    """Play the bag once into the node (lock-step unless ``rate``); fills ``result``."""
    last_info = []
    publishers = player.publishers
    refiner = getattr(depth_node, 'refiner', None)

    def after_publish(topic, msgtype, log_ns, raw):
        if topic == info_topic and rate is None:
            if not last_info:
                # The node pairs by exact stamp but does not wait for a first
                # camera_info: let the very first one arrive before its image.
                time.sleep(0.3)
            last_info[:] = [raw]
        if topic != image_topic:
            return
        stamp = header_stamp_ns(raw)
        stamp = log_ns if stamp is None else stamp
        result.frames_in += 1
        result.input_stamps.append(stamp)
        recorder.flush()
        if not spinner.is_alive():
            raise CliError('the ROS executor stopped unexpectedly (see the log above)')
        if rate is not None:
            return
        deadline = time.monotonic() + frame_timeout
        while not recorder.wait_for(lambda: stamp in recorder.depth_stamps[-5:],
                                    min(RESEND_AFTER_S, deadline - time.monotonic())):
            if not spinner.is_alive():
                raise CliError('the ROS executor stopped unexpectedly (see the log '
                               'above)')
            if time.monotonic() >= deadline:
                log(f'warning: no depth for the frame stamped {stamp} within '
                    f'{frame_timeout:.0f} s')
                missing_frames.append(stamp)
                return
            # Best-effort inputs may lose a sample (e.g. right after discovery):
            # send the frame again; the node drops a duplicate stamp it already has.
            for data, out in ((last_info[0] if last_info else None,
                               f'{namespace}/camera_info'), (raw, image_out)):
                if data is not None:
                    publishers[out].publish(data)
        if refine_sync and refiner is not None:
            # Depth is published before the frame's refinement window is submitted: wait
            # until the node has finished the frame, then for the refiner.
            published = published_before + result.frames_in - len(missing_frames)
            _wait_until(lambda: depth_node.stats.published >= published, frame_timeout)
            refiner.wait_idle()

    published_before = depth_node.stats.published
    missing_frames = []
    start = time.monotonic()
    player.play(after_publish=after_publish)
    # The last frame's odometry follows its depth; give late outputs a moment.
    recorder.wait_for(lambda: len(recorder.depth_stamps) >= result.frames_in,
                      frame_timeout if rate is None else 2.0)
    expected_odom = max(result.frames_in - 1, 0)
    recorder.wait_for(lambda: recorder.counts.get(ODOM_TOPIC, 0) >= expected_odom, 2.0)
    if refine_sync and refiner is not None:
        refiner.wait_idle()
    result.wall_s = time.monotonic() - start
    recorder.flush()
    with recorder.lock:
        result.depth_stamps = list(recorder.depth_stamps)
        result.odom_count = recorder.counts.get(ODOM_TOPIC, 0)
        answered = set(result.depth_stamps)
        result.missing = [s for s in result.input_stamps if s not in answered]
    if refiner is not None and depth_node.params.get('refine'):
        result.refiner = dict(refiner.stats())
    return result


def _wait_until(predicate, timeout) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def configure_parser(parser):
    """Add the ``fmdepth record`` arguments."""
    parser.add_argument('bag', metavar='BAG', help='input bag (folder, .mcap or .db3)')
    parser.add_argument('--checkpoint', metavar='CKPT', default=None,
                        help='node weights (fmdepth train / convert); default: random init')
    parser.add_argument('--out', metavar='OUT_BAG', required=True,
                        help="output bag folder for the node's depth / camera_info / odom")
    parser.add_argument('--rate', type=float, default=None, metavar='R',
                        help='play with the recorded timing at speed R (frames may be dropped); '
                             'default: lock-step, every frame answered')
    parser.add_argument('--image-topic', default=None, help='input image topic (auto)')
    parser.add_argument('--info-topic', default=None, help='input camera_info topic (auto)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='output storage (mcap)')
    parser.add_argument('--param', nargs='+', default=[], metavar='NAME:=VALUE',
                        help='node parameters, e.g. refine:=true scale_mode:=camera_height')
    parser.add_argument('--frame-timeout', type=float, default=60.0, metavar='S',
                        help='lock-step: seconds to wait for one frame (60)')


def parse_param_values(items) -> Dict[str, object]:
    """['name:=value', ...] -> {name: value} with YAML typing (true, 3, 0.5, 5e-4, [1, 2])."""
    import yaml
    values = {}
    for item in items or ():
        name, sep, text = item.partition(':=')
        if not sep or not name:
            raise CliError(f'--param expects NAME:=VALUE, got {item!r}')
        try:
            values[name] = yaml.safe_load(text) if text else ''
        except yaml.YAMLError:
            values[name] = text
        if isinstance(values[name], str) and SCIENTIFIC.fullmatch(text.strip()):
            values[name] = float(text)      # YAML 1.1 reads 5e-4 (no dot) as a string
    return values


def run(args) -> int:
    """Record the node's outputs; prints a summary and exits 1 if frames went unanswered."""
    if args.rate is not None and not args.rate > 0:
        raise CliError('--rate must be > 0')
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        raise CliError(f'rclpy is not importable ({exc}); run scripts/setup_env.sh') from None
    result = record_bag(args.bag, args.out, checkpoint=args.checkpoint,
                        node_parameters=parse_param_values(args.param),
                        image_topic=args.image_topic, info_topic=args.info_topic,
                        rate=args.rate, frame_timeout=args.frame_timeout, storage=args.storage,
                        log=lambda text: print(f'fmdepth record: {text}'))
    answered = result.frames_in - len(result.missing)
    print(f'fmdepth record: {answered}/{result.frames_in} frames answered, '
          f'{result.odom_count} odometry messages, {result.wall_s:.1f} s -> {result.out_bag}')
    return 0 if result.all_answered else 1

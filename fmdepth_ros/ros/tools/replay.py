"""``fmdepth replay``: play a rosbag2 bag through rclpy, for machines without ``ros2 bag``.

Where ROS 2 is installed, ``ros2 bag play BAG`` remains the documented way; this player exists
because rosbag2 is not on PyPI. Messages are read with ``rosbags`` (MCAP or sqlite3, no ROS
install) and published as their recorded CDR bytes (``Publisher.publish(bytes)``), so nothing
is deserialised on the hot path; the first message of every topic is checked once with
``rclpy.serialization.deserialize_message`` against the local message class.

Timing follows the recorded log times divided by ``--rate``; ``--start-offset`` skips the first
seconds (``/tf_static`` is always sent); ``--loop`` repeats; ``--clock`` publishes
rosgraph_msgs/Clock on ``/clock`` (bag time, every ``1 / --clock-rate`` s and before each
message) for nodes with ``use_sim_time``. QoS: each topic uses the profile recorded in the bag
(reliability, durability, depth); ``/tf_static`` is always reliable + transient local.
"""

import importlib
import threading
import time
from typing import Callable, Dict, List, Optional

from fmdepth_ros.errors import CliError

HELP = 'play a rosbag2 bag through rclpy'

TF_STATIC = '/tf_static'
DEFAULT_DEPTH = 10


def resolve_message_class(msgtype: str):
    """Return the rclpy class of e.g. 'sensor_msgs/msg/Image', or None when it is missing."""
    parts = msgtype.split('/')
    if len(parts) == 2:                       # ROS 1 style 'pkg/Name'
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3:
        return None
    try:
        module = importlib.import_module(f'{parts[0]}.{parts[1]}')
    except ImportError:
        return None
    return getattr(module, parts[2], None)


def qos_for(topic: str, offered=()):
    """Return the QoSProfile for publishing ``topic`` (from the bag's offered profiles)."""
    from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
    reliability = ReliabilityPolicy.RELIABLE
    durability = DurabilityPolicy.VOLATILE
    depth = DEFAULT_DEPTH
    for profile in offered or ():
        name = getattr(profile.reliability, 'name', '')
        if name == 'BEST_EFFORT':
            reliability = ReliabilityPolicy.BEST_EFFORT
        if getattr(profile.durability, 'name', '') == 'TRANSIENT_LOCAL':
            durability = DurabilityPolicy.TRANSIENT_LOCAL
        if getattr(profile.history, 'name', '') == 'KEEP_LAST' and profile.depth > 0:
            depth = max(int(profile.depth), 1)
    if topic == TF_STATIC:
        reliability, durability, depth = (ReliabilityPolicy.RELIABLE,
                                          DurabilityPolicy.TRANSIENT_LOCAL, 100)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=durability)


class BagPlayer:
    """Publishes a bag's messages with rclpy on ``node`` (see the module docstring).

    Args:
        node: an rclpy node that owns the publishers.
        bag: bag folder, ``.mcap`` or ``.db3`` file.
        rate: playback speed factor (> 0); None plays as fast as possible.
        loop: repeat until stopped.
        clock: publish /clock (rosgraph_msgs/Clock).
        clock_rate: /clock publishing frequency in Hz of wall time.
        start_offset: seconds of the bag to skip from its start.
        topics: only these topics (None: all).
        remap: {bag topic: published topic}.
        log: callable(str) for warnings (default: the node's logger).
    """

    def __init__(self, node, bag, rate: Optional[float] = 1.0, loop: bool = False,
                 clock: bool = False, clock_rate: float = 40.0, start_offset: float = 0.0,
                 topics: Optional[List[str]] = None, remap: Optional[Dict[str, str]] = None,
                 log: Optional[Callable[[str], None]] = None):
        """Open the bag, resolve message classes and create one publisher per topic."""
        from rclpy.serialization import deserialize_message

        from fmdepth_ros.data.bag import open_bag
        if rate is not None and not rate > 0:
            raise CliError(f'--rate must be > 0, got {rate}')
        if start_offset < 0:
            raise CliError(f'--start-offset must be >= 0, got {start_offset}')
        if clock_rate <= 0:
            raise CliError(f'--clock-rate must be > 0, got {clock_rate}')
        self.node, self.bag, self.rate, self.loop = node, bag, rate, loop
        self.clock_period = 1.0 / clock_rate
        self.start_offset_ns = int(round(start_offset * 1e9))
        self.log = log or (lambda text: node.get_logger().warning(text))
        self.remap = dict(remap or {})
        self.counts: Dict[str, int] = {}
        self.skipped: Dict[str, str] = {}
        self._stop = threading.Event()
        self._publishers = {}
        self._clock_pub = None
        self._last_clock_ns = None
        with open_bag(bag) as reader:
            self.start_ns, self.end_ns = reader.start_time, reader.end_time
            wanted = set(topics) if topics else None
            present = {c.topic for c in reader.connections}
            if wanted and not wanted & present:
                raise CliError(f'none of the topics {sorted(wanted)} is in {bag} (topics: '
                               f'{", ".join(sorted(present))})')
            first = {}
            conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
            for conn in conns:
                if not conn.msgcount:
                    continue                  # nothing to play (and nothing to check)
                cls = resolve_message_class(conn.msgtype)
                if cls is None:
                    self.skipped[conn.topic] = f'{conn.msgtype} is not importable in this Python'
                    continue
                first[conn.id] = (conn, cls)
            pending = dict(first)
            for conn, _, raw in reader.messages(connections=[c for c, _ in first.values()]):
                if conn.id not in pending:
                    continue
                try:
                    deserialize_message(bytes(raw), pending.pop(conn.id)[1])
                except Exception as exc:  # a definition mismatch between the bag and this ROS
                    self.skipped[conn.topic] = f'{conn.msgtype} does not deserialise ({exc})'
                if not pending:
                    break
            self._connections = []
            for conn, cls in first.values():
                if conn.topic in self.skipped:
                    continue
                self._connections.append(conn)
                out_topic = self.remap.get(conn.topic, conn.topic)
                if out_topic not in self._publishers:
                    qos = qos_for(conn.topic, getattr(conn.ext, 'offered_qos_profiles', ()))
                    self._publishers[out_topic] = node.create_publisher(cls, out_topic, qos)
        for topic, why in sorted(self.skipped.items()):
            self.log(f'replay: skipping {topic}: {why}')
        if clock:
            from rclpy.qos import QoSProfile
            try:
                from rosgraph_msgs.msg import Clock
            except ImportError:
                raise CliError('--clock needs rosgraph_msgs (pip install ros-rosgraph-msgs, '
                               'or source a ROS 2 installation)') from None
            self._clock_pub = node.create_publisher(Clock, '/clock', QoSProfile(depth=10))

    @property
    def publishers(self):
        """{published topic: rclpy Publisher}."""
        return dict(self._publishers)

    def stop(self) -> None:
        """Ask :meth:`play` to return (thread-safe)."""
        self._stop.set()

    def wait_for_subscribers(self, topics, timeout: float) -> bool:
        """Wait up to ``timeout`` s until each of ``topics`` (published names) has a subscriber."""
        deadline = time.monotonic() + timeout
        pubs = [self._publishers[t] for t in topics if t in self._publishers]
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.02)
        return all(p.get_subscription_count() > 0 for p in pubs)

    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is None:
            return
        if self._last_clock_ns is not None and bag_ns < self._last_clock_ns and not self.loop:
            bag_ns = self._last_clock_ns                     # never step /clock back in a pass
        from rosgraph_msgs.msg import Clock
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
        self._clock_pub.publish(msg)
        self._last_clock_ns = bag_ns

    def _sleep_until(self, wall_target: float, bag_of_wall: Callable[[float], int]) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= wall_target:
                return
            step = wall_target - now
            if self._clock_pub is not None:
                step = min(step, self.clock_period)
            time.sleep(step)
            if self._clock_pub is not None:
                self._publish_clock(bag_of_wall(min(time.monotonic(), wall_target)))

    def play(self, after_publish: Optional[Callable] = None) -> Dict[str, int]:
        """Publish the bag (once, or until :meth:`stop` with ``loop``); returns counts per topic.

        ``after_publish(topic, msgtype, log_time_ns, raw)`` is called after every message (the
        recorder uses it to wait for the node's answer).
        """
        import rclpy

        from fmdepth_ros.data.bag import open_bag
        first_ns = self.start_ns + self.start_offset_ns
        while not self._stop.is_set():
            wall_start = time.monotonic()

            def bag_of_wall(wall, wall_start=wall_start):
                return first_ns + int((wall - wall_start) * 1e9 * (self.rate or 1.0))

            with open_bag(self.bag) as reader:
                ids = {c.id for c in self._connections}
                conns = [c for c in reader.connections if c.id in ids]
                for conn, log_ns, raw in reader.messages(connections=conns):
                    if self._stop.is_set() or not rclpy.ok(context=self.node.context):
                        self._stop.set()
                        break
                    if log_ns < first_ns and conn.topic != TF_STATIC:
                        continue
                    if self.rate is not None:
                        target = wall_start + max(log_ns - first_ns, 0) / 1e9 / self.rate
                        self._sleep_until(target, bag_of_wall)
                        if self._stop.is_set():
                            break
                    self._publish_clock(max(log_ns, first_ns))
                    data = bytes(raw)
                    self._publishers[self.remap.get(conn.topic, conn.topic)].publish(data)
                    self.counts[conn.topic] = self.counts.get(conn.topic, 0) + 1
                    if after_publish is not None:
                        after_publish(conn.topic, conn.msgtype, log_ns, data)
            if not self.loop:
                break
        return dict(self.counts)


def _parse_remaps(items) -> Dict[str, str]:
    remap = {}
    for item in items or ():
        src, sep, dst = item.partition(':=')
        if not sep or not src or not dst:
            raise CliError(f'--remap expects FROM:=TO, got {item!r}')
        remap[src] = dst
    return remap


def configure_parser(parser):
    """Add the ``fmdepth replay`` arguments."""
    parser.add_argument('bag', metavar='BAG', help='rosbag2 bag folder, .mcap or .db3 file')
    parser.add_argument('--rate', type=float, default=1.0, help='playback speed factor (1.0)')
    parser.add_argument('--loop', action='store_true', help='repeat until interrupted')
    parser.add_argument('--clock', action='store_true',
                        help='publish /clock with the bag time (for use_sim_time nodes)')
    parser.add_argument('--clock-rate', type=float, default=40.0, metavar='HZ',
                        help='/clock frequency in Hz (40)')
    parser.add_argument('--start-offset', type=float, default=0.0, metavar='S',
                        help='skip the first S seconds of the bag')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC', help='only these topics')
    parser.add_argument('--remap', nargs='+', metavar='FROM:=TO', default=[],
                        help='publish bag topic FROM as TO, e.g. /camera/image_raw:=/image')
    parser.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                        help='wait up to S seconds for a subscriber on every image topic')


def run(args) -> int:
    """Play the bag; prints the message counts."""
    try:
        import rclpy
        from rclpy.executors import ExternalShutdownException
    except ImportError as exc:
        raise CliError(f'rclpy is not importable ({exc}); run scripts/setup_env.sh') from None
    remap = _parse_remaps(args.remap)
    rclpy.init(args=[])  # not sys.argv: fmdepth's own options
    node = None
    try:
        node = rclpy.create_node('fmdepth_replay')
        player = BagPlayer(node, args.bag, rate=args.rate, loop=args.loop, clock=args.clock,
                           clock_rate=args.clock_rate, start_offset=args.start_offset,
                           topics=args.topics, remap=remap,
                           log=lambda text: print(f'fmdepth replay: warning: {text}'))
        if args.wait_for_subscribers > 0:
            from fmdepth_ros.data.bag import COMPRESSED_TYPE, IMAGE_TYPE
            images = [remap.get(c.topic, c.topic) for c in player._connections
                      if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)]
            player.wait_for_subscribers(images, args.wait_for_subscribers)
        duration = (player.end_ns - player.start_ns) / 1e9
        print(f'fmdepth replay: {args.bag}: {duration:.1f} s, '
              f'{len(player.publishers)} topics, rate {args.rate}')
        try:
            counts = player.play()
        except (KeyboardInterrupt, ExternalShutdownException):
            counts = dict(player.counts)
        except Exception:
            # SIGINT shut the context down between the loop's rclpy.ok() check and a publish
            # ("publisher's context is invalid"): the same stop, not an error
            if rclpy.ok():
                raise
            counts = dict(player.counts)
        for topic, count in sorted(counts.items()):
            print(f'  {topic}: {count} messages')
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0

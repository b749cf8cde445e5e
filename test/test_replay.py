"""``fmdepth replay``: a kitti2bag bag played through real rclpy publishers and subscribers."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

# These follow the importorskip (E402), so the import order check compares the first one
# with 'import pytest' above (I100).
from fmdepth_ros.cli import main  # noqa: E402, I100
from fmdepth_ros.data.synth import render_sequence  # noqa: E402
from fmdepth_ros.ros.tools.replay import BagPlayer, qos_for  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from synthetic_drive import write_synthetic_drive  # noqa: E402

pytestmark = pytest.mark.ros
NUM_FRAMES = 10
PERIOD_NS = 100_000_000    # render_sequence stamps: 10 Hz


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """Build a small KITTI-format drive and convert it (MCAP)."""
    seq = render_sequence(NUM_FRAMES, width=64, height=32, seed=1)
    root = tmp_path_factory.mktemp('replay')
    drive = write_synthetic_drive(seq, root)
    out = root / 'bag'
    assert main(['kitti2bag', str(drive), str(out), '--no-velodyne']) == 0
    return out, [int(s) for s in seq.stamps_ns]


class Listener:
    """Subscribes to images and /clock on a spinning executor.

    RELIABLE (the player publishes reliably): no sample is lost while discovery completes.
    """

    def __init__(self, context, image_topic='/camera/image_raw'):
        self.node = rclpy.create_node('replay_listener', context=context)
        self.images, self.clock = [], []
        self.lock = threading.Lock()
        self.node.create_subscription(Image, image_topic, self._on_image, 100)
        self.node.create_subscription(Clock, '/clock', self._on_clock, 100)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.on_image = None

    def _on_image(self, msg):
        with self.lock:
            self.images.append((time.monotonic(),
                                msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec))
        if self.on_image:
            self.on_image(len(self.images))

    def _on_clock(self, msg):
        with self.lock:
            self.clock.append(msg.clock.sec * 1_000_000_000 + msg.clock.nanosec)

    def wait_for_publishers(self, topics, timeout=10.0):
        """Wait until each subscription of ``topics`` is matched with a publisher."""
        subscriptions = [s for s in self.node.subscriptions if s.topic_name in topics]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.get_publisher_count() > 0 for s in subscriptions):
                return True
            time.sleep(0.01)
        return False

    def wait(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.images) < count:
            time.sleep(0.01)
        return len(self.images) >= count

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()


def _player(context, bag_path, **kwargs):
    node = rclpy.create_node('player', context=context)
    return node, BagPlayer(node, bag_path, **kwargs)


def test_replay_preserves_stamps_order_timing_and_clock(ros_context, bag):
    """Every image arrives in order with its recorded stamp, paced by the rate; /clock runs."""
    path, stamps = bag
    listener = Listener(ros_context)
    node, player = _player(ros_context, path, rate=2.0, clock=True, clock_rate=50.0)
    try:
        assert player.wait_for_subscribers(['/camera/image_raw', '/clock'], 10.0)
        assert listener.wait_for_publishers(['/camera/image_raw', '/clock'])
        start = time.monotonic()
        counts = player.play()
        wall = time.monotonic() - start
        assert listener.wait(NUM_FRAMES)
        deadline = time.monotonic() + 5.0     # /clock runs alongside: wait for its samples
        while len(listener.clock) < NUM_FRAMES and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        listener.close()
        node.destroy_node()
    assert counts['/camera/image_raw'] == NUM_FRAMES
    assert counts['/camera/camera_info'] == NUM_FRAMES and counts['/tf_static'] == 1
    assert [s for _, s in listener.images] == stamps
    # The bag spans 0.9 s; at rate 2 the player must take at least ~0.45 s (never faster).
    assert wall >= 0.9 * (stamps[-1] - stamps[0]) / 1e9 / 2.0
    clock = np.array(listener.clock)
    assert len(clock) >= NUM_FRAMES
    assert np.all(np.diff(clock) >= 0)
    assert clock[0] >= stamps[0] and clock[-1] <= stamps[-1]


def test_replay_start_offset_and_remap(ros_context, bag):
    """--start-offset skips the first frames; --remap renames the published topic."""
    path, stamps = bag
    listener = Listener(ros_context, image_topic='/image')
    node, player = _player(ros_context, path, rate=None, start_offset=0.45,
                           remap={'/camera/image_raw': '/image'}, topics=['/camera/image_raw'])
    try:
        assert list(player.publishers) == ['/image']
        assert player.wait_for_subscribers(['/image'], 10.0)
        assert listener.wait_for_publishers(['/image'])
        counts = player.play()
        assert listener.wait(5)     # all 5 published (counts below): none can still come
    finally:
        listener.close()
        node.destroy_node()
    assert counts == {'/camera/image_raw': 5}
    assert [s for _, s in listener.images] == stamps[5:]


def test_replay_loop_until_stopped(ros_context, bag):
    """--loop starts again from the beginning until stop() is called."""
    path, stamps = bag
    listener = Listener(ros_context)
    node, player = _player(ros_context, path, rate=10.0, loop=True,
                           topics=['/camera/image_raw'])
    listener.on_image = lambda n: player.stop() if n >= NUM_FRAMES + 3 else None
    try:
        assert player.wait_for_subscribers(['/camera/image_raw'], 10.0)
        assert listener.wait_for_publishers(['/camera/image_raw'])
        thread = threading.Thread(target=player.play)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        listener.close()
        node.destroy_node()
    received = [s for _, s in listener.images]
    assert received[:NUM_FRAMES] == stamps
    assert received[NUM_FRAMES:NUM_FRAMES + 3] == stamps[:3]


def test_tf_static_is_latched_for_late_subscribers(ros_context, bag):
    """/tf_static is published transient-local: a subscriber that joins after playback gets it."""
    TFMessage = pytest.importorskip('tf2_msgs.msg').TFMessage
    path, _ = bag
    node, player = _player(ros_context, path, rate=None, topics=['/tf_static'])
    late = rclpy.create_node('late', context=ros_context)
    got = []
    try:
        assert player.play() == {'/tf_static': 1}
        late.create_subscription(TFMessage, '/tf_static', got.append, qos_for('/tf_static'))
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(late)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        late.destroy_node()
        node.destroy_node()
    assert got, 'no latched /tf_static received'
    children = {t.child_frame_id for t in got[0].transforms}
    assert children == {'camera_optical', 'velodyne'}


def test_qos_from_bag_profiles():
    """Topics get the recorded QoS; /tf_static is always reliable + transient local."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    zero = QosTime(sec=0, nsec=0)
    best_effort = Qos(QosHistory.KEEP_LAST, 3, QosReliability.BEST_EFFORT,
                      QosDurability.VOLATILE, zero, zero, QosLiveliness.AUTOMATIC, zero, False)
    qos = qos_for('/camera/image_raw', [best_effort])
    assert qos.reliability == ReliabilityPolicy.BEST_EFFORT and qos.depth == 3
    assert qos_for('/x').reliability == ReliabilityPolicy.RELIABLE
    static = qos_for('/tf_static', [best_effort])
    assert static.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert static.reliability == ReliabilityPolicy.RELIABLE


def _fmdepth(*args, timeout=120):
    # Not ``-m fmdepth_ros.cli``: that imports cli twice (as __main__), so CliError raised by
    # other modules would not be caught by __main__.main.
    code = 'import sys; from fmdepth_ros.cli import main; sys.exit(main(sys.argv[1:]))'
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def test_replay_cli(bag, tmp_path):
    """``fmdepth replay BAG --rate R --clock`` plays the whole bag in its own process."""
    path, _ = bag
    done = _fmdepth('replay', str(path), '--rate', '20', '--clock')
    assert done.returncode == 0, done.stderr
    assert f'/camera/image_raw: {NUM_FRAMES} messages' in done.stdout


def test_replay_cli_loop_stops_on_ctrl_c(ros_context, bag):
    """``--loop`` keeps playing until SIGINT, then exits 0 with the counts."""
    path, _ = bag
    listener = Listener(ros_context)
    code = 'import sys; from fmdepth_ros.cli import main; sys.exit(main(sys.argv[1:]))'
    proc = subprocess.Popen([sys.executable, '-u', '-c', code, 'replay', str(path), '--loop',
                             '--rate', '10', '--topics', '/camera/image_raw'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()                 # printed when playback starts
        assert first.startswith('fmdepth replay:'), proc.stderr.read()
        # SIGINT once the second pass is being received
        assert listener.wait(NUM_FRAMES + 1, timeout=60), 'the loop never started again'
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    count = int(out.split('/camera/image_raw: ')[1].split()[0])
    assert count > NUM_FRAMES


def test_replay_cli_errors_are_one_line(bag, tmp_path, capsys):
    """A truncated bag, a bad rate and a bad remap give exit code 2 and one line."""
    path, _ = bag
    (mcap_file,) = path.glob('*.mcap')
    broken = tmp_path / 'broken.mcap'
    broken.write_bytes(mcap_file.read_bytes()[:mcap_file.stat().st_size // 3])
    for args, expected in ((['replay', str(broken)], 'broken.mcap'),
                           (['replay', str(path), '--rate', '0'], '--rate'),
                           (['replay', str(path), '--remap', 'nonsense'], '--remap')):
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and 'fmdepth replay: error:' in lines[0] and expected in lines[0]

"""The fmdepth lifecycle node driven through its real lifecycle services while frames stream."""

import threading

from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.ros.tools.soak import settled_rss_bytes
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_helpers import (executor_for, frame_messages, make_node,  # noqa: F401
                          one_torch_thread, ros_graph, spin_until)
import pytest
import rclpy
from sensor_msgs.msg import CameraInfo, Image
from test_soak import robust_rss_trend

pytestmark = pytest.mark.ros


class Manager:
    """A lifecycle manager stand-in: ChangeState / GetState clients, a frame streamer."""

    def __init__(self, context, seq):
        self.node = rclpy.create_node('lifecycle_probe', context=context)
        self.change = self.node.create_client(ChangeState, 'fmdepth/change_state')
        self.get = self.node.create_client(GetState, 'fmdepth/get_state')
        # a count, not the messages: keeping every depth image (~7 per cycle) grew RSS by
        # ~0.13 MiB per cycle in the leak test below, which is the node's memory under test
        self.depths = 0
        self.node.create_subscription(Image, 'depth/image', self._count_depth, 10)
        self.image_pub = self.node.create_publisher(Image, 'image', 10)
        self.info_pub = self.node.create_publisher(CameraInfo, 'camera_info', 10)
        self.seq, self.index = seq, 0
        self.node.create_timer(0.05, self.stream)

    def _count_depth(self, _msg):
        self.depths += 1

    def stream(self):
        """Publish the next frame (timer: frames keep coming during every transition)."""
        image, info = frame_messages(self.seq, self.index % len(self.seq),
                                     stamp_offset_ns=(self.index // len(self.seq)) * 10 ** 9)
        self.index += 1
        self.info_pub.publish(info)
        self.image_pub.publish(image)

    def call(self, client, request):
        """Call a service (the executor spins on another thread); wait for the answer."""
        assert client.wait_for_service(timeout_sec=30.0)
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        assert done.wait(120.0), 'no service answer'
        return future.result()

    def transition(self, transition_id):
        """Request a transition; returns ChangeState's success."""
        return self.call(self.change, ChangeState.Request(
            transition=Transition(id=transition_id))).success

    def state(self):
        """Return the node's current state id."""
        return self.call(self.get, GetState.Request()).current_state.id


@pytest.fixture
def graph():
    """Yield (context, start): start(*nodes) spins them on a background thread."""
    with ros_graph() as context:
        executors = []

        def start(*nodes):
            executor = executor_for(context, *nodes)
            thread = threading.Thread(target=executor.spin, daemon=True)
            thread.start()
            executors.append((executor, thread))
        yield context, start
        for executor, thread in executors:
            executor.shutdown()
            thread.join(30.0)


def test_bad_weights_fail_configure_and_stay_unconfigured(graph, tmp_path):
    """Configure with a broken file: FAILURE, one-line reason, unconfigured, no exception."""
    context, start = graph
    broken = tmp_path / 'broken.pt'
    broken.write_bytes(b'not a checkpoint')
    fmdepth = make_node(context, autostart=False, weights=str(broken))
    manager = Manager(context, render_sequence(2, seed=1))
    start(fmdepth, manager.node)
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert not manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert str(broken) in fmdepth.configure_error and '\n' not in fmdepth.configure_error
    assert fmdepth.predictor is None
    fmdepth.destroy_node()


def _worker_threads():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith('fmdepth'))


# Memory is sampled settled (gc + glibc malloc_trim, as the soak does). Plain RSS grew ~0.9 MiB
# per deactivate/activate cycle (40 MiB over 50): freed memory of the worker threads re-created
# on every activate stays in glibc's per-thread arenas. Settled, 40 cycles measured a 5.4 MiB
# median growth and a 0.23 MiB per cycle Theil-Sen slope within +-8 MiB sample noise
# (720-738 MiB); a leaked model copy would add tens of MiB per cycle.
@pytest.mark.parametrize('cycles', [
    3, pytest.param(50, marks=pytest.mark.slow)])
def test_transitions_while_streaming_leak_no_threads_or_memory(graph, cycles):
    """configure/activate/deactivate x N/cleanup/shutdown through the services, frames flowing."""
    context, start = graph
    fmdepth = make_node(context, autostart=False, refine=True, refine_iterations=1,
                        refine_every=3)
    manager = Manager(context, render_sequence(4, seed=2))
    start(fmdepth, manager.node)
    baseline = _worker_threads()
    assert manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == State.PRIMARY_STATE_INACTIVE
    assert fmdepth.predictor is not None and manager.depths == 0
    samples, threads = [], []
    for cycle in range(cycles):
        assert manager.transition(Transition.TRANSITION_ACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        count = manager.depths
        assert spin_until_event(lambda: manager.depths > count), f'no depth, cycle {cycle}'
        assert manager.transition(Transition.TRANSITION_DEACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert not fmdepth.frames.running and not fmdepth.refiner.stats()['running']
        published = fmdepth.stats.published
        threads.append(_worker_threads())
        samples.append((cycle, settled_rss_bytes() / 2 ** 20))
        # inactive: the frames still streaming are not processed
        assert fmdepth.stats.published == published
    assert all(t == baseline for t in threads), threads
    if cycles >= 20:
        # Theil-Sen slope (KiB per 1000 cycles) and median growth (MiB), as test_soak: one
        # leaked model copy (tens of MiB) per cycle is far above 1 MiB per cycle
        slope, growth = robust_rss_trend(samples[5:])
        assert growth < 24.0 and slope < 1024.0 * 1000.0, (slope, growth, samples)
    assert manager.transition(Transition.TRANSITION_CLEANUP)
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert fmdepth.predictor is None and fmdepth.refiner is None
    assert manager.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert manager.state() == State.PRIMARY_STATE_FINALIZED
    fmdepth.destroy_node()


def spin_until_event(condition, timeout=120.0):
    """Wait (the executor spins elsewhere) until ``condition()``; polls a condition variable."""
    event = threading.Event()
    deadline = timeout
    while deadline > 0:
        if condition():
            return True
        event.wait(0.02)
        deadline -= 0.02
    return condition()

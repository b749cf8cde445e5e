"""Bad inputs and faults never take the fmdepth node down (issue 9, items 1, 2, 4).

The node's callbacks are called directly with real sensor_msgs messages (the publishers and
the networks are real); each bad input must give its own throttled warning kind, reset the
window/odometry where needed, and the node must keep publishing for the good frames after it.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.ros import conversions as conv
from fmdepth_ros.ros.model_setup import StartupError
from node_helpers import (executor_for, frame_messages, header, make_node,  # noqa: F401
                          one_torch_thread, ros_graph, spin_until)

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def seq():
    """Six synthetic 64x192 frames."""
    return render_sequence(6)


@pytest.fixture(scope='module')
def node():
    """One randomly initialised node for the module (publishes without subscribers)."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, warning_period=60.0,
                      camera_info_wait=0.0)
        yield n
        n.destroy_node()


class Feeder:
    """Feeds frames of ``seq`` with increasing stamps, tracking what got published."""

    def __init__(self, node, seq):
        self.node, self.seq = node, seq
        self.stamp = 10 ** 12 + node.stats.received * 10 ** 9

    def good(self, index=0, with_info=True, dt_ns=100_000_000):
        """Feed one good frame; returns True when it was published."""
        self.stamp += dt_ns
        image, info = frame_messages(self.seq, index % len(self.seq))
        image.header.stamp = info.header.stamp = conv.stamp_from_ns(self.stamp)
        if with_info:
            self.node.camera_info_callback(info)
        before = self.node.stats.published
        self.node.image_callback(image)
        return self.node.stats.published == before + 1


def _warned(node, kind):
    return node.warnings.counts[kind]


def test_unsupported_encoding_empty_and_bad_step_are_dropped(node, seq):
    """Unsupported encoding, empty image and step/size mismatch warn and are dropped."""
    feed = Feeder(node, seq)
    assert feed.good(0)
    before = node.stats.published
    bad = [Image(height=4, width=4, encoding='yuv422', step=8, data=bytes(32)),
           Image(height=0, width=0, encoding='rgb8', step=0, data=b''),
           Image(height=64, width=192, encoding='rgb8', step=576, data=bytes(100)),
           Image(height=4, width=4, encoding='rgb8', step=5, data=bytes(80))]
    count = _warned(node, 'bad_image')
    for msg in bad:
        msg.header = header(feed.stamp + 1)
        node.image_callback(msg)
    assert node.stats.published == before
    assert _warned(node, 'bad_image') == count + len(bad)
    assert feed.good(1) and feed.good(2)


def test_size_change_resets_window_and_keeps_publishing(node, seq):
    """A new image size mid-stream resets the window, and frames of the new size publish."""
    feed = Feeder(node, seq)
    feed.good(0)
    feed.good(1)
    count = _warned(node, 'size_change')
    feed.stamp += 100_000_000
    small = conv.rgb_to_image(seq.images[2][::2, ::2].copy(), header(feed.stamp))
    node.camera_info_callback(conv.camera_info_for(small.header, seq.K / 2, 96, 32))
    node.image_callback(small)
    assert _warned(node, 'size_change') == count + 1
    assert len(node.window.frames) == 1
    assert node.stats.published > 0


@pytest.mark.parametrize('bad_value', [0.0, math.nan])
def test_bad_intrinsics_are_ignored(node, seq, bad_value):
    """camera_info with zero or NaN focal length warns and is never paired."""
    feed = Feeder(node, seq)
    count = _warned(node, 'bad_camera_info')
    info = CameraInfo(header=header(feed.stamp + 100_000_000), width=192, height=64)
    info.k = [bad_value, 0.0, 96.0, 0.0, bad_value, 32.0, 0.0, 0.0, 1.0]
    node.camera_info_callback(info)
    assert _warned(node, 'bad_camera_info') == count + 1
    assert feed.good(3, with_info=False)        # falls back to the latest valid camera_info
    assert node.infos.latest[1][0, 0] > 0


def test_missing_camera_info_warns_but_depth_is_published(seq):
    """Images without any camera_info for longer than the timeout: warning, depth still out."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, camera_info_timeout=0.1,
                      camera_info_wait=0.0)
        try:
            feed = Feeder(n, seq)
            assert feed.good(0, with_info=False)
            import time
            time.sleep(0.15)
            assert feed.good(1, with_info=False)
            assert _warned(n, 'no_camera_info') >= 1
            assert n.window.batch_window() is None       # no K: no refinement window
        finally:
            n.destroy_node()


def test_stamps_backwards_reset_window_and_odometry(node, seq):
    """A bag loop (stamp going back) resets window and odometry; publishing continues."""
    feed = Feeder(node, seq)
    for i in range(3):
        assert feed.good(i)
    assert node.odometry.frames >= 2
    count = _warned(node, 'stamp_backwards')
    feed.stamp -= 5 * 10 ** 9
    assert feed.good(0)
    assert _warned(node, 'stamp_backwards') == count + 1
    assert node.odometry.frames == 0 and len(node.window.frames) == 1
    assert feed.good(1) and node.odometry.frames == 1


def test_stamp_jump_forward_resets_window_only(node, seq):
    """Dropped frames (a large forward jump) reset the window but keep the odometry."""
    feed = Feeder(node, seq)
    feed.good(0)
    feed.good(1)
    frames = node.odometry.frames
    count = _warned(node, 'stamp_jump')
    assert feed.good(2, dt_ns=10 * 10 ** 9)
    assert _warned(node, 'stamp_jump') == count + 1
    assert len(node.window.frames) == 1 and node.odometry.frames == frames


def test_duplicate_stamp_is_dropped(node, seq):
    """The same stamp twice is answered once."""
    feed = Feeder(node, seq)
    feed.good(0)
    count = _warned(node, 'duplicate_stamp')
    assert not feed.good(1, dt_ns=0)
    assert _warned(node, 'duplicate_stamp') == count + 1


def test_warnings_are_throttled(node, seq):
    """Repeated problems of one kind are counted but logged once per warning_period."""
    emitted = []
    original = node.warnings.logger
    node.warnings.logger = type('L', (), {'warning': lambda self, m: emitted.append(m)})()
    try:
        for _ in range(5):
            node.image_callback(Image(height=2, width=2, encoding='16UC1', step=4, data=bytes(8)))
    finally:
        node.warnings.logger = original
    assert len(emitted) <= 1


@pytest.mark.parametrize('name, value, reason', [
    ('min_depth', -1.0, None),
    ('max_depth', 0.0, None),
    ('refine_iterations', 0, None),
    ('refine_lr', 1.0, None),
    ('scale_factor', 0.0, None),
    ('scale_mode', 'lidar', 'scale_mode must be one of'),
    ('refine_target', 'encoder', 'refine_target must be one of'),
    ('min_depth', 500.0, 'must be smaller than max_depth'),
    ('weights', 'other.pt', 'read-only'),
    ('width', 320, 'read-only'),
    ('base_to_camera', [0.0, 1.0], 'base_to_camera must be 6'),
])
def test_invalid_parameter_changes_are_rejected_with_a_reason(node, name, value, reason):
    """Out-of-range (descriptor) and invalid (callback) values are refused; nothing changes."""
    before = node.get_parameter(name).value
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful
    assert result.reason
    if reason:
        assert reason in result.reason
    assert node.get_parameter(name).value == before


def test_runtime_parameter_changes_take_effect(node, seq):
    """max_depth, scale, refinement settings and publish_tf change the node's behaviour."""
    feed = Feeder(node, seq)
    ok = node.set_runtime_parameters(scale_mode='fixed', scale_factor=2.0, max_depth=1e-3 * 2,
                                     min_depth=1e-3, refine_iterations=3, refine_lr=1e-3,
                                     publish_tf=False)
    assert ok.successful, ok.reason
    assert node.scaler.scale == 2.0
    assert node.refiner.stats()['iterations'] == 3 and node.refiner.stats()['lr'] == 1e-3
    assert node.p['publish_tf'] is False
    published = []
    probe = rclpy.create_node('probe_params', context=node.context)
    probe.create_subscription(Image, 'depth/image', published.append, 10)
    executor = executor_for(node.context, probe)
    try:
        spin_until(executor, lambda: node.depth_pub.get_subscription_count() > 0, 5.0)
        assert feed.good(0)
        assert spin_until(executor, lambda: published, 5.0)
    finally:
        executor.shutdown()
        probe.destroy_node()
    depth = conv.image_to_depth(published[-1])
    assert np.isnan(depth).all()      # every depth is above max_depth = 2 mm
    node.set_runtime_parameters(scale_mode='none', max_depth=100.0, min_depth=0.1,
                                publish_tf=True)
    assert node.scaler.scale == 1.0


def test_missing_weights_file_is_a_one_line_startup_error():
    """A missing weights file raises StartupError naming the file."""
    with ros_graph() as context:
        with pytest.raises(StartupError, match='weights file not found: /no/such/model.pt'):
            make_node(context, weights='/no/such/model.pt')


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all'])
def test_corrupt_weights_exit_nonzero_without_traceback(tmp_path, content):
    """``depth_node`` with a corrupt weights file prints one line naming it and exits != 0."""
    weights = tmp_path / 'broken.pt'
    weights.write_bytes(content)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, '-c', 'import sys; from fmdepth_ros.ros.depth_node import main; '
         'sys.exit(main())', '--ros-args', '-p', f'weights:={weights}', '-p', 'device:=cpu'],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if 'error' in line.lower()]
    assert len(errors) == 1 and str(weights) in errors[0], proc.stderr

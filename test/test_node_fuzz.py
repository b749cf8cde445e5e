"""Fuzz test (hypothesis): arbitrary sensor_msgs/Image fields never raise out of the callback."""

from fmdepth_ros.ros import conversions as conv
from hypothesis import given, HealthCheck, settings
from hypothesis import strategies as st
from node_helpers import make_node, one_torch_thread, ros_graph  # noqa: F401
import pytest
from sensor_msgs.msg import Image

pytestmark = pytest.mark.ros

ENCODINGS = ['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', '32FC1', '16UC1', 'yuv422', '', 'RGB8']


@pytest.fixture(scope='module')
def node():
    """Yield a randomly initialised node whose outputs are computed without subscribers."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, warning_period=3600.0,
                      camera_info_wait=0.0, publish_colored=False)
        yield n
        n.destroy_node()


images = st.builds(
    dict,
    height=st.integers(0, 12), width=st.integers(0, 12), step=st.integers(0, 64),
    encoding=st.sampled_from(ENCODINGS), is_bigendian=st.integers(0, 1),
    data=st.binary(max_size=600), sec=st.integers(0, 2 ** 31 - 1),
    nanosec=st.integers(0, 999_999_999), frame_id=st.text(max_size=8))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=images)
def test_image_callback_never_raises(node, fields):
    """Whatever the fields, the callback returns normally and counts the message."""
    msg = Image(height=fields['height'], width=fields['width'], step=fields['step'],
                encoding=fields['encoding'], is_bigendian=fields['is_bigendian'],
                data=fields['data'])
    msg.header.stamp.sec, msg.header.stamp.nanosec = fields['sec'], fields['nanosec']
    msg.header.frame_id = fields['frame_id']
    received = node.stats.received
    node.image_callback(msg)
    assert node.stats.received == received + 1
    assert node.stats.errors == 0


def test_fuzzed_node_still_serves_good_frames(node):
    """After the fuzzing, a well-formed frame is still published."""
    import numpy as np
    rgb = np.full((8, 8, 3), 128, np.uint8)
    msg = conv.rgb_to_image(rgb, conv_header(2 ** 31 - 1))
    published = node.stats.published
    node.image_callback(msg)
    assert node.stats.published == published + 1


def conv_header(sec):
    """Build a header late enough to follow every fuzzed stamp."""
    from std_msgs.msg import Header
    header = Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = sec, 999_999_999
    return header

"""Tests of ros/conversions (builders, cv_bridge adapters) and messages decoders on sensor_msgs."""

import cv2
from fmdepth_ros.messages import (camera_info_to_K, image_to_depth, stamp_to_ns,
                                  transform_to_matrix, xyz_rpy_to_matrix)
from fmdepth_ros.ros import conversions as conv
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header


def _rgb(h=5, w=7):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_colour_encodings_round_trip(encoding):
    """Colour encodings round trip."""
    rgb = _rgb()
    msg = conv.rgb_to_image(rgb, Header(frame_id='cam'), encoding)
    assert msg.encoding == encoding
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)


def test_bgr8_byte_order_matches_cv_bridge():
    """Bgr8 byte order matches cv bridge."""
    bgr = np.zeros((1, 1, 3), np.uint8)
    bgr[0, 0] = (10, 20, 30)     # B, G, R as OpenCV / cv_bridge store it
    msg = Image(height=1, width=1, encoding='bgr8', step=3, data=bgr.tobytes())
    assert tuple(conv.image_to_rgb(msg)[0, 0]) == (30, 20, 10)


def test_mono8_is_replicated():
    """Mono8 is replicated."""
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = Image(height=3, width=4, encoding='mono8', step=4, data=grey.tobytes())
    out = conv.image_to_rgb(msg)
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_step_padding_is_skipped():
    """Step padding is skipped."""
    rgb = _rgb(4, 5)
    padded = np.zeros((4, 5 * 3 + 7), np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    padded[:, 15:] = 99
    msg = Image(height=4, width=5, encoding='rgb8', step=22, data=padded.tobytes())
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)


@pytest.mark.parametrize('fields, match', [
    ({'encoding': 'yuv422'}, 'unsupported image encoding'),
    ({'width': 0}, 'empty image'),
    ({'step': 10}, 'step 10 is smaller'),
    ({'height': 9}, 'needs'),
])
def test_invalid_images_raise_clear_errors(fields, match):
    """Invalid images raise clear errors."""
    rgb = _rgb(4, 5)
    msg = conv.rgb_to_image(rgb, Header())
    for key, value in fields.items():
        setattr(msg, key, value)
    with pytest.raises(ValueError, match=match):
        conv.image_to_rgb(msg)


def test_compressed_jpeg_and_png():
    """Compressed jpeg and png."""
    rgb = _rgb(16, 16)
    ok, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format='png', data=png.tobytes())
    np.testing.assert_array_equal(conv.compressed_to_rgb(msg), rgb)
    with pytest.raises(ValueError, match='cannot decode'):
        conv.compressed_to_rgb(CompressedImage(format='jpeg', data=b'not a jpeg'))


def test_depth_round_trip_keeps_header_and_nan():
    """Depth round trip keeps header and nan."""
    depth = np.array([[1.5, np.nan], [3.0, 80.0]], np.float32)
    header = Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = conv.depth_to_image(depth, header)
    assert msg.encoding == '32FC1' and msg.step == 8
    assert msg.header.stamp.sec == 12 and msg.header.frame_id == 'camera_optical'
    np.testing.assert_array_equal(image_to_depth(msg), depth)


def test_colorize_depth_shape_and_invalid_black():
    """Colorize depth shape and invalid black."""
    depth = np.array([[1.0, 2.0], [np.nan, 50.0]], np.float32)
    col = conv.colorize_depth(depth, 0.5, 100.0)
    assert col.shape == (2, 2, 3) and col.dtype == np.uint8
    assert not col[1, 0].any() and col[0, 0].any()


def test_camera_info_K_validation_and_scaling():
    """Camera info K validation and scaling."""
    K = np.array([[100.0, 0, 48], [0, 90.0, 32], [0, 0, 1]])
    info = conv.camera_info_for(Header(frame_id='c'), K, 96, 64)
    np.testing.assert_allclose(camera_info_to_K(info), K)
    half = conv.scaled_camera_info(info, 48, 32)
    np.testing.assert_allclose(camera_info_to_K(half)[:2], K[:2] / 2)
    assert (half.width, half.height) == (48, 32)
    assert np.asarray(half.p).reshape(3, 4)[0, 0] == 50.0
    for bad in (0.0, float('nan')):
        broken = CameraInfo()
        broken.k = [bad, 0.0, 48.0, 0.0, 90.0, 32.0, 0.0, 0.0, 1.0]
        with pytest.raises(ValueError, match='invalid camera_info intrinsics'):
            camera_info_to_K(broken)


def test_transform_and_odometry_builders():
    """Transform and odometry builders."""
    T = xyz_rpy_to_matrix([1.0, 2.0, 3.0], [0.1, -0.2, 0.3])
    tf = conv.make_transform(T, Header().stamp, 'odom', 'base_link')
    q = tf.transform.rotation
    np.testing.assert_allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), T[:3, :3],
                               atol=1e-12)
    np.testing.assert_allclose(transform_to_matrix(tf.transform), T, atol=1e-12)
    odom = conv.make_odometry(T, Header().stamp, 'odom', 'base_link', pose_cov=[1, 2, 3, 4, 5, 6])
    assert odom.child_frame_id == 'base_link'
    assert odom.pose.pose.position.z == 3.0
    assert odom.pose.covariance[7] == 2.0 and odom.pose.covariance[35] == 6.0


def test_stamp_ns_round_trip():
    """Stamp ns round trip."""
    stamp = conv.stamp_from_ns(5_000_000_123)
    assert (stamp.sec, stamp.nanosec) == (5, 123)
    assert stamp_to_ns(stamp) == 5_000_000_123


def test_image_backend_is_cv_bridge_when_importable():
    """The node converts through cv_bridge exactly when it imports."""
    import importlib.util
    expected = 'cv_bridge' if importlib.util.find_spec('cv_bridge') else 'numpy'
    assert conv.IMAGE_BACKEND == expected


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'png', 'jpeg'])
def test_cv_bridge_and_numpy_codec_give_identical_arrays(encoding):
    """cv_bridge and the numpy codec decode every supported encoding to the same array."""
    cv_bridge = pytest.importorskip(
        'cv_bridge', reason='cv_bridge is not installable from PyPI (a ROS 2 install has it)')
    from fmdepth_ros import messages
    bridge = cv_bridge.CvBridge()
    rgb = _rgb(6, 9)
    if encoding in ('png', 'jpeg'):
        ok, data = cv2.imencode('.' + encoding, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        msg = CompressedImage(format=encoding, data=data.tobytes())
        want = messages.compressed_to_rgb(msg)
        got = bridge.compressed_imgmsg_to_cv2(msg, desired_encoding='rgb8')
    else:
        msg = conv.rgb_to_image(rgb, Header(), encoding)
        padded = np.zeros((msg.height, msg.step + 3), np.uint8)   # a padded step too
        padded[:, :msg.step] = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, -1)
        msg.data, msg.step = padded.tobytes(), msg.step + 3
        want = messages.image_to_rgb(msg)
        got = bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8')
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(conv.image_to_rgb(msg) if encoding not in ('png', 'jpeg')
                                  else conv.compressed_to_rgb(msg), want)


# ------------------------------------------------------------------ fast paths of the node
def _padded_message(rgb, encoding, pad, trim_last_row=False):
    """``rgb`` [H,W,3] as an Image in ``encoding`` whose rows carry ``pad`` filler bytes."""
    msg = conv.rgb_to_image(rgb, Header(frame_id='cam'), encoding=encoding)
    height, step = msg.height, msg.step
    rows = np.frombuffer(msg.data, np.uint8).reshape(height, step)
    padded = np.concatenate([rows, np.full((height, pad), 77, np.uint8)], axis=1).ravel()
    if trim_last_row:           # the last row may omit its padding
        padded = padded[:padded.size - pad]
    msg.step = step + pad
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'])
@pytest.mark.parametrize('height, width, pad, trim', [
    (375, 1242, 0, False), (7, 13, 3, False), (5, 9, 2, True), (1, 1, 0, False)])
def test_image_to_rgb_fast_path_equals_the_numpy_reference(encoding, height, width, pad, trim):
    """The cv2 / plain-copy conversion gives the bytes of the fancy-indexing reference."""
    from fmdepth_ros.messages import image_to_rgb_reference
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3),
                                                         dtype=np.uint8)
    msg = (_padded_message(rgb, encoding, pad, trim) if pad
           else conv.rgb_to_image(rgb, Header(), encoding=encoding))
    out = conv.image_to_rgb(msg)
    reference = image_to_rgb_reference(msg)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, reference)
    if encoding in ('rgb8', 'bgr8', 'rgba8', 'bgra8'):
        np.testing.assert_array_equal(out, rgb)
    data = np.frombuffer(msg.data, np.uint8)
    assert not np.shares_memory(out, data)      # a copy, never a view of the message


def test_image_to_rgb_of_read_only_numpy_data():
    """rosbags-style read-only numpy data converts as well (no write into the message)."""
    rgb = _rgb(6, 10)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    data = np.frombuffer(bgr.tobytes(), np.uint8)
    assert not data.flags.writeable

    class Msg:      # a duck-typed message: rosbags gives its fields like this
        height, width, step, encoding = 6, 10, 30, 'bgr8'

    Msg.data = data
    np.testing.assert_array_equal(conv.image_to_rgb(Msg), rgb)


@pytest.mark.parametrize('height, width', [(375, 1242), (3, 5), (1, 1)])
def test_empty_depth_image_filled_in_place_equals_depth_to_image(height, width):
    """Writing into the view fills the message: same fields and bytes as depth_to_image."""
    rng = np.random.default_rng(height)
    depth = (rng.random((height, width)) * 80 + 0.1).astype(np.float32)
    depth.ravel()[::7] = np.nan
    header = Header(frame_id='camera_optical')
    header.stamp.sec, header.stamp.nanosec = 3, 4
    msg, view = conv.empty_depth_image(header, height, width)
    assert view.shape == (height, width) and view.dtype == np.float32
    assert not np.any(view)         # zeros until written
    view[...] = depth
    reference = conv.depth_to_image(depth, header)
    for field in ('height', 'width', 'encoding', 'is_bigendian', 'step'):
        assert getattr(msg, field) == getattr(reference, field), field
    assert msg.encoding == '32FC1' and msg.step == width * 4
    assert msg.header.stamp.sec == 3 and msg.header.frame_id == 'camera_optical'
    assert msg.data.tobytes() == reference.data.tobytes()
    decoded = image_to_depth(msg)
    np.testing.assert_array_equal(decoded, depth)       # NaN where NaN (array_equal: nan ok)
    assert np.array_equal(np.isnan(decoded), np.isnan(depth))


def test_copy_camera_info_equals_scaling_by_one_and_shares_nothing():
    """The same-size copy has the values the scaling path computes, in new arrays."""
    from fmdepth_ros.geometry import scale_intrinsics
    K = np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1]])
    info = conv.camera_info_for(Header(frame_id='cam'), K, 1242, 375)
    info.d = [0.1, -0.2, 0.001, 0.002, 0.03]
    info.p[3] = -387.6
    info.roi.x_offset, info.roi.width, info.roi.do_rectify = 3, 1000, True
    info.binning_x = 2
    header = Header(frame_id='other')
    out = conv.scaled_camera_info(info, 1242, 375, header)
    assert out.header.frame_id == 'other' and (out.width, out.height) == (1242, 375)
    np.testing.assert_array_equal(out.k, scale_intrinsics(np.reshape(info.k, (3, 3)), 1.0,
                                                          1.0).ravel())
    np.testing.assert_array_equal(out.p, scale_intrinsics(np.reshape(info.p, (3, 4)), 1.0,
                                                          1.0).ravel())
    np.testing.assert_array_equal(out.r, info.r)
    assert list(out.d) == list(info.d) and out.distortion_model == info.distortion_model
    assert out.roi == info.roi and out.binning_x == 2
    for field in ('k', 'r', 'p'):
        assert not np.shares_memory(getattr(out, field), getattr(info, field))
    out.k[0] = 1.0
    assert info.k[0] == 721.5
    assert conv.copy_camera_info(info).header.frame_id == 'cam'

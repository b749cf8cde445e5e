"""ROS message <-> numpy, ROS-free: the one implementation for the node, bags and evaluation.

Duck-typed: every function reads only the message's fields, so it works on rclpy messages
(``sensor_msgs.msg.Image``) and on ``rosbags`` messages alike, and imports no ROS module.
Building rclpy messages is :mod:`fmdepth_ros.ros.conversions`' job.

Image semantics follow cv_bridge's ``imgmsg_to_cv2(msg, 'rgb8')``: 8-bit colour encodings are
reordered to RGB, ``mono8`` is replicated to three channels, alpha is dropped, ``step`` (row
stride in bytes, possibly padded) is honoured and the last row may omit its padding. Depth
images are REP-118 ``32FC1`` metres. Errors are ``ValueError`` with a one-line message.
"""

from typing import Dict, Optional, Tuple

import numpy as np

# encoding -> (channels, index of R,G,B in a pixel); mono8 replicates its single channel.
IMAGE_ENCODINGS = {
    'rgb8': (3, (0, 1, 2)),
    'bgr8': (3, (2, 1, 0)),
    'rgba8': (4, (0, 1, 2)),
    'bgra8': (4, (2, 1, 0)),
    'mono8': (1, (0, 0, 0)),
}
MAX_TF_DEPTH = 64   # longest chain walked in a static-TF tree (guards against cycles)


def _bytes(data) -> np.ndarray:
    """Return a message's ``uint8[]`` field (bytes, array.array, numpy, list) as uint8 array."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.frombuffer(bytes(data), dtype=np.uint8)


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def check_image_layout(msg, bytes_per_pixel, what):
    """Raise ``ValueError`` (one line) unless the size, step and data of ``msg`` fit together."""
    _rows(msg, bytes_per_pixel, what, copy_out=False)


def image_encoding(msg) -> Tuple[int, Tuple[int, int, int]]:
    """(channels, index of R,G,B) of a supported colour/mono Image; ``ValueError`` otherwise."""
    encoding = msg.encoding.lower()
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f'unsupported image encoding {msg.encoding!r} '
                         f'(supported: {", ".join(IMAGE_ENCODINGS)})')
    return IMAGE_ENCODINGS[encoding]


def _rows(msg, bytes_per_pixel, what, copy_out=True):
    """Return the pixel bytes [H, W * bytes_per_pixel] uint8 (step and padding honoured)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f'empty image ({width}x{height})')
    if step < width * bytes_per_pixel:
        raise ValueError(f'step {step} is smaller than width {width} x {bytes_per_pixel} bytes '
                         f'for {what}')
    data = _bytes(msg.data)
    needed = step * (height - 1) + width * bytes_per_pixel   # the last row may omit padding
    if data.size < needed:
        raise ValueError(f'image data has {data.size} bytes, {what} {width}x{height} '
                         f'with step {step} needs {step * height}')
    if not copy_out:
        return None
    if data.size < step * height:
        data = np.concatenate([data, np.zeros(step * height - data.size, np.uint8)])
    return data[:step * height].reshape(height, step)[:, :width * bytes_per_pixel]


# encoding -> OpenCV colour conversion to RGB (None: the bytes already are RGB)
_TO_RGB = {'rgb8': None, 'bgr8': 'COLOR_BGR2RGB', 'rgba8': 'COLOR_RGBA2RGB',
           'bgra8': 'COLOR_BGRA2RGB', 'mono8': 'COLOR_GRAY2RGB'}


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> [H, W, 3] uint8 RGB (a copy).

    One pass over the pixels: a plain copy for rgb8, an OpenCV colour conversion otherwise
    (numpy's fancy channel indexing, the straightforward way, is ~30x slower: 3 ms for a
    1242x375 frame). Gives the same bytes as :func:`image_to_rgb_reference`.
    """
    import cv2

    channels, _ = image_encoding(msg)
    encoding = msg.encoding.lower()
    pixels = _rows(msg, channels, encoding).reshape(int(msg.height), int(msg.width), channels)
    code = _TO_RGB[encoding]
    if code is None:
        return np.array(pixels, dtype=np.uint8, order='C', copy=True)
    if channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(pixels, getattr(cv2, code))


def image_to_rgb_reference(msg) -> np.ndarray:
    """Straightforward numpy version of :func:`image_to_rgb` (tests compare the two)."""
    channels, order = image_encoding(msg)
    pixels = _rows(msg, channels, msg.encoding.lower()).reshape(
        int(msg.height), int(msg.width), channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> [H, W, 3] uint8 RGB."""
    import cv2

    data = _bytes(msg.data)
    if data.size == 0:
        raise ValueError('empty compressed image')
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot decode compressed image (format {msg.format!r}, '
                         f'{data.size} bytes)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_to_depth(msg) -> np.ndarray:
    """32FC1 sensor_msgs/Image -> [H, W] float32 metres (NaN = invalid, as published)."""
    if msg.encoding != '32FC1':
        raise ValueError(f'expected a 32FC1 depth image, got {msg.encoding!r}')
    rows = _rows(msg, 4, '32FC1').copy()
    return rows.view('>f4' if msg.is_bigendian else '<f4').reshape(
        int(msg.height), int(msg.width)).astype(np.float32)


def camera_info_to_K(msg) -> np.ndarray:
    """Return the [3, 3] float64 K (pixels) of a CameraInfo; fx, fy must be finite and > 0."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not np.all(np.isfinite(K)) or fx <= 0 or fy <= 0:
        raise ValueError(f'invalid camera_info intrinsics fx={fx} fy={fy} cx={cx} cy={cy}')
    return K


def quaternion_to_matrix(x, y, z, w) -> np.ndarray:
    """Return the [3, 3] rotation of a non-zero quaternion; ValueError for zero / non-finite."""
    from scipy.spatial.transform import Rotation

    quat = np.array([x, y, z, w], dtype=np.float64)
    if not np.all(np.isfinite(quat)) or np.linalg.norm(quat) < 1e-9:
        raise ValueError(f'invalid rotation quaternion {quat.tolist()}')
    return Rotation.from_quat(quat).as_matrix()


def matrix_to_quaternion(R) -> np.ndarray:
    """[3, 3] rotation -> quaternion (x, y, z, w)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()


def rigid_transform(translation, rotation) -> np.ndarray:
    """[4, 4] from a translation (x, y, z fields) and a quaternion (x, y, z, w fields)."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation.x, rotation.y, rotation.z, rotation.w)
    T[:3, 3] = [translation.x, translation.y, translation.z]
    return T


def transform_to_matrix(transform) -> np.ndarray:
    """geometry_msgs/Transform -> [4, 4] float64 ``T_parent_child``."""
    return rigid_transform(transform.translation, transform.rotation)


def pose_to_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> [4, 4] float64."""
    return rigid_transform(pose.position, pose.orientation)


def matrix_to_xyz_quat(T) -> Tuple[np.ndarray, np.ndarray]:
    """[4, 4] rigid transform -> (translation (x, y, z), quaternion (x, y, z, w))."""
    T = np.asarray(T, dtype=np.float64)
    return T[:3, 3].copy(), matrix_to_quaternion(T[:3, :3])


def xyz_rpy_to_matrix(xyz, rpy) -> np.ndarray:
    """Convert xyz metres + roll, pitch, yaw radians (fixed axes x-y-z) -> [4, 4]."""
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler('xyz', rpy).as_matrix()
    T[:3, 3] = xyz
    return T


class StaticTransformTree:
    """A static TF tree (child -> (parent, ``T_parent_child``)) with chain look-ups."""

    def __init__(self):
        """Start empty."""
        self.edges: Dict[str, Tuple[str, np.ndarray]] = {}

    def add(self, parent, child, T_parent_child):
        """Store one edge (frame names lose a leading ``/``)."""
        self.edges[child.lstrip('/')] = (parent.lstrip('/'), np.asarray(T_parent_child))

    def add_message(self, msg):
        """Store every transform of a tf2_msgs/TFMessage; invalid ones are skipped."""
        for tf in msg.transforms:
            try:
                T = transform_to_matrix(tf.transform)
            except ValueError:
                continue
            self.add(tf.header.frame_id, tf.child_frame_id, T)

    def lookup(self, parent, child) -> Optional[np.ndarray]:
        """``T_parent_child`` [4, 4] chained through static edges, or None when not connected."""
        parent, child = parent.lstrip('/'), child.lstrip('/')
        up = {child: np.eye(4)}         # frame -> T_frame_child, walking up from child
        frame, T = child, np.eye(4)
        while frame in self.edges and len(up) < MAX_TF_DEPTH:
            frame_parent, T_edge = self.edges[frame]
            T = T_edge @ T
            frame = frame_parent
            up[frame] = T
        if parent in up:
            return up[parent]
        frame, T = parent, np.eye(4)    # T_frame_parent, walking up from parent
        for _ in range(MAX_TF_DEPTH):
            if frame not in self.edges:
                break
            frame_parent, T_edge = self.edges[frame]
            T = T_edge @ T
            frame = frame_parent
            if frame in up:             # common ancestor: T_parent_child = inv(T_a_p) T_a_c
                return np.linalg.inv(T) @ up[frame]
        return None

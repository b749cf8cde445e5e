"""Depth image -> point cloud, ROS-free and vectorised (numpy).

:func:`depth_to_cloud` back-projects a metric depth image ``[H, W]`` (metres, NaN = invalid)
with the pinhole intrinsics ``K`` ``[3, 3]`` (pixels of that image) into camera optical-frame
points (REP-103: x right, y down, z forward): ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``.
The result is a structured numpy array whose bytes are the ``data`` of a
``sensor_msgs/PointCloud2`` with the fields of :func:`cloud_fields` (x, y, z float32, then an
optional PCL-packed ``rgb``: ``0x00RRGGBB`` stored in a float32 field, the layout RViz and PCL
read). :func:`read_cloud` decodes such a message (duck-typed: rclpy or rosbags messages).

Hand-written rather than ``sensor_msgs_py.point_cloud2``: that package is not on PyPI (no ROS
install here), and the structured array gives the same bytes without a per-point loop.
"""

from typing import List, Optional, Tuple

import numpy as np

# sensor_msgs/PointField datatype constants (the ROS message's own values)
FLOAT32 = 7
_NUMPY_OF_DATATYPE = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 8: 'f8'}


def cloud_dtype(rgb: bool) -> np.dtype:
    """Point layout: x, y, z float32 (12 bytes), plus ``rgb`` (float32-packed) when asked."""
    names = ['x', 'y', 'z'] + (['rgb'] if rgb else [])
    return np.dtype({'names': names, 'formats': ['<f4'] * len(names),
                     'offsets': [4 * i for i in range(len(names))],
                     'itemsize': 4 * len(names)})


def cloud_fields(rgb: bool) -> List[Tuple[str, int, int, int]]:
    """Return the PointFields ``(name, offset, datatype, count)`` of :func:`cloud_dtype`."""
    dtype = cloud_dtype(rgb)
    return [(name, dtype.fields[name][1], FLOAT32, 1) for name in dtype.names]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` uint8 RGB -> ``[...]`` float32 holding the bits of ``0x00RRGGBB`` (PCL)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return np.ascontiguousarray(packed, dtype='<u4').view('<f4')


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: float32-packed ``[...]`` -> ``[..., 3]`` uint8 RGB."""
    bits = np.ascontiguousarray(packed, dtype='<f4').view('<u4')
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], -1).astype(np.uint8)


def depth_to_cloud(depth, K, stride: int = 1, min_range: float = 0.0,
                   max_range: float = np.inf, organized: bool = False,
                   rgb: Optional[np.ndarray] = None) -> np.ndarray:
    """Back-project ``depth`` into a point cloud (structured array, see :func:`cloud_dtype`).

    Args:
        depth: ``[H, W]`` float depth in metres along the optical axis; NaN, inf and values
            <= 0 are invalid.
        K: ``[3, 3]`` intrinsics in pixels of ``depth``.
        stride: keep every ``stride``-th pixel in both directions (pixels ``(v, u)`` with
            ``v % stride == 0 and u % stride == 0``).
        min_range, max_range: keep points whose Euclidean distance from the camera centre
            (metres) lies in ``[min_range, max_range]``.
        organized: True -> ``[h, w]`` array (``h = ceil(H / stride)``) with NaN x/y/z where
            invalid or out of range; False -> ``[N]`` array of the valid points only, in row
            order.
        rgb: optional ``[H, W, 3]`` uint8 RGB image aligned with ``depth``; adds ``rgb``.

    Returns:
        Structured float32 array (fields x, y, z[, rgb]), C-contiguous: ``.tobytes()`` is the
        PointCloud2 ``data``.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f'depth must be [H,W], got shape {depth.shape}')
    stride = int(stride)
    if stride < 1:
        raise ValueError(f'stride must be >= 1, got {stride}')
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != depth.shape + (3,):
            raise ValueError(f'rgb must be {depth.shape + (3,)}, got {rgb.shape}')
        rgb = rgb[::stride, ::stride]
    z = depth[::stride, ::stride]
    v = np.arange(0, depth.shape[0], stride, dtype=np.float32)[:, None]
    u = np.arange(0, depth.shape[1], stride, dtype=np.float32)[None, :]
    with np.errstate(invalid='ignore'):
        x = (u - np.float32(K[0, 2])) * z / np.float32(K[0, 0])
        y = (v - np.float32(K[1, 2])) * z / np.float32(K[1, 1])
        distance = np.sqrt(x * x + y * y + z * z)
        valid = (np.isfinite(z) & (z > 0) & (distance >= min_range) & (distance <= max_range))
    cloud = np.empty(z.shape, cloud_dtype(rgb is not None))
    nan = np.float32(np.nan)
    cloud['x'] = np.where(valid, x, nan)
    cloud['y'] = np.where(valid, y, nan)
    cloud['z'] = np.where(valid, z, nan)
    if rgb is not None:
        cloud['rgb'] = pack_rgb(rgb)
    return cloud if organized else np.ascontiguousarray(cloud[valid])


def read_cloud(msg) -> np.ndarray:
    """PointCloud2 -> structured numpy array ``[height, width]`` of its fields (a copy).

    Duck-typed (``fields``, ``point_step``, ``row_step``, ``is_bigendian``, ``data``).
    """
    order = '>' if msg.is_bigendian else '<'
    names, formats, offsets = [], [], []
    for field in msg.fields:
        if field.datatype not in _NUMPY_OF_DATATYPE:
            raise ValueError(f'unsupported PointField datatype {field.datatype} ({field.name})')
        names.append(field.name)
        formats.append((order + _NUMPY_OF_DATATYPE[field.datatype], (int(field.count),))
                       if field.count > 1 else order + _NUMPY_OF_DATATYPE[field.datatype])
        offsets.append(int(field.offset))
    dtype = np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                      'itemsize': int(msg.point_step)})
    height, width = int(msg.height), int(msg.width)
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size < int(msg.row_step) * height or int(msg.row_step) < width * dtype.itemsize:
        raise ValueError(f'PointCloud2 data has {data.size} bytes, {width}x{height} points of '
                         f'{dtype.itemsize} bytes with row_step {msg.row_step} need more')
    rows = data[:int(msg.row_step) * height].reshape(height, int(msg.row_step))
    return rows[:, :width * dtype.itemsize].copy().view(dtype).reshape(height, width)


__all__ = ['cloud_dtype', 'cloud_fields', 'pack_rgb', 'unpack_rgb', 'depth_to_cloud',
           'read_cloud', 'FLOAT32']

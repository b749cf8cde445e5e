"""A folder of frames with LiDAR depth as a rosbag2 bag the node can be evaluated on.

Input: the evaluation folder layout of :mod:`fmdepth_ros.data.folder` (``images/``,
``depth/<stem>.png`` uint16 metres * 256, ``intrinsics.txt``; what ``fmdepth kitti2folder``
writes and ``data/kitti_city_78`` is). Output (MCAP), the topics and frames of
:mod:`fmdepth_ros.data.kitti2bag`:

* ``/camera/image_raw``: sensor_msgs/Image rgb8, frame ``camera_optical``;
* ``/camera/camera_info``: the folder's K for the frames' size (P = [K | 0], no distortion);
* ``/ground_truth/depth``: sensor_msgs/Image 32FC1 metres, NaN = no point, at the depth maps'
  own size, which may be larger than the frames' (the evaluation resizes the node's depth to
  it, as ``fmdepth evaluate --data`` does).

Frames are stamped at ``period_ns`` intervals (10 Hz by default, KITTI's rate) from
``start_ns``. No ``/tf_static``: the node uses its ``base_to_camera`` parameter. The bag is
written beside ``out_bag`` and renamed into place when complete.
"""

import os
from pathlib import Path
import shutil
from typing import Dict

from fmdepth_ros.atomic_io import replace_atomic
from fmdepth_ros.data.kitti2bag import (BAG_VERSION, CAMERA_FRAME, DEFAULT_PERIOD_NS,
                                        GT_DEPTH_TOPIC, IMAGE_TOPIC, INFO_TOPIC,
                                        MessageFactory, offered_qos)
from fmdepth_ros.errors import DataError
import numpy as np


def folder_to_bag(folder, out_bag, period_ns: int = DEFAULT_PERIOD_NS,
                  start_ns: int = 1_000_000_000, max_frames=None) -> Dict[str, int]:
    """Write ``folder`` (module docstring) as the bag ``out_bag``; message counts per topic.

    ``max_frames``: only the first this many frames (None: all).

    Raises:
        DataError: not a folder of frames, frames of different sizes, or ``out_bag`` exists.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from fmdepth_ros.data.folder import folder_sources, load_depth_file

    out_bag = Path(out_bag)
    if out_bag.exists():
        raise DataError(f'{out_bag} exists already')
    try:
        sources = folder_sources(str(folder))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if len(sources) != 1:
        raise DataError(f'{folder}: holds {len(sources)} sequences; give one folder')
    source = sources[0]
    typestore = get_typestore(Stores.ROS2_JAZZY)
    make = MessageFactory(typestore)
    K = np.asarray(source.K, dtype=np.float64)
    tmp_parent = out_bag.with_name(f'.{out_bag.name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp_parent, ignore_errors=True)
    tmp_parent.mkdir(parents=True)
    counts: Dict[str, int] = {}
    try:
        with Writer(tmp_parent / out_bag.name, version=BAG_VERSION,
                    storage_plugin=StoragePlugin.MCAP) as writer:
            conns = {topic: writer.add_connection(topic, msgtype, typestore=typestore,
                                                  offered_qos_profiles=[offered_qos()])
                     for topic, msgtype in ((INFO_TOPIC, 'sensor_msgs/msg/CameraInfo'),
                                            (IMAGE_TOPIC, 'sensor_msgs/msg/Image'),
                                            (GT_DEPTH_TOPIC, 'sensor_msgs/msg/Image'))}

            def write(topic, stamp, msg):
                conn = conns[topic]
                writer.write(conn, stamp, typestore.serialize_cdr(msg, conn.msgtype))
                counts[topic] = counts.get(topic, 0) + 1

            size = None
            count = len(source) if max_frames is None else min(len(source), int(max_frames))
            for i in range(count):
                stamp = start_ns + i * int(period_ns)
                image = source.load_image(i)
                if size is None:
                    size = image.shape[:2]
                elif image.shape[:2] != size:
                    raise DataError(f'{source.image_path(i)}: size {image.shape[1]}x'
                                    f'{image.shape[0]} differs from the first frame '
                                    f'({size[1]}x{size[0]})')
                write(INFO_TOPIC, stamp, make.camera_info(stamp, CAMERA_FRAME, K, size[1],
                                                          size[0]))
                write(IMAGE_TOPIC, stamp, make.image(stamp, CAMERA_FRAME, image))
                if source.has_depth(i):
                    depth = load_depth_file(source.depth_paths[i])
                    depth[~(depth > 0)] = np.nan
                    write(GT_DEPTH_TOPIC, stamp, make.depth_image(stamp, CAMERA_FRAME, depth))
        replace_atomic(tmp_parent / out_bag.name, out_bag)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return counts

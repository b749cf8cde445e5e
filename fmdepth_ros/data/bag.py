"""Read rosbag2 bags (MCAP or sqlite3) without a ROS install, through the ``rosbags`` library.

* :func:`read_bag_frames`: camera frames (decoded RGB + intrinsics) of a bag, topics auto-detected.
* :func:`read_odometry`, :func:`read_static_transforms`, :func:`read_point_clouds`: the ground
  truth that ``fmdepth kitti2bag`` writes (used by :mod:`fmdepth_ros.bag_eval`).
* :class:`BagDataset`: training triplets from a bag (the batch format of docs/architecture.md).

A path may be a bag folder (with ``metadata.yaml``) or a bare ``.mcap`` / ``.db3`` file. A
missing, truncated or corrupt bag raises :class:`BagError`, a one-line ``CliError``.
"""

import bisect
from contextlib import contextmanager
from dataclasses import dataclass
import functools
from pathlib import Path
import struct
from typing import Iterator, List, Optional, Tuple

from fmdepth_ros import messages
from fmdepth_ros.errors import BagError
from fmdepth_ros.messages import stamp_to_ns, StaticTransformTree
import numpy as np

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
ODOM_TYPE = 'nav_msgs/msg/Odometry'
TF_TYPE = 'tf2_msgs/msg/TFMessage'
CLOUD_TYPE = 'sensor_msgs/msg/PointCloud2'


@dataclass
class BagFrame:
    """One camera frame of a bag.

    Attributes:
        stamp_ns: header stamp in nanoseconds.
        image: [H, W, 3] uint8 RGB.
        K: [3, 3] float64 intrinsics in pixels of ``image``.
        frame_id: the image header's frame id.
    """

    stamp_ns: int
    image: np.ndarray
    K: np.ndarray
    frame_id: str = ''


def header_stamp_ns(raw: bytes) -> Optional[int]:
    """Header stamp (ns) of a little-endian CDR message starting with std_msgs/Header, else None.

    Reads the 8 bytes after the 4-byte CDR encapsulation header, so large messages (images,
    point clouds) need not be deserialised to be matched by stamp.
    """
    raw = bytes(raw[:12])
    if len(raw) < 12 or raw[:2] != b'\x00\x01':   # encapsulation: CDR little endian
        return None
    sec, nanosec = struct.unpack_from('<iI', raw, 4)
    return sec * 1_000_000_000 + nanosec


class BagReader:
    """A rosbags ``AnyReader`` whose read and decode errors become one-line :class:`BagError`.

    Only errors of the bag itself are translated: exceptions raised by the caller's code
    between two messages pass through unchanged.
    """

    def __init__(self, reader, path):
        """Wrap an open ``AnyReader`` of ``path``."""
        self._reader, self.path = reader, Path(path)

    @property
    def connections(self):
        """Return the bag's connection records: topic, msgtype, msgcount, offered QoS."""
        return self._reader.connections

    @property
    def paths(self):
        """The bag paths being read."""
        return self._reader.paths

    @property
    def start_time(self) -> int:
        """Earliest log time in nanoseconds."""
        return self._reader.start_time

    @property
    def end_time(self) -> int:
        """Latest log time in nanoseconds."""
        return self._reader.end_time

    def messages(self, connections=()):
        """Yield ``(connection, log time ns, raw CDR)`` in log-time order."""
        iterator = iter(self._reader.messages(connections=connections))
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # rosbags, sqlite3, mcap, zstd... errors
                raise BagError(f'bag {self.path} is truncated or corrupt: '
                               f'{_one_line(exc)}') from None
            yield item

    def deserialize(self, raw, msgtype):
        """Decode one raw CDR message of type ``msgtype``."""
        try:
            return self._reader.deserialize(raw, msgtype)
        except Exception as exc:
            raise BagError(f'bag {self.path}: a {msgtype} message is corrupt: '
                           f'{_one_line(exc)}') from None


@contextmanager
def open_bag(path):
    """Open a bag with rosbags' ``AnyReader``; errors become one-line :class:`BagError`.

    Yields:
        a :class:`BagReader` (``connections``, ``messages()``, ``deserialize()``).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    path = Path(path)
    if not path.exists():
        raise BagError(f'bag not found: {path}')
    if path.is_dir() and not (path / 'metadata.yaml').is_file():
        raise BagError(f'{path} is not a rosbag2 bag (no metadata.yaml); pass the bag folder or '
                       f'its .mcap / .db3 file')
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except Exception as exc:  # rosbags raises several types (ReaderError, sqlite3, KeyError...)
        raise BagError(f'cannot open bag {path}: {_one_line(exc)}') from None
    try:
        yield BagReader(reader, path)
    finally:
        try:
            reader.close()
        except Exception:  # closing a corrupt bag may fail again; the first error matters
            pass


def _one_line(exc) -> str:
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + '...'


def _topics(reader, msgtypes) -> List[str]:
    return sorted({c.topic for c in reader.connections if c.msgtype in msgtypes})


def _namespace(topic: str) -> str:
    if topic.endswith('/compressed'):
        topic = topic[:-len('/compressed')]
    return topic.rsplit('/', 1)[0]


def choose_camera_topics(reader, image_topic=None, info_topic=None) -> Tuple[str, Optional[str]]:
    """Pick the image topic (Image or CompressedImage) and its camera_info topic.

    Auto-detection prefers an image topic with a ``camera_info`` sibling and ignores topics
    whose name mentions depth. Raises :class:`BagError` when nothing or several equally good
    candidates exist (pass the topic explicitly then).
    """
    images = _topics(reader, {IMAGE_TYPE, COMPRESSED_TYPE})
    infos = _topics(reader, {INFO_TYPE})
    if image_topic is None:
        candidates = [t for t in images if 'depth' not in t] or images
        if not candidates:
            raise BagError(f'no sensor_msgs/Image or CompressedImage topic in {reader.paths[0]}')
        paired = [t for t in candidates if _namespace(t) + '/camera_info' in infos]
        candidates = paired or candidates
        raw = [t for t in candidates if not t.endswith('/compressed')]
        candidates = raw or candidates  # the uncompressed stream when both exist
        if len(candidates) > 1:
            raise BagError(f'several image topics ({", ".join(candidates)}): choose one with '
                           f'--image-topic')
        image_topic = candidates[0]
    elif image_topic not in images:
        raise BagError(f'no image topic {image_topic!r} in the bag (image topics: '
                       f'{", ".join(images) or "none"})')
    if info_topic is None:
        sibling = _namespace(image_topic) + '/camera_info'
        if sibling in infos:
            info_topic = sibling
        elif len(infos) == 1:
            info_topic = infos[0]
        elif infos:
            raise BagError(f'several camera_info topics ({", ".join(infos)}): choose one with '
                           f'--info-topic')
    elif info_topic not in infos:
        raise BagError(f'no camera_info topic {info_topic!r} in the bag')
    return image_topic, info_topic


def decode_image(msg, msgtype: str) -> np.ndarray:
    """Image (rgb8, bgr8, mono8, rgba8, bgra8) or CompressedImage message -> [H, W, 3] uint8 RGB.

    Works on any object with the message's fields (:mod:`fmdepth_ros.messages`); a message
    that cannot be decoded raises ``BagError``.
    """
    try:
        if msgtype == COMPRESSED_TYPE:
            return messages.compressed_to_rgb(msg)
        return messages.image_to_rgb(msg)
    except ValueError as exc:
        raise BagError(str(exc)) from None


def _info_K(msg) -> np.ndarray:
    try:
        return messages.camera_info_to_K(msg)
    except ValueError as exc:
        raise BagError(f'camera_info: {exc} (uncalibrated camera?)') from None


def _read_infos(reader, info_topic) -> Tuple[List[int], List[np.ndarray]]:
    conns = [c for c in reader.connections if c.topic == info_topic]
    stamps, Ks = [], []
    for conn, _, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        stamps.append(stamp_to_ns(msg.header.stamp))
        Ks.append(_info_K(msg))
    order = np.argsort(stamps, kind='stable')
    return [stamps[i] for i in order], [Ks[i] for i in order]


def _match_K(stamps, Ks, stamp):
    """Exact stamp match, else the latest earlier camera_info, else the first one."""
    i = bisect.bisect_right(stamps, stamp) - 1
    return Ks[max(i, 0)]


def read_bag_frames(path, image_topic=None, info_topic=None) -> Iterator[BagFrame]:
    """Yield the camera frames of a bag in recording order.

    Args:
        path: bag folder, ``.mcap`` or ``.db3`` file.
        image_topic, info_topic: topic names, auto-detected when None (see
            :func:`choose_camera_topics`).

    Yields:
        :class:`BagFrame` with image [H, W, 3] uint8 RGB and K [3, 3] in its pixels.

    Raises:
        BagError: unreadable bag, no image / camera_info topic, undecodable image.
    """
    with open_bag(path) as reader:
        image_topic, info_topic = choose_camera_topics(reader, image_topic, info_topic)
        if info_topic is None:
            raise BagError(f'no sensor_msgs/CameraInfo topic in {path}: intrinsics are needed')
        stamps, Ks = _read_infos(reader, info_topic)
        if not Ks:
            raise BagError(f'no messages on {info_topic} in {path}')
        conns = [c for c in reader.connections if c.topic == image_topic]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = stamp_to_ns(msg.header.stamp)
            image = decode_image(msg, conn.msgtype)
            yield BagFrame(stamp, image, _match_K(stamps, Ks, stamp), msg.header.frame_id)


# ----------------------------------------------------------------------------- ground truth

def _pose_matrix(position, orientation) -> np.ndarray:
    """[4, 4] of a position + quaternion; a zero / non-finite quaternion raises ``BagError``."""
    try:
        return messages.rigid_transform(position, orientation)
    except ValueError as exc:
        raise BagError(str(exc)) from None


@dataclass
class Trajectory:
    """Poses from nav_msgs/Odometry messages.

    Attributes:
        stamps_ns: [N] int64 header stamps.
        poses: [N, 4, 4] float64 T_frame_child (child pose in ``frame_id``), metres.
        frame_id, child_frame_id: frames of the first message.
    """

    stamps_ns: np.ndarray
    poses: np.ndarray
    frame_id: str
    child_frame_id: str


def read_odometry(path, topic) -> Trajectory:
    """Read every nav_msgs/Odometry message of ``topic`` (sorted by stamp)."""
    with open_bag(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic and c.msgtype == ODOM_TYPE]
        if not conns:
            raise BagError(f'no nav_msgs/Odometry topic {topic!r} in {path}')
        stamps, poses, frames = [], [], None
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamps.append(stamp_to_ns(msg.header.stamp))
            poses.append(_pose_matrix(msg.pose.pose.position, msg.pose.pose.orientation))
            frames = frames or (msg.header.frame_id, msg.child_frame_id)
    order = np.argsort(stamps, kind='stable')
    return Trajectory(np.asarray(stamps, dtype=np.int64)[order],
                      np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)[order],
                      *(frames or ('', '')))


def read_static_transforms(path, topic='/tf_static') -> StaticTransformTree:
    """Read ``/tf_static`` into a static-TF tree (empty when absent).

    ``tree.lookup(target, source)`` gives ``T_target_source`` [4, 4] or None.
    """
    tree = StaticTransformTree()
    with open_bag(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic and c.msgtype == TF_TYPE]
        for conn, _, raw in reader.messages(connections=conns):
            tree.add_message(reader.deserialize(raw, conn.msgtype))
    return tree


def cloud_xyz(msg) -> np.ndarray:
    """sensor_msgs/PointCloud2 (float32 x, y, z fields, any point layout) -> [N, 3] float64."""
    offsets = {f.name: (f.offset, f.datatype) for f in msg.fields}
    if any(name not in offsets or offsets[name][1] != 7 for name in 'xyz'):
        raise BagError('PointCloud2 needs float32 x, y, z fields')
    if msg.is_bigendian:
        raise BagError('big-endian PointCloud2 is not supported')
    count = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    raw = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data,
                        dtype=np.uint8)
    if raw.size < count * step:
        raise BagError(f'PointCloud2 data too short: {raw.size} bytes for {count} points')
    rows = raw[:count * step].reshape(count, step)
    xyz = np.stack([rows[:, offsets[a][0]:offsets[a][0] + 4].copy().view('<f4')[:, 0]
                    for a in 'xyz'], axis=1).astype(np.float64)
    return xyz[np.isfinite(xyz).all(axis=1)]


def read_point_clouds(path, topic) -> Iterator[Tuple[int, str, np.ndarray]]:
    """Yield (stamp ns, frame_id, points [N, 3] metres) for each PointCloud2 of ``topic``."""
    with open_bag(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic and c.msgtype == CLOUD_TYPE]
        if not conns:
            raise BagError(f'no sensor_msgs/PointCloud2 topic {topic!r} in {path}')
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            yield stamp_to_ns(msg.header.stamp), msg.header.frame_id, cloud_xyz(msg)


# ----------------------------------------------------------------------------- training
# The dataset classes build on the torch-based TripletDataset. They are created on first use
# (module ``__getattr__``) so that the readers above, ``fmdepth replay`` and ``fmdepth record``
# do not pay for importing torch.

def bag_sources(path, height, width, image_topic=None, info_topic=None) -> list:
    """Decode a bag's camera stream at ``height`` x ``width`` into ``BagFrameSource`` stretches.

    A new stretch starts where the stamp gap exceeds 2.5x the median frame period or where
    stamps go backwards (a looped recording).
    """
    import cv2
    from fmdepth_ros.geometry import scale_intrinsics   # torch: only for the training sources
    images, stamps, Ks = [], [], []
    for frame in read_bag_frames(path, image_topic, info_topic):
        h, w = frame.image.shape[:2]
        images.append(cv2.resize(frame.image, (width, height),
                                 interpolation=cv2.INTER_AREA if h >= height else
                                 cv2.INTER_LINEAR))
        Ks.append(scale_intrinsics(frame.K, width / w, height / h))
        stamps.append(frame.stamp_ns)
    if not images:
        raise BagError(f'no camera frames in {path}')
    gaps = np.diff(np.asarray(stamps, dtype=np.int64))
    limit = 2.5 * float(np.median(gaps[gaps > 0])) if np.any(gaps > 0) else 0.0
    cuts = [0] + [k + 1 for k, g in enumerate(gaps) if g <= 0 or g > limit] + [len(images)]
    BagFrameSource = _dataset_classes()['BagFrameSource']
    return [BagFrameSource(np.stack(images[a:b]), np.stack(Ks[a:b]),
                           np.asarray(stamps[a:b], dtype=np.int64), f'{path}[{a}:{b}]')
            for a, b in zip(cuts, cuts[1:]) if b > a]


@functools.lru_cache(maxsize=None)
def _dataset_classes():
    """Define BagFrameSource and BagDataset (imports torch through data.triplets)."""
    from fmdepth_ros.data.triplets import FrameSource, TripletDataset, sequence_samples

    class BagFrameSource(FrameSource):
        """A continuous camera stretch of a bag held in memory (a :class:`FrameSource`).

        Attributes:
            images: [N, H, W, 3] uint8 RGB (already at the network size).
            Ks: [N, 3, 3] intrinsics in pixels of ``images``.
            stamps_ns: [N] header stamps.
        """

        def __init__(self, images, Ks, stamps_ns, name='bag'):
            """Store the frames."""
            self.images, self.Ks, self.stamps_ns, self.name = images, Ks, stamps_ns, name
            self.K = Ks[0]

        def __len__(self):
            """Return the number of frames."""
            return len(self.images)

        def load_image(self, i):
            """Return frame ``i`` [H, W, 3] uint8 RGB."""
            return self.images[i]

        def intrinsics(self, i):
            """Return K [3, 3] of frame ``i``."""
            return self.Ks[i]

    class BagDataset(TripletDataset):
        """Training / evaluation samples from the camera stream of a bag (architecture items).

        Frames are decoded once, resized to ``cfg.model.height`` x ``cfg.model.width`` and kept in
        memory as uint8 (about 0.37 MB per frame at 192x640). Items follow
        :class:`~fmdepth_ros.data.triplets.TripletDataset` (``images``, ``images_aug``, ``K``,
        ``index``); samples never span a gap in the recording. ``split='train'`` augments (flip,
        colour jitter) and needs both neighbours; other splits clamp them.
        """

        def __init__(self, path, cfg, split='train', image_topic=None, info_topic=None):
            """Decode the bag's frames (see the class docstring)."""
            self.sources = bag_sources(path, int(cfg.model.height), int(cfg.model.width),
                                       image_topic, info_topic)
            samples = []
            for source in self.sources:
                samples += sequence_samples(source, cfg.model.frame_ids,
                                            require_neighbours=(split == 'train'))
            if not samples:
                raise BagError(f'{path}: {sum(len(s) for s in self.sources)} frames give no '
                               f'sample with frame ids {tuple(cfg.model.frame_ids)}')
            super().__init__(samples, cfg, augment=(split == 'train'), with_depth=False)

        def stamp_ns(self, idx) -> int:
            """Return the header stamp of sample ``idx``'s target frame."""
            source, i = self.samples[idx]
            return int(source.stamps_ns[i])

    for cls in (BagFrameSource, BagDataset):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__   # picklable by name
    return {'BagFrameSource': BagFrameSource, 'BagDataset': BagDataset}


def __getattr__(name):
    """Provide ``BagDataset`` / ``BagFrameSource`` lazily (see the comment above)."""
    classes = _dataset_classes() if name in ('BagDataset', 'BagFrameSource') else {}
    if name in classes:
        return classes[name]
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

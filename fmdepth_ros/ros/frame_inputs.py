"""Input bookkeeping of the ``fmdepth`` node: throttled warnings, camera_info pairing, window.

ROS-message-agnostic apart from reading ``header.stamp`` and ``k``; no rclpy import.
"""

import collections
import threading
import time

from fmdepth_ros.messages import camera_info_to_K, stamp_to_ns
import numpy as np


class WarningThrottle:
    """One warning per kind per ``period`` seconds; counts every occurrence.

    ``counts[kind]`` is the number of times the problem happened (emitted or not).
    """

    def __init__(self, logger, period=5.0, clock=time.monotonic):
        """``logger``: an object with ``warning(str)`` (rclpy or logging)."""
        self.logger = logger
        self.period = float(period)
        self.clock = clock
        self.counts = collections.Counter()
        self._last = {}

    def warn(self, kind, message):
        """Count ``kind`` and log ``message`` unless the same kind was logged recently."""
        self.counts[kind] += 1
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.period:
            return False
        self._last[kind] = now
        suppressed = self.counts[kind] - 1
        suffix = f' ({self.counts[kind]} times so far)' if suppressed else ''
        self.logger.warning(f'{message}{suffix}')
        return True


class CameraInfoCache:
    """Recent valid camera_info messages by stamp, plus the latest valid one.

    :meth:`match` pairs an image stamp exactly, else falls back to the latest valid message
    (drivers that stamp camera_info differently).
    """

    def __init__(self, capacity=50, clock=time.monotonic):
        """Keep at most ``capacity`` messages for exact-stamp pairing."""
        self.by_stamp = collections.OrderedDict()
        self.capacity = capacity
        self.latest = None          # (msg, K)
        self.latest_time = None     # monotonic seconds of the latest valid message
        self.clock = clock
        self._cond = threading.Condition()

    def add(self, msg):
        """Validate and store ``msg``; raises ValueError (zero/NaN intrinsics) when invalid."""
        K = camera_info_to_K(msg)
        if msg.width <= 0 or msg.height <= 0:
            raise ValueError(f'camera_info has an empty size {msg.width}x{msg.height}')
        stamp = stamp_to_ns(msg.header.stamp)
        with self._cond:
            self.by_stamp[stamp] = (msg, K)
            self.by_stamp.move_to_end(stamp)
            while len(self.by_stamp) > self.capacity:
                self.by_stamp.popitem(last=False)
            self.latest = (msg, K, stamp)
            self.latest_time = self.clock()
            self._cond.notify_all()

    def match(self, stamp_ns, wait=0.0):
        """Return ``(msg, K, exact)`` for an image stamp, or None when none is valid yet.

        When the exact stamp is missing and no newer camera_info exists (the image's
        camera_info is probably in flight on another thread), wait up to ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                hit = self.by_stamp.get(stamp_ns)
                if hit is not None:
                    return hit[0], hit[1], True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.latest is not None and self.latest[2] >= stamp_ns):
                    break
                self._cond.wait(remaining)
            if self.latest is None:
                return None
            return self.latest[0], self.latest[1], False

    def age(self):
        """Seconds since the latest valid camera_info (inf when none)."""
        return float('inf') if self.latest_time is None else self.clock() - self.latest_time

    def clear(self):
        """Forget everything."""
        with self._cond:
            self.by_stamp.clear()
            self.latest = None
            self.latest_time = None


class FrameWindow:
    """Sliding window of consecutive frames ``(stamp_ns, image [h,w,3] uint8, K or None)``.

    Its length is ``max(frame_ids) - min(frame_ids) + 1``; :meth:`batch_window` returns the
    frames in ``frame_ids`` order around the target ``-min(frame_ids)`` frames before the newest.
    """

    def __init__(self, frame_ids):
        """``frame_ids``: e.g. (0, -1, 1)."""
        self.frame_ids = tuple(int(f) for f in frame_ids)
        self.length = max(self.frame_ids) - min(self.frame_ids) + 1
        self.frames = collections.deque(maxlen=self.length)

    def push(self, stamp_ns, image, K):
        """Append the newest frame."""
        self.frames.append((stamp_ns, image, K))

    def reset(self):
        """Drop every frame (size change, stamp jump, bag loop)."""
        self.frames.clear()

    def previous(self):
        """Return the frame before the newest, or None."""
        return self.frames[-2] if len(self.frames) >= 2 else None

    @property
    def full(self):
        """True when the window holds ``length`` frames."""
        return len(self.frames) == self.length

    def batch_window(self):
        """``{'images': [F,h,w,3] uint8, 'K': [3,3], 'stamp_ns'}`` in frame_ids order, or None.

        None until the window is full or when the target frame has no intrinsics.
        """
        if not self.full:
            return None
        target = -min(self.frame_ids)
        stamp, _, K = self.frames[target]
        if K is None:
            return None
        images = np.stack([self.frames[target + f][1] for f in self.frame_ids])
        return {'images': images, 'K': K, 'stamp_ns': stamp}

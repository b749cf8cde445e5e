"""Frame statistics of the ``fmdepth`` node and their /diagnostics message."""

import collections
import math
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np


class NodeStats:
    """Counters and a sliding window of frame times/latencies (thread-safe)."""

    def __init__(self, window=30):
        """Rate and latency are averaged over the last ``window`` processed frames."""
        self._lock = threading.Lock()
        self.received = 0        # image messages received
        self.published = 0       # frames with depth published
        self.skipped = 0         # frames skipped without subscribers
        self.dropped = 0         # frames dropped from a full inference queue
        self.poses = 0           # odometry steps published
        self.clouds = 0          # depth/points clouds published (only while subscribed)
        self.errors = 0          # frames whose processing raised
        self.inexact_info = 0    # frames paired with a camera_info of another stamp
        self.swaps = 0           # refined weights swapped into inference
        self._last_depth = None  # the latest published depth [H,W] (valid fraction on demand)
        self._valid_fraction = math.nan
        self._times = collections.deque(maxlen=window)
        self._latencies = collections.deque(maxlen=window)

    def frame_done(self, latency_s, depth):
        """Record one published frame: processing latency (s) and its depth [H,W]."""
        with self._lock:
            self.published += 1
            self._times.append(time.monotonic())
            self._latencies.append(latency_s)
            # counted when the diagnostics ask (once a period), not for every frame
            self._last_depth = depth
            self._valid_fraction = None if depth is not None else 0.0

    @property
    def valid_fraction(self):
        """Fraction of finite pixels in the latest published depth (nan before any frame)."""
        with self._lock:
            if self._valid_fraction is None:
                self._valid_fraction = float(np.isfinite(self._last_depth).mean())
                self._last_depth = None
            return self._valid_fraction

    def rate_hz(self):
        """Return published frames per second over the window (0 with fewer than two frames)."""
        with self._lock:
            if len(self._times) < 2 or self._times[-1] == self._times[0]:
                return 0.0
            return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    def latency_ms(self):
        """Mean processing latency in milliseconds over the window (nan when empty)."""
        with self._lock:
            return 1e3 * float(np.mean(self._latencies)) if self._latencies else math.nan


def _kv(key, value):
    if isinstance(value, float):
        value = f'{value:.4g}'
    return KeyValue(key=key, value=str(value))


def build_diagnostics(name, stamp, stats, device, refine, refine_on, warnings, info_age,
                      skipping, scale, inference=None):
    """Build a DiagnosticArray with one status ``<name>: depth`` (OK or WARN + message).

    ``inference``: optional ``{key: value}`` of the live inference settings (precision,
    channels_last, cuda_graphs, compile), reported as ``inference_<key>``.
    """
    level, message = DiagnosticStatus.OK, 'running'
    if skipping:
        message = 'idle: no subscribers'
    elif stats.published == 0:
        level, message = DiagnosticStatus.WARN, 'no frame processed yet'
    elif not math.isfinite(info_age):
        level, message = DiagnosticStatus.WARN, 'no valid camera_info received'
    if refine.get('errors'):
        level, message = DiagnosticStatus.WARN, f'refinement errors: {refine["last_error"]}'
    status = DiagnosticStatus(level=level, name=f'{name}: depth', message=message,
                              hardware_id=str(device))
    values = [('device', device), ('rate_hz', stats.rate_hz()),
              ('latency_ms', stats.latency_ms()), ('frames_received', stats.received),
              ('frames_published', stats.published), ('frames_skipped', stats.skipped),
              ('frames_dropped', stats.dropped),
              ('poses_published', stats.poses), ('processing_errors', stats.errors),
              ('valid_depth_fraction', stats.valid_fraction),
              ('camera_info_age_s', info_age), ('inexact_camera_info', stats.inexact_info),
              ('scale', scale), ('refinement', 'on' if refine_on else 'off'),
              ('weight_swaps', stats.swaps)]
    values += [(f'inference_{key}', value) for key, value in (inference or {}).items()]
    for key in ('processed', 'improved', 'reverted', 'static', 'last_motion', 'dropped',
                'queue', 'busy', 'last_loss_before', 'last_loss_after', 'last_seconds', 'target',
                'iterations', 'lr', 'errors'):
        if key in refine:
            values.append((f'refine_{key}', refine[key]))
    values += [(f'warnings_{kind}', count) for kind, count in sorted(warnings.items())]
    status.values = [_kv(k, v) for k, v in values]
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [status]
    return msg

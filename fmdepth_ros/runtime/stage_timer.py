"""Per-stage timing of one frame through the node path (``fmdepth bench --node-sizes``).

A :class:`StageTimer` is handed to the node and its depth predictor only while benchmarking:
each stage boundary calls :meth:`StageTimer.mark`, which records the wall time (``perf_counter``)
and the calling thread's CPU time since the previous boundary of the same frame. Without a
timer the node and predictor skip every call (``timer is None``), so the normal path carries no
timing code beyond one attribute test per stage.

Times are seconds internally; :meth:`StageTimer.frame` reports milliseconds. ROS-free.
"""

import threading
import time


class StageTimer:
    """Stage durations of the frames of one run, keyed by the frame's stamp (ns).

    Usage on the processing thread: ``begin(key, start)`` when a frame's work starts (``start``
    a ``perf_counter`` value, default now), ``mark('stage')`` after each stage, ``event(name)``
    for a point in time (e.g. ``'published'``). Stages with the same name in one frame add up.
    """

    def __init__(self):
        """Create an empty record; thread-safe between the processing and reading threads."""
        self._lock = threading.Lock()
        self._frames = {}
        self._local = threading.local()

    def begin(self, key, start=None):
        """Start frame ``key`` on the calling thread; stages are timed from ``start``."""
        record = {'wall_ms': {}, 'cpu_ms': {}, 'events': {}, 'order': []}
        with self._lock:
            self._frames[key] = record
        self._local.key = key
        self._local.wall = time.perf_counter() if start is None else float(start)
        self._local.cpu = time.thread_time()

    def mark(self, stage):
        """Close ``stage``: the time since the previous boundary of this thread's frame."""
        key = getattr(self._local, 'key', None)
        if key is None:
            return
        wall, cpu = time.perf_counter(), time.thread_time()
        with self._lock:
            record = self._frames[key]
            if stage not in record['wall_ms']:
                record['order'].append(stage)
                record['wall_ms'][stage] = record['cpu_ms'][stage] = 0.0
            record['wall_ms'][stage] += 1e3 * (wall - self._local.wall)
            record['cpu_ms'][stage] += 1e3 * (cpu - self._local.cpu)
        self._local.wall, self._local.cpu = wall, cpu

    def event(self, name, when=None):
        """Record a point in time (``perf_counter`` seconds, default now) of this frame."""
        key = getattr(self._local, 'key', None)
        if key is None:
            return
        with self._lock:
            self._frames[key]['events'][name] = time.perf_counter() if when is None else when

    def end(self):
        """Stop timing on the calling thread (later marks are ignored until ``begin``)."""
        self._local.key = None

    def frame(self, key):
        """Return frame ``key``'s record ``{'wall_ms', 'cpu_ms', 'events', 'order'}`` or None."""
        with self._lock:
            record = self._frames.get(key)
            if record is None:
                return None
            return {'wall_ms': dict(record['wall_ms']), 'cpu_ms': dict(record['cpu_ms']),
                    'events': dict(record['events']), 'order': list(record['order'])}


__all__ = ['StageTimer']

"""A background thread that works through a bounded FIFO queue (the freshest items win).

Used by the node for camera frames (:mod:`fmdepth_ros.ros.depth_node`: inference off the ROS
executor) and by :class:`fmdepth_ros.runtime.refinement.OnlineRefiner` for refinement windows.

Hand-written rather than ``queue.Queue`` + ``threading.Thread``: ``queue.Queue`` blocks or
raises when full, while a camera pipeline must drop the *oldest* item (as a KEEP_LAST QoS
history does), and callers need ``wait_idle`` (queue empty *and* nothing in progress) and
counters for diagnostics.
"""

import collections
import threading
import time


class BoundedWorker:
    """Run ``handle(item)`` on one thread for each submitted item, in submission order.

    Args:
        handle: callable(item); an exception is counted, passed to ``on_error`` and the
            thread goes on with the next item.
        maxlen: queue capacity (>= 1); :meth:`submit` on a full queue drops the oldest item.
        name: thread name (shows in ``py-spy``/``top -H``).
        on_error: optional callable(exception) run on the worker thread.
    """

    def __init__(self, handle, maxlen, name, on_error=None):
        """Create the queue; the thread starts with :meth:`start`."""
        if int(maxlen) < 1:
            raise ValueError(f'queue size must be >= 1, got {maxlen}')
        self._handle = handle
        self._on_error = on_error
        self.name = name
        self._queue = collections.deque(maxlen=int(maxlen))
        self._cond = threading.Condition()
        self._thread = None
        self._stop = False
        self._busy = False
        self._counts = {'submitted': 0, 'dropped': 0, 'processed': 0, 'errors': 0,
                        'queue_max': 0}

    def submit(self, item):
        """Queue ``item``; returns True when the oldest queued item was dropped to make room."""
        with self._cond:
            dropped = len(self._queue) == self._queue.maxlen
            self._queue.append(item)
            self._counts['submitted'] += 1
            self._counts['dropped'] += int(dropped)
            self._counts['queue_max'] = max(self._counts['queue_max'], len(self._queue))
            self._cond.notify_all()
        return dropped

    def start(self):
        """Start the thread (idempotent; after :meth:`stop` it starts a new one)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout=10.0):
        """Discard queued items, let the item in progress finish, join the thread.

        Returns True when the thread has ended (or never ran) within ``timeout`` seconds.
        """
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def clear(self):
        """Discard queued items (the one in progress finishes); returns how many."""
        with self._cond:
            count = len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            return count

    def wait_idle(self, timeout=None):
        """Block until the queue is empty and no item is in progress; True if it got idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            return True

    @property
    def running(self):
        """Whether the thread is alive."""
        return bool(self._thread is not None and self._thread.is_alive())

    def stats(self):
        """Return counters and queue state (a copy).

        Keys: ``submitted``, ``dropped``, ``processed``, ``errors``, ``queue_max`` (counters),
        ``queue`` (length now), ``queue_size``, ``running`` and ``busy``.
        """
        with self._cond:
            return dict(self._counts, queue=len(self._queue), queue_size=self._queue.maxlen,
                        running=self.running, busy=self._busy)

    def _run(self):
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 - one bad item must not kill the thread
                with self._cond:
                    self._counts['errors'] += 1
                if self._on_error is not None:
                    try:
                        self._on_error(exc)
                    except Exception:  # noqa: BLE001, S110 - error reporting must not kill it
                        pass
            finally:
                with self._cond:
                    self._busy = False
                    self._counts['processed'] += 1
                    self._cond.notify_all()


__all__ = ['BoundedWorker']

"""BoundedWorker: the drop-oldest FIFO thread behind the node's frames and the refiner."""

import threading

from fmdepth_ros.runtime.worker import BoundedWorker
import pytest


class Recorder:
    """A handle that records items and the thread it ran on; can be held at a gate."""

    def __init__(self):
        self.items, self.threads = [], []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, item):
        self.entered.set()
        assert self.gate.wait(10.0)
        if item == 'boom':
            raise RuntimeError('bad item')
        self.items.append(item)
        self.threads.append(threading.current_thread().name)


def test_items_run_in_order_on_the_named_thread():
    """Every item runs once, in submission order, on the worker's own thread."""
    rec = Recorder()
    worker = BoundedWorker(rec, maxlen=100, name='test-worker')
    worker.start()
    try:
        for i in range(50):
            assert worker.submit(i) is False
        assert worker.wait_idle(10.0)
    finally:
        assert worker.stop()
    assert rec.items == list(range(50))
    assert set(rec.threads) == {'test-worker'}
    stats = worker.stats()
    assert (stats['submitted'], stats['processed'], stats['dropped']) == (50, 50, 0)
    assert not stats['running']


def test_full_queue_drops_the_oldest_and_counts_it():
    """While an item is in progress, a full queue keeps the newest maxlen items."""
    rec = Recorder()
    rec.gate.clear()
    worker = BoundedWorker(rec, maxlen=2, name='test-worker')
    worker.start()
    try:
        worker.submit('first')
        assert rec.entered.wait(10.0)          # 'first' is in progress, the queue is empty
        dropped = [worker.submit(i) for i in range(5)]
        assert dropped == [False, False, True, True, True]
        assert worker.stats()['queue'] == 2 and worker.stats()['queue_max'] == 2
        assert not worker.wait_idle(0.2)
        rec.gate.set()
        assert worker.wait_idle(10.0)
    finally:
        worker.stop()
    assert rec.items == ['first', 3, 4]
    assert worker.stats()['dropped'] == 3


def test_an_error_is_reported_and_the_thread_goes_on():
    """An exception from handle goes to on_error; later items still run."""
    rec = Recorder()
    errors = []
    worker = BoundedWorker(rec, maxlen=10, name='test-worker', on_error=errors.append)
    worker.start()
    try:
        for item in ('a', 'boom', 'b'):
            worker.submit(item)
        assert worker.wait_idle(10.0)
    finally:
        worker.stop()
    assert rec.items == ['a', 'b']
    assert [str(e) for e in errors] == ['bad item']
    assert worker.stats()['errors'] == 1


def test_stop_discards_queued_items_and_start_runs_again():
    """stop() lets the item in progress finish, drops the queue; start() serves new items."""
    rec = Recorder()
    rec.gate.clear()
    worker = BoundedWorker(rec, maxlen=10, name='test-worker')
    worker.start()
    worker.submit('running')
    assert rec.entered.wait(10.0)
    worker.submit('queued')
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    rec.gate.set()
    stopper.join(10.0)
    assert rec.items == ['running'] and not worker.running
    worker.start()
    worker.submit('later')
    assert worker.wait_idle(10.0)
    worker.stop()
    assert rec.items == ['running', 'later']


def test_queue_size_must_be_positive():
    """A queue of size 0 is rejected with a clear message."""
    with pytest.raises(ValueError, match='queue size must be >= 1'):
        BoundedWorker(print, maxlen=0, name='x')

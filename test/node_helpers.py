"""Shared helpers of the node tests: a private rclpy context, a node, frame messages."""

import contextlib
import time

from fmdepth_ros.ros import conversions as conv
from fmdepth_ros.ros.depth_node import DepthNode
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from std_msgs.msg import Header
import torch


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """Use one torch intra-op thread in node test modules.

    The node's inference and refinement threads (and other processes) share 2 cores, and
    OpenMP threads spinning for a descheduled peer make 2-thread runs several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def ros_graph():
    """Yield an initialised private rclpy context; shut it down afterwards."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def make_node(context, **params):
    """Create a DepthNode on the CPU with ``params`` overriding the defaults."""
    params.setdefault('device', 'cpu')
    params.setdefault('cpu_threads', 1)            # as one_torch_thread (the node sets it)
    params.setdefault('camera_info_wait', 1.0)     # the probe publishes camera_info first
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return DepthNode(context=context, parameter_overrides=overrides)


def header(stamp_ns, frame_id='camera_optical'):
    """Build a std_msgs/Header with ``stamp_ns`` nanoseconds."""
    return Header(frame_id=frame_id, stamp=conv.stamp_from_ns(int(stamp_ns)))


def frame_messages(seq, index, stamp_offset_ns=0, frame_id='camera_optical'):
    """(Image rgb8, CameraInfo) of frame ``index`` of a SyntheticSequence."""
    h = header(int(seq.stamps_ns[index]) + stamp_offset_ns, frame_id)
    height, width = seq.images.shape[1:3]
    return conv.rgb_to_image(seq.images[index], h), conv.camera_info_for(h, seq.K, width, height)


def spin_until(executor, condition, timeout):
    """Spin ``executor`` until ``condition()`` is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.02)
    return condition()


def executor_for(context, *nodes):
    """Create a MultiThreadedExecutor (3 threads) with ``nodes`` added."""
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    for node in nodes:
        executor.add_node(node)
    return executor


def abs_rel(pred, gt, max_depth=50.0):
    """Median-scaled AbsRel of ``pred`` against ``gt`` (both [H,W] metres)."""
    mask = np.isfinite(pred) & (gt > 0) & (gt < max_depth)
    pred = pred[mask] * np.median(gt[mask]) / np.median(pred[mask])
    return float(np.mean(np.abs(pred - gt[mask]) / gt[mask]))

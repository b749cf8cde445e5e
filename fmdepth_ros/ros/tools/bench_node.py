"""End-to-end latency of the ``fmdepth`` node through real rclpy (used by ``fmdepth bench``).

A probe node publishes ``sensor_msgs/Image`` + ``CameraInfo`` on ``image`` / ``camera_info`` and
times the arrival of ``depth/image`` from :class:`fmdepth_ros.ros.depth_node.DepthNode`, both in
this process, in a private namespace so other ROS processes on the domain cannot cross-talk.

One frame is in flight at a time: the next image is published once the node has finished the
previous frame completely (pose, odometry and TF run after ``depth/image`` is published; a frame
sent earlier would wait for them and count the previous frame's PoseNet as its own latency).
Every frame is timed stage by stage inside the node (:class:`runtime.stage_timer.StageTimer`),
so the node overhead of a frame is its end-to-end latency minus its own DepthNet forward, both
from the same frame, not the difference of two runs.
"""

import contextlib
import os
import tempfile
import threading
import time

from fmdepth_ros.config import save_config
from fmdepth_ros.messages import stamp_to_ns
from fmdepth_ros.ros import conversions as conv
from fmdepth_ros.ros.depth_node import DepthNode, node_executor
from fmdepth_ros.runtime.inference import DepthPredictor
from fmdepth_ros.runtime.stage_timer import StageTimer
import numpy as np
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
import torch

#: stages up to and including the depth/image publish: they make up the latency
LATENCY_STAGES = ('transport_in', 'handoff', 'convert', 'bookkeeping', 'camera_info_match',
                  'preprocess', 'network', 'graph', 'postprocess', 'scale_nan_mask',
                  'depth_msg', 'depth_publish', 'camera_info_copy', 'camera_info_publish',
                  'points', 'colored', 'transport_out')
#: stages after the publish (the frame's remaining work: it limits the frame rate, not latency)
AFTER_STAGES = ('window', 'pose_network', 'odometry_tf', 'refine_submit', 'stats')
#: latency stages outside the node's own code: rclpy/DDS delivery and the thread hand-over
TRANSPORT_STAGES = ('transport_in', 'handoff', 'transport_out')
NETWORK_STAGES = ('network', 'graph')


@contextlib.contextmanager
def _node_and_probe(cfg, device, opts):
    """Yield ``(node, probe, image_pub, info_pub, received, arrived)`` spinning in-process.

    ``received`` maps a depth/image stamp (ns) to its arrival ``perf_counter``; ``arrived`` is
    the condition notified on each arrival. Yields None when they did not discover each other.
    """
    with tempfile.TemporaryDirectory(prefix='fmdepth-bench-') as tmp:
        config_path = os.path.join(tmp, 'config.yaml')
        save_config(cfg, config_path)
        context = rclpy.Context()
        rclpy.init(args=[], context=context)  # not sys.argv: fmdepth's own options
        executor = node = probe = thread = None
        try:
            # a private namespace: other ROS processes on this domain cannot cross-talk
            namespace = f'/fmdepth_bench_{os.getpid()}_{time.monotonic_ns() % 100000}'
            node = DepthNode(context=context, namespace=namespace, parameter_overrides=[
                Parameter('config_file', value=config_path),
                Parameter('device', value=device),
                # keep the thread count the benchmark runs with (--threads)
                Parameter('cpu_threads', value=min(torch.get_num_threads(), 256)),
                Parameter('publish_colored', value=False),
                Parameter('refine', value=False)])
            # The node builds a plain DepthPredictor; time it with the optimised settings.
            node.predictor = DepthPredictor(node.predictor.net, node.cfg, device=node.device,
                                            **opts)
            probe = rclpy.create_node('fmdepth_bench_probe', context=context,
                                      namespace=namespace)
            received = {}
            arrived = threading.Condition()

            def on_depth(msg):
                now = time.perf_counter()
                with arrived:
                    received[stamp_to_ns(msg.header.stamp)] = now
                    arrived.notify_all()

            image_pub = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
            info_pub = probe.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
            probe.create_subscription(Image, 'depth/image', on_depth, 10)
            executor = node_executor(context)   # what depth_node's main() spins
            executor.add_node(node)
            executor.add_node(probe)
            thread = threading.Thread(target=executor.spin, daemon=True)
            thread.start()
            deadline = time.monotonic() + 10.0
            while (image_pub.get_subscription_count() == 0
                   or node.depth_pub.get_subscription_count() == 0):
                if time.monotonic() > deadline:
                    yield None
                    return
                time.sleep(0.01)
            yield node, probe, image_pub, info_pub, received, arrived
        finally:
            if executor is not None:
                executor.shutdown()
            if thread is not None:
                thread.join(5.0)
            for n in (probe, node):
                if n is not None:
                    n.destroy_node()
            rclpy.try_shutdown(context=context)


def frame_stages(record, sent, arrival):
    """Stage times of one frame: ``{stage: (wall_ms, cpu_ms)}`` plus the totals.

    ``record``: the frame's :meth:`StageTimer.frame`; ``sent`` / ``arrival``: ``perf_counter``
    of the probe's publish and of depth/image's arrival. Transport stages have no CPU time of
    their own here (other threads: serialisation, DDS, the executor), recorded as NaN.
    """
    stages = {'transport_in': (1e3 * (record['events']['received'] - sent), float('nan'))}
    for name in record['order']:
        stages[name] = (record['wall_ms'][name], record['cpu_ms'][name])
    stages['transport_out'] = (1e3 * (arrival - record['events']['published']), float('nan'))
    return stages


def summarise(frames, camera_size, network_size, encoder, notes=()):
    """Per-stage medians over ``frames`` (a list of :func:`frame_stages` dicts + totals).

    Returns the ``node_overhead`` row of one camera size: ``e2e_ms`` / ``network_ms`` /
    ``overhead_ms`` medians (overhead = end-to-end minus the same frame's network), p99s,
    ``stages`` ``{name: {'wall_ms', 'cpu_ms'}}`` (medians, in pipeline order),
    ``after_publish_ms`` (the work after depth/image is out: PoseNet, odometry, TF...), and the
    overhead split in two: ``transport_ms`` (rclpy/DDS in and out plus the hand-over to the
    inference thread, wall) and ``node_work_ms`` / ``node_work_cpu_ms`` (the node's own stages
    before the publish, network excluded: wall, and the CPU time that does not depend on the
    load of a shared machine).
    """
    e2e = np.asarray([f['e2e_ms'] for f in frames])
    network = np.asarray([f['network_ms'] for f in frames])
    overhead = e2e - network

    def per_frame(select, column=0):
        return np.asarray([sum(v[column] for k, v in f['stages'].items() if select(k))
                           for f in frames])

    after = per_frame(lambda k: k in AFTER_STAGES)
    transport = per_frame(lambda k: k in TRANSPORT_STAGES)
    own = (lambda k: k not in AFTER_STAGES and k not in TRANSPORT_STAGES
           and k not in NETWORK_STAGES)
    work, work_cpu = per_frame(own), per_frame(own, 1)
    names = [s for s in LATENCY_STAGES + AFTER_STAGES if any(s in f['stages'] for f in frames)]
    stages = {}
    for name in names:
        wall = [f['stages'][name][0] for f in frames if name in f['stages']]
        cpu = [f['stages'][name][1] for f in frames if name in f['stages']]
        stages[name] = {'wall_ms': float(np.median(wall)),
                        'cpu_ms': (None if np.all(np.isnan(cpu)) else float(np.nanmedian(cpu))),
                        'after_publish': name in AFTER_STAGES}
    return {'camera_size': f'{camera_size[0]}x{camera_size[1]}',
            'size': f'{network_size[0]}x{network_size[1]}', 'encoder': encoder,
            'frames': len(frames),
            'median_ms': float(np.median(e2e)), 'p99_ms': float(np.percentile(e2e, 99)),
            'fps': float(1000.0 / e2e.mean()),
            'network_ms': float(np.median(network)),
            'overhead_ms': float(np.median(overhead)),
            'overhead_p99_ms': float(np.percentile(overhead, 99)),
            'after_publish_ms': float(np.median(after)),
            'transport_ms': float(np.median(transport)),
            'node_work_ms': float(np.median(work)),
            'node_work_cpu_ms': float(np.median(work_cpu)),
            'stages': stages, 'notes': list(notes)}


def node_latency(cfg, device, opts, frames, warmup, images, K):
    """Time Image published -> depth/image received, stage by stage, one frame at a time.

    ``cfg`` is the model config (network size), ``opts`` the :class:`DepthPredictor` options,
    ``images`` a list of ``[H, W, 3]`` uint8 camera frames (any size: the node resizes them to
    the network) and ``K`` their ``[3, 3]`` intrinsics (pixels). ``frames`` are timed after
    ``warmup``. Returns :func:`summarise`'s dict (``median_ms``, ``p99_ms``, ``fps``,
    ``overhead_ms``, ``stages``...) or ``{'skipped': reason}``.
    """
    height, width = images[0].shape[:2]
    with _node_and_probe(cfg, device, opts) as running:
        if running is None:
            return {'skipped': 'the probe and the node did not discover each other within 10 s'}
        node, _, image_pub, info_pub, received, arrived = running
        timer = StageTimer()
        node.stage_timer = timer
        node.predictor.stage_timer = timer
        messages = [conv.rgb_to_image(im, Header(frame_id='camera')) for im in images]
        info = conv.camera_info_for(Header(frame_id='camera'), K, width, height)
        timeout = 60.0 if device == 'cpu' else 10.0
        timed = []
        for i in range(warmup + frames):
            stamp = conv.stamp_from_ns((i + 1) * 100_000_000)
            msg = messages[i % len(messages)]
            msg.header.stamp = stamp
            info.header.stamp = stamp
            info_pub.publish(info)
            key = stamp_to_ns(stamp)
            sent = time.perf_counter()
            image_pub.publish(msg)
            with arrived:
                if not arrived.wait_for(lambda: key in received, timeout):
                    return {'skipped': f'no depth/image within {timeout:.0f} s of frame {i}'}
            # the frame's pose / odometry / TF finish before the next image goes out
            if not node.frames.wait_idle(timeout):
                return {'skipped': f'the node did not finish frame {i} within {timeout:.0f} s'}
            record = timer.frame(key)
            if i < warmup or record is None or 'published' not in record['events']:
                continue
            stages = frame_stages(record, sent, received[key])
            network = sum(stages[s][0] for s in NETWORK_STAGES if s in stages)
            timed.append({'stages': stages, 'e2e_ms': 1e3 * (received[key] - sent),
                          'network_ms': network})
        if not timed:
            return {'skipped': 'no frame was timed'}
        return summarise(timed, (width, height), (cfg.model.width, cfg.model.height),
                         cfg.model.depth_layers, node.predictor.notes)

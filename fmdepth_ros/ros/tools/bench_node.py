"""End-to-end latency of the ``fmdepth`` node through real rclpy (used by ``fmdepth bench``).

A probe node publishes ``sensor_msgs/Image`` + ``CameraInfo`` on ``image`` / ``camera_info`` and
times the arrival of ``depth/image`` from :class:`fmdepth_ros.ros.depth_node.DepthNode`, both in
this process, in a private namespace so other ROS processes on the domain cannot cross-talk.
"""

import os
import tempfile
import threading
import time

from fmdepth_ros.config import save_config
from fmdepth_ros.messages import stamp_to_ns
from fmdepth_ros.ros import conversions as conv
from fmdepth_ros.ros.depth_node import DepthNode
from fmdepth_ros.runtime.inference import DepthPredictor
import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
import torch


def node_latency(cfg, device, opts, frames, warmup, images, K):
    """Time Image published -> depth/image received over ``frames`` frames after ``warmup``.

    ``cfg`` is the model config, ``opts`` the :class:`DepthPredictor` options, ``images`` a list
    of ``[H, W, 3]`` uint8 frames and ``K`` their ``[3, 3]`` intrinsics (pixels). Returns a dict
    with ``median_ms``, ``p99_ms``, ``fps`` (or ``skipped`` with the reason).
    """
    width, height = cfg.model.width, cfg.model.height
    encoder = cfg.model.depth_layers
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
                with arrived:
                    received[stamp_to_ns(msg.header.stamp)] = time.perf_counter()
                    arrived.notify_all()

            image_pub = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
            info_pub = probe.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
            probe.create_subscription(Image, 'depth/image', on_depth, 10)
            executor = MultiThreadedExecutor(num_threads=3, context=context)
            executor.add_node(node)
            executor.add_node(probe)
            thread = threading.Thread(target=executor.spin, daemon=True)
            thread.start()
            deadline = time.monotonic() + 10.0
            while (image_pub.get_subscription_count() == 0
                   or node.depth_pub.get_subscription_count() == 0):
                if time.monotonic() > deadline:
                    return {'skipped': 'the probe and the node did not discover each other '
                                       'within 10 s'}
                time.sleep(0.01)
            messages = [conv.rgb_to_image(im, Header(frame_id='camera')) for im in images]
            info = conv.camera_info_for(Header(frame_id='camera'), K, images[0].shape[1],
                                        images[0].shape[0])
            timeout = 60.0 if device == 'cpu' else 10.0
            latencies = []
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
                        return {'skipped': f'no depth/image within {timeout:.0f} s of '
                                           f'frame {i}'}
                if i >= warmup:
                    latencies.append(received[key] - sent)
            ms = np.asarray(latencies) * 1000.0
            return {'size': f'{width}x{height}', 'encoder': encoder, 'frames': int(frames),
                    'median_ms': float(np.median(ms)), 'p99_ms': float(np.percentile(ms, 99)),
                    'fps': float(1000.0 / ms.mean()), 'notes': list(node.predictor.notes)}
        finally:
            if executor is not None:
                executor.shutdown()
            if thread is not None:
                thread.join(5.0)
            for n in (probe, node):
                if n is not None:
                    n.destroy_node()
            rclpy.try_shutdown(context=context)

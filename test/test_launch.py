"""``ros2 launch fmdepth_ros depth.launch.py`` as a subprocess, with remapped topics.

Needs the upstream launch wheels (``ros2`` CLI + launch_ros) and the package's ament layout in
the venv (scripts/setup_env.sh); skipped with the reason otherwise.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

from fmdepth_ros.data.synth import render_sequence
from node_helpers import executor_for, frame_messages, ros_graph, spin_until
import pytest
import rclpy
from sensor_msgs.msg import CameraInfo, Image

pytestmark = pytest.mark.ros


def _ros2_cli():
    """Path of the venv's ``ros2`` executable, or a reason why the test cannot run."""
    ros2 = os.path.join(os.path.dirname(sys.executable), 'ros2')
    if not os.path.exists(ros2):
        ros2 = shutil.which('ros2')
    if not ros2:
        return None, 'the ros2 CLI (ros2launch wheels) is not installed'
    for module in ('launch', 'launch_ros', 'ros2launch'):
        if importlib.util.find_spec(module) is None:
            return None, f'{module} is not importable'
    share = os.path.join(sys.prefix, 'share', 'fmdepth_ros', 'launch', 'depth.launch.py')
    executable = os.path.join(sys.prefix, 'lib', 'fmdepth_ros', 'depth_node')
    if not (os.path.exists(share) and os.path.exists(executable)):
        return None, 'fmdepth_ros is not installed in the venv (run scripts/setup_env.sh)'
    return ros2, None


def test_ros2_launch_publishes_depth_on_remapped_topics():
    """The launched node answers frames on /cam/img + /cam/info with /fm/depth/image."""
    ros2, reason = _ros2_cli()
    if ros2 is None:
        pytest.skip(reason)
    env = dict(os.environ)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(
        [sys.prefix] + [p for p in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p])
    env.setdefault('OMP_NUM_THREADS', '1')
    proc = subprocess.Popen(
        [ros2, 'launch', 'fmdepth_ros', 'depth.launch.py', 'image:=/cam/img',
         'camera_info:=/cam/info', 'namespace:=fm', 'device:=cpu', 'refine:=false'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    seq = render_sequence(3, seed=2)
    received = []
    try:
        with ros_graph() as context:
            probe = rclpy.create_node('launch_probe', context=context)
            image_pub = probe.create_publisher(Image, '/cam/img', 10)
            info_pub = probe.create_publisher(CameraInfo, '/cam/info', 10)
            probe.create_subscription(Image, '/fm/depth/image', received.append, 10)
            executor = executor_for(context, probe)
            try:
                assert spin_until(executor, lambda: image_pub.get_subscription_count() > 0
                                  or proc.poll() is not None, 120.0), 'node never subscribed'
                assert proc.poll() is None, 'ros2 launch exited early'
                deadline = time.monotonic() + 120.0
                index = 0
                while not received and time.monotonic() < deadline:
                    image, info = frame_messages(seq, index % len(seq),
                                                 stamp_offset_ns=index * 10 ** 8)
                    info_pub.publish(info)
                    image_pub.publish(image)
                    index += 1
                    spin_until(executor, lambda: received, 3.0)
            finally:
                executor.shutdown()
                probe.destroy_node()
    finally:
        # Ctrl-C in a terminal: SIGINT to the whole group (ros2 launch forwards one more)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    assert received, f'no depth on /fm/depth/image; launch output:\n{output[-3000:]}'
    assert received[0].encoding == '32FC1' and received[0].width == 192
    assert 'Traceback' not in output, output[-3000:]
    assert 'process has finished cleanly' in output, output[-3000:]

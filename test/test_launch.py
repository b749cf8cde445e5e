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


def _interrupt_launch(proc):
    """Ctrl-C as in a terminal (SIGINT to the whole group); returns the launch's output.

    ``ros2 launch`` forwards one more SIGINT to its nodes. A group that has not ended 30 s
    later is killed.
    """
    os.killpg(proc.pid, signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    return output


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
        output = _interrupt_launch(proc)
    assert received, f'no depth on /fm/depth/image; launch output:\n{output[-3000:]}'
    assert received[0].encoding == '32FC1' and received[0].width == 192
    assert 'Traceback' not in output, output[-3000:]
    assert 'process has finished cleanly' in output, output[-3000:]


# this tree's launch file (the installed one may be another checkout's)
LAUNCH_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'launch', 'depth.launch.py')


def _launch_module():
    """Import launch/depth.launch.py as a module (skips without launch_ros)."""
    for module in ('launch', 'launch_ros'):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f'{module} is not importable')
    spec = importlib.util.spec_from_file_location('depth_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_passes_only_the_parameter_arguments_given():
    """Arguments left out give no override; given ones are typed parameter values."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument

    module = _launch_module()
    description = module.generate_launch_description()
    declared = {a.name: a for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert {'weights', 'device', 'refine', 'autostart', 'use_sim_time'} <= set(declared)
    assert all(declared[name].description for name in declared)
    for name, _, _ in module.PARAMETER_ARGUMENTS:
        assert declared[name].default_value[0].text == ''
    context = LaunchContext()
    for name in declared:
        context.launch_configurations[name] = ''
    assert module.given_parameters(context) == {}
    context.launch_configurations.update(device='cpu', autostart='false')
    given = module.given_parameters(context)
    assert given == {'device': 'cpu', 'autostart': False}
    context.launch_configurations['refine'] = 'yes'
    with pytest.raises(ValueError, match='refine must be true or false'):
        module.given_parameters(context)


def _parameter_values(context, node_name, names):
    """Values of ``names`` of the running node ``node_name`` through its get_parameters service."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    probe = rclpy.create_node('param_probe', context=context)
    client = probe.create_client(GetParameters, f'{node_name}/get_parameters')
    executor = executor_for(context, probe)
    try:
        assert spin_until(executor, client.service_is_ready, 120.0), 'no parameter service'
        future = client.call_async(GetParameters.Request(names=list(names)))
        assert spin_until(executor, future.done, 60.0)
        return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
    finally:
        executor.shutdown()
        probe.destroy_node()


@pytest.mark.slow   # starts ros2 launch and the node twice (~30 s on 2 cores)
def test_params_file_values_survive_unless_an_argument_is_given(tmp_path):
    """A params file's device/refine/weights stay when the arguments are left out."""
    ros2, reason = _ros2_cli()
    if ros2 is None:
        pytest.skip(reason)
    params = tmp_path / 'params.yaml'
    params.write_text('/**:\n  ros__parameters:\n    device: cpu\n    refine: true\n'
                      '    refine_iterations: 7\n    cpu_threads: 1\n')
    env = dict(os.environ)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(
        [sys.prefix] + [p for p in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p])
    for extra, want in (([], {'device': 'cpu', 'refine': True, 'refine_iterations': 7}),
                        (['refine:=false'], {'device': 'cpu', 'refine': False,
                                             'refine_iterations': 7})):
        proc = subprocess.Popen(
            [ros2, 'launch', LAUNCH_FILE, f'params_file:={params}',
             'namespace:=lp'] + extra,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        try:
            with ros_graph() as context:
                got = _parameter_values(context, '/lp/fmdepth', list(want))
        finally:
            output = _interrupt_launch(proc)
        assert got == want, output[-3000:]

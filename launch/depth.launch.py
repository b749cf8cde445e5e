"""Launch the ``fmdepth`` depth/odometry node.

Example::

    ros2 launch fmdepth_ros depth.launch.py image:=/camera/image_raw
        camera_info:=/camera/camera_info weights:=/path/to/model.pt refine:=true

Outputs (relative to ``namespace``): ``depth/image``, ``depth/camera_info``, ``depth/colored``,
``odom``, TF ``odom -> base_link`` and ``/diagnostics``. Every parameter is documented in
``config/depth.yaml``; the launch arguments below override the file.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the node."""
    default_params = os.path.join(get_package_share_directory('fmdepth_ros'), 'config',
                                  'depth.yaml')
    image = LaunchConfiguration('image')
    camera_info = LaunchConfiguration('camera_info')
    params_file = LaunchConfiguration('params_file')
    weights = LaunchConfiguration('weights')
    device = LaunchConfiguration('device')
    namespace = LaunchConfiguration('namespace')
    use_sim_time = LaunchConfiguration('use_sim_time')
    refine = LaunchConfiguration('refine')
    log_level = LaunchConfiguration('log_level')

    arguments = [
        DeclareLaunchArgument('image', default_value='image',
                              description='input sensor_msgs/Image topic (rgb8, bgr8, mono8, '
                                          'rgba8, bgra8); image/compressed is remapped with it'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='input sensor_msgs/CameraInfo topic'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='YAML file with the node parameters'),
        DeclareLaunchArgument('weights', default_value='',
                              description='checkpoint file; empty = random initialisation '
                                          '(only useful with refine:=true)'),
        DeclareLaunchArgument('device', default_value='auto',
                              description='auto, cuda, cuda:N or cpu'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its relative topics'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (bag playback)'),
        DeclareLaunchArgument('refine', default_value='false',
                              description='online refinement in a background thread'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='logging level (debug, info, warn, error)'),
    ]
    # Remap the inputs; outputs stay relative (depth/image...) so a namespace groups them.
    remappings = [('image', image), ('image/compressed', [image, '/compressed']),
                  ('camera_info', camera_info)]
    node = Node(
        package='fmdepth_ros', executable='depth_node', name='fmdepth', namespace=namespace,
        output='screen', emulate_tty=True,
        parameters=[params_file, {
            'weights': weights,
            'device': device,
            'refine': ParameterValue(refine, value_type=bool),
            'use_sim_time': ParameterValue(use_sim_time, value_type=bool),
        }],
        remappings=remappings,
        arguments=['--ros-args', '--log-level', log_level])
    ld = LaunchDescription()
    for action in arguments:
        ld.add_action(action)
    ld.add_action(node)
    return ld

"""Launch the ``fmdepth`` depth/odometry node.

Example::

    ros2 launch fmdepth_ros depth.launch.py image:=/camera/image_raw
        camera_info:=/camera/camera_info weights:=/path/to/model.pt refine:=true

Outputs (relative to ``namespace``): ``depth/image``, ``depth/camera_info``, ``depth/colored``,
``depth/points``, ``odom``, TF ``odom -> base_link`` and ``/diagnostics``. Every parameter is
documented in ``config/depth.yaml``. The parameter arguments (``weights``, ``device``, ``refine``,
``autostart``, ``use_sim_time``) override the params file only when given: left out, the file's
value (or the node's default) stays.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# Launch arguments that set a node parameter: (name, description, value type). They default to
# '' = "not given": the params file's value (or the parameter's own default) stays.
PARAMETER_ARGUMENTS = (
    ('weights', 'checkpoint file; empty = random initialisation (only useful with '
                'refine:=true)', str),
    ('device', 'auto, cuda, cuda:N or cpu (node default: auto)', str),
    ('refine', 'online refinement in a background thread, true/false (node default: false)',
     bool),
    ('autostart', 'configure and activate the lifecycle node at start, true/false (node '
                  'default: true); false leaves it unconfigured for a lifecycle manager', bool),
    ('use_sim_time', 'use /clock (bag playback), true/false (node default: false)', bool),
)


def given_parameters(context):
    """Return {parameter: value} of the PARAMETER_ARGUMENTS the user gave (non-empty)."""
    values = {}
    for name, _, value_type in PARAMETER_ARGUMENTS:
        text = LaunchConfiguration(name).perform(context).strip()
        if not text:
            continue
        if value_type is bool:
            if text.lower() not in ('true', 'false'):
                raise ValueError(f'launch argument {name} must be true or false, got {text!r}')
            values[name] = text.lower() == 'true'
        else:
            values[name] = text
    return values


def _node(context):
    image = LaunchConfiguration('image')
    # Remap the inputs; outputs stay relative (depth/image...) so a namespace groups them.
    remappings = [('image', image), ('image/compressed', [image, '/compressed']),
                  ('camera_info', LaunchConfiguration('camera_info'))]
    overrides = given_parameters(context)
    return [Node(
        package='fmdepth_ros', executable='depth_node', name='fmdepth',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('params_file')] + ([overrides] if overrides else []),
        remappings=remappings,
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')])]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the node."""
    default_params = os.path.join(get_package_share_directory('fmdepth_ros'), 'config',
                                  'depth.yaml')
    arguments = [
        DeclareLaunchArgument('image', default_value='image',
                              description='input sensor_msgs/Image topic (rgb8, bgr8, mono8, '
                                          'rgba8, bgra8); image/compressed is remapped with it'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description='input sensor_msgs/CameraInfo topic'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='YAML file with the node parameters'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its relative topics'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='logging level (debug, info, warn, error)'),
    ] + [DeclareLaunchArgument(name, default_value='',
                               description=description + '; empty = the params file')
         for name, description, _ in PARAMETER_ARGUMENTS]
    ld = LaunchDescription()
    for action in arguments:
        ld.add_action(action)
    ld.add_action(OpaqueFunction(function=_node))
    return ld

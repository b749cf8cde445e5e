"""The package's third-party dependencies: one table for package.xml, pip and the import scan.

``DEPENDENCIES`` maps an imported module (top level, or a dotted submodule that needs a package
of its own, such as ``torch.utils.tensorboard``) to ``(rosdep key, pip requirement, scope)``:

* the rosdep key is what ``package.xml`` declares (``test/test_packaging.py`` checks that it
  lists exactly these keys, ``exec_depend`` for scope ``exec`` and ``test_depend`` for ``test``,
  and that every module imported under ``fmdepth_ros/`` (and ``test/``) is in this table);
* the pip requirement is what ``scripts/setup_env.sh`` installs (None: not on PyPI, built or
  installed another way, or optional), via ``python fmdepth_ros/dependencies.py --pip``.

Keys ending in ``-pip`` are rosdep's names for packages that exist only on PyPI. Standard library
only (setup_env.sh runs this file before anything else is installed).
"""

import sys

EXEC, TEST = 'exec', 'test'

DEPENDENCIES = {
    # ROS 2 (pip: the ROS 2 Kilted wheels on PyPI)
    'rclpy': ('rclpy', 'ros-rclpy==9.1.*', EXEC),
    'rcl_interfaces': ('rcl_interfaces', 'ros-rcl-interfaces', EXEC),
    'lifecycle_msgs': ('lifecycle_msgs', 'ros-lifecycle-msgs', EXEC),
    'builtin_interfaces': ('builtin_interfaces', 'ros-builtin-interfaces', EXEC),
    'std_msgs': ('std_msgs', 'ros-std-msgs', EXEC),
    'sensor_msgs': ('sensor_msgs', 'ros-sensor-msgs', EXEC),
    'geometry_msgs': ('geometry_msgs', 'ros-geometry-msgs', EXEC),
    'nav_msgs': ('nav_msgs', 'ros-nav-msgs', EXEC),
    'diagnostic_msgs': ('diagnostic_msgs', 'ros-diagnostic-msgs', EXEC),
    'rosgraph_msgs': ('rosgraph_msgs', 'ros-rosgraph-msgs', EXEC),
    'ament_index_python': ('ament_index_python', 'ros-ament-index-python', EXEC),
    # not on PyPI: tf2_msgs / composition_interfaces are built from scripts/ros_interfaces/,
    # launch from ../shared/wheels; tf2_ros and cv_bridge are used when a ROS 2 install has them
    'tf2_msgs': ('tf2_msgs', None, EXEC),
    'tf2_ros': ('tf2_ros', None, EXEC),
    'cv_bridge': ('cv_bridge', None, EXEC),
    'launch': ('launch', None, EXEC),
    'launch_ros': ('launch_ros', None, EXEC),
    'composition_interfaces': ('composition_interfaces', None, TEST),
    # Python libraries
    'torch': ('python3-torch', 'torch', EXEC),     # setup_env.sh: $TORCH_SPEC
    'torch.utils.tensorboard': ('python3-tensorboard-pip', 'tensorboard', EXEC),
    'numpy': ('python3-numpy', 'numpy', EXEC),
    'scipy': ('python3-scipy', 'scipy', EXEC),
    'cv2': ('python3-opencv', 'opencv-python-headless', EXEC),
    'yaml': ('python3-yaml', 'pyyaml', EXEC),
    'PIL': ('python3-pil', 'pillow', EXEC),
    'matplotlib': ('python3-matplotlib', 'matplotlib', EXEC),
    'tqdm': ('python3-tqdm', 'tqdm', EXEC),
    'psutil': ('python3-psutil', 'psutil', EXEC),
    'kornia': ('python3-kornia-pip', 'kornia', EXEC),
    'rosbags': ('python3-rosbags-pip', 'rosbags', EXEC),
    # deployment runtimes (runtime/backends, runtime/onnx_export); checked with torch 2.13 and
    # numpy 2.4. TensorRT: setup_env.sh installs it only where CUDA is present.
    'onnx': ('python3-onnx', 'onnx', EXEC),
    'onnxscript': ('python3-onnxscript-pip', 'onnxscript', EXEC),
    'onnxruntime': ('python3-onnxruntime-pip', 'onnxruntime', EXEC),
    'openvino': ('python3-openvino-pip', 'openvino', EXEC),
    'tensorrt': ('python3-tensorrt-pip', None, EXEC),
    # tests
    'pytest': ('python3-pytest', 'pytest', TEST),
    'xdist': ('python3-pytest-xdist', 'pytest-xdist', TEST),   # `pytest -n 2` (plugin, no import)
    'filelock': ('python3-filelock', 'filelock', TEST),        # xdist workers share a fixture
    'hypothesis': ('python3-hypothesis', 'hypothesis', TEST),
    'mcap': ('python3-mcap-pip', 'mcap', TEST),
    'mcap_ros2': ('python3-mcap-ros2-support-pip', 'mcap-ros2-support', TEST),
    'tensorboard': ('python3-tensorboard-pip', 'tensorboard', EXEC),
    'catkin_pkg': ('python3-catkin-pkg', 'catkin-pkg', TEST),
    'ament_flake8': ('ament_flake8', 'ros-ament-flake8', TEST),
    'ament_pep257': ('ament_pep257', None, TEST),      # linters run by colcon test
    'ament_xmllint': ('ament_xmllint', None, TEST),
}


def module_key(name):
    """Return the DEPENDENCIES key that covers module ``name`` (longest dotted prefix), or None."""
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        prefix = '.'.join(parts[:i])
        if prefix in DEPENDENCIES:
            return prefix
    return None


def pip_requirements(scope=None):
    """Return the pip requirements (sorted, unique) of ``scope`` ('exec', 'test' or both)."""
    return sorted({pip for _, pip, s in DEPENDENCIES.values()
                   if pip and (scope is None or s == scope)})


if __name__ == '__main__':
    if sys.argv[1:] != ['--pip']:
        sys.exit('usage: python fmdepth_ros/dependencies.py --pip')
    print('\n'.join(pip_requirements()))

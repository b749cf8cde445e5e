"""ament_python setup for fmdepth_ros (also installable with plain pip)."""

from glob import glob
import os
import sys

from setuptools import find_packages, setup

PACKAGE = 'fmdepth_ros'

data_files = [
    ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
    (os.path.join('share', PACKAGE), ['package.xml']),
    (os.path.join('share', PACKAGE, 'launch'), glob('launch/*.launch.py')),
    (os.path.join('share', PACKAGE, 'config'), glob('config/*.yaml')),
    (os.path.join('share', PACKAGE, 'splits'), ['splits/LICENSE.FeatDepth']),
]
# The KITTI split files (FeatDepth's, MIT: splits/LICENSE.FeatDepth), one folder per split.
data_files += [(os.path.join('share', PACKAGE, folder.rstrip('/')),
                sorted(glob(folder + '*.txt'))) for folder in sorted(glob('splits/*/'))]
# data/: the downscaled real KITTI clip of `fmdepth demo --real` (CC BY-NC-SA, README.md inside)
for folder, _, files in sorted(os.walk('data')):
    if files:
        data_files.append((os.path.join('share', PACKAGE, folder),
                           sorted(os.path.join(folder, f) for f in files)))
# `ros2 run` / `ros2 launch` look for executables in <prefix>/lib/fmdepth_ros/. colcon's
# `setup.py install` / `develop` put the console scripts there (setup.cfg); a wheel (pip) puts
# them in <prefix>/bin/, so the wheel also carries a launcher that runs bin/depth_node.
if 'bdist_wheel' in sys.argv:
    data_files.append((os.path.join('lib', PACKAGE), ['scripts/pip_launcher/depth_node']))

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=data_files,
    install_requires=['setuptools'],
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='fmdepth_ros maintainers',
    maintainer_email='maintainers@fmdepth-ros.dev',
    description='FeatDepth self-supervised monocular depth and egomotion for ROS 2.',
    license='Apache-2.0',
    extras_require={'test': ['pytest']},
    entry_points={
        'console_scripts': [
            'fmdepth = fmdepth_ros.cli:main',
            'depth_node = fmdepth_ros.ros.depth_node:main',
        ],
        # `fmdepth <name>`: the dispatcher (fmdepth_ros/cli.py) reads this group. Core commands
        # are in fmdepth_ros.commands; the ones that run the node in fmdepth_ros.ros.tools
        # (evaluate and bench there extend the core command of the same name).
        'fmdepth_ros.commands': [
            'train = fmdepth_ros.commands.train',
            'predict = fmdepth_ros.commands.predict',
            'convert = fmdepth_ros.commands.convert',
            'export = fmdepth_ros.commands.export',
            'export-gt = fmdepth_ros.commands.export_gt',
            'synth = fmdepth_ros.commands.synth',
            'kitti2bag = fmdepth_ros.commands.kitti2bag',
            'kitti2folder = fmdepth_ros.commands.kitti2folder',
            'figure = fmdepth_ros.commands.figure',
            'evaluate = fmdepth_ros.ros.tools.evaluate',
            'bench = fmdepth_ros.ros.tools.bench',
            'replay = fmdepth_ros.ros.tools.replay',
            'record = fmdepth_ros.ros.tools.record',
            'soak = fmdepth_ros.ros.tools.soak',
            'demo = fmdepth_ros.ros.tools.demo',
        ],
    },
)

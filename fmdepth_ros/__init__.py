"""fmdepth_ros: FeatDepth self-supervised monocular depth and egomotion, with a ROS 2 node.

The package core (everything outside :mod:`fmdepth_ros.ros`) imports no ROS module.
"""

__version__ = '0.1.0'

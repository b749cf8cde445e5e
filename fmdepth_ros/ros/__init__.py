"""ROS 2 side of fmdepth_ros: the depth node, message conversions, bag replay/record.

Only this sub-package imports rclpy and ROS message packages.
"""

"""Datasets: synthetic sequences, KITTI raw, folders of frames and rosbag2 bags."""

"""``fmdepth bench``, as registered by the ROS tools layer: the core table plus the node row.

Runs :func:`fmdepth_ros.commands.bench.run` with the node's end-to-end latency
(:func:`fmdepth_ros.ros.tools.bench_node.node_latency`); without rclpy the node row says why
it was skipped.
"""

from fmdepth_ros.commands import bench as core_bench

HELP = core_bench.HELP
configure_parser = core_bench.configure_parser


def run(args):
    """Run ``fmdepth bench`` with the node measured through rclpy when it is importable."""
    try:
        from fmdepth_ros.ros.tools.bench_node import node_latency
    except ImportError:
        node_latency = None
    return core_bench.run(args, node_latency=node_latency)

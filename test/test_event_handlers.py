"""Subscriptions destroyed from a callback while a multi-threaded executor spins the node."""

import threading
import time

from fmdepth_ros.ros.event_handlers import create_destroyable_subscription
from node_helpers import ros_graph
import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from std_msgs.msg import String

pytestmark = pytest.mark.ros


def test_subscription_flips_never_stop_a_multithreaded_spin():
    """Create / destroy a subscription every 0.5 ms from a timer for 3 s: the spin survives.

    With rclpy's default QoS-event handlers the same loop raised InvalidHandle out of spin()
    within about a second (4 flips in one measurement).
    """
    with ros_graph() as context:
        node = rclpy.create_node('flipper', context=context)
        publisher = node.create_publisher(String, 'flip', 10)
        state = {'subscription': None, 'flips': 0}

        def flip():
            if state['subscription'] is not None:
                assert node.destroy_subscription(state['subscription'])
                state['subscription'] = None
            else:
                state['subscription'] = create_destroyable_subscription(
                    node, String, 'flip', lambda _: None, 10)
            state['flips'] += 1

        node.create_timer(0.0005, flip)
        node.create_timer(0.0005, lambda: publisher.publish(String(data='x')))
        executor = MultiThreadedExecutor(num_threads=3, context=context)
        executor.add_node(node)
        errors = []

        def spin():
            try:
                executor.spin()
            except Exception as exc:  # noqa: BLE001 - the failure under test
                errors.append(repr(exc))
        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        alive = thread.is_alive()
        executor.shutdown()
        thread.join(10.0)
        node.destroy_node()
        assert alive and not errors, errors
        assert state['flips'] > 200, state       # the loop really ran


def test_node_entities_carry_no_default_event_handlers():
    """The node's publishers and camera inputs add no QoS-event waitables to every spin.

    Only rclpy's own /parameter_events publisher and the /tf_static subscription (kept for
    its incompatible-QoS warning) bring handlers.
    """
    from node_helpers import make_node
    with ros_graph() as context:
        node = make_node(context)
        try:
            outputs = [node.depth_pub, node.info_pub, node.colored_pub, node.points_pub,
                       node.odom_pub, node.diag_pub, node.tf._pub]
            assert all(not p.event_handlers for p in outputs)
            assert node._inputs and all(not s.event_handlers for s in node._inputs)
            others = [p for p in node.publishers if all(p is not o for o in outputs)]
            assert [p.topic_name for p in others] == ['/parameter_events']
            handlers = [h for entity in list(node.publishers) + list(node.subscriptions)
                        for h in entity.event_handlers]
            assert len(list(node.waitables)) == len(handlers) <= 4
        finally:
            node.destroy_node()

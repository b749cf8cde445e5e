"""Subscriptions that a lifecycle node can destroy while any executor spins it.

rclpy (9.1 in the Kilted wheels) gives every subscription default QoS-event handlers
(incompatible QoS / incompatible type warnings), each a waitable of the node. A multi-threaded
executor builds its wait set on one thread while a callback on another (a lifecycle
``deactivate`` or ``cleanup`` service call) may destroy the subscription: a handler whose
destruction was requested between the executor taking it and adding it to the wait set raises
``InvalidHandle`` out of ``spin()``, and every node on that executor stops (measured: a
subscription created and destroyed every 0.5 ms on a 3-thread executor killed the spin after 4
flips; without the handlers, 34 000 flips in 40 s and still spinning). The subscription's own
handle is guarded by the executor; only the handlers are not.

So the node's subscriptions are created without the default handlers. Nothing is lost for the
camera inputs: they are best-effort and volatile, which every publisher's QoS satisfies, so the
incompatible-QoS event cannot fire; a publisher of another message type on the topic is simply
never matched, and the node's diagnostics stay at WARN 'no frame processed yet'.
"""

from rclpy.event_handler import SubscriptionEventCallbacks


def create_destroyable_subscription(node, msg_type, topic, callback, qos, **kwargs):
    """``node.create_subscription`` without the default QoS-event handlers (see module doc)."""
    return node.create_subscription(
        msg_type, topic, callback, qos,
        event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False), **kwargs)

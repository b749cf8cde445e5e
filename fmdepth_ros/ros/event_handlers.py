"""The node's entities without rclpy's default QoS-event handlers, and why.

rclpy (9.1 in the Kilted wheels) gives every publisher and subscription default QoS-event
handlers (incompatible QoS / incompatible type warnings), each one a waitable of the node that
every executor iteration enters, counts and adds to its wait set in Python. Two costs:

* **Destroying a subscription while another thread spins.** A multi-threaded executor builds
  its wait set on one thread while a callback on another (a lifecycle ``deactivate`` or
  ``cleanup`` service call) destroys the subscription: a handler whose destruction was
  requested between the executor taking it and adding it to the wait set raises
  ``InvalidHandle`` out of ``spin()``, and every node on that executor stops (measured: a
  subscription created and destroyed every 0.5 ms on a 3-thread executor killed the spin after
  4 flips; without the handlers, 34 000 flips in 40 s and still spinning). The subscription's
  own handle is guarded by the executor; only the handlers are not.
* **Latency.** The executor rebuilds the wait set after every callback while holding the GIL,
  so the inference thread that the image callback just woke waits for it. The node's eight
  publishers bring 16 handlers: one ``spin_once`` cost 0.83 ms with them and 0.31 ms without
  (the node alone, on the 2-core Xeon), which is most of the image's hand-over time.

So the node's inputs and outputs are created without the default handlers. What that gives up:
the camera inputs are best-effort and volatile, which every publisher's QoS satisfies, so their
incompatible-QoS event cannot fire, and a publisher of another message type is simply never
matched (the diagnostics stay at WARN 'no frame processed yet'). For the outputs, an
incompatible subscriber (e.g. a reliable one with ``output_reliability`` best_effort) is still
reported on its own side: rclcpp and rclpy subscriptions log incompatible QoS by default. The
/tf_static subscription lives as long as the node and keeps its handlers (its reliable,
transient-local QoS can be incompatible with a publisher's).
"""

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks


def create_destroyable_subscription(node, msg_type, topic, callback, qos, **kwargs):
    """``node.create_subscription`` without the default QoS-event handlers (see module doc)."""
    return node.create_subscription(
        msg_type, topic, callback, qos,
        event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False), **kwargs)


def lean_publisher_options():
    """Keywords of ``create_publisher`` / ``create_lifecycle_publisher``: no default handlers."""
    return {'event_callbacks': PublisherEventCallbacks(use_default_callbacks=False)}

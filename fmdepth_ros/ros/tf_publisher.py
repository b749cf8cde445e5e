"""Odometry chaining and TF output for the ``fmdepth`` node (REP-105).

* :class:`OdometryChain` integrates camera motions ``T_earlier_later`` (optical frames) into
  ``T_odom_base``: the odom frame is the base_link pose at the first frame (or after a reset),
  and ``T_odom_base = T_base_cam @ T_cam0_camt @ inv(T_base_cam)``.
* :class:`StaticTransforms` looks up base_frame -> camera frame: through ``tf2_ros.Buffer`` and
  its static listener when tf2_ros is importable, else through the own ``/tf_static`` cache
  (:class:`fmdepth_ros.messages.StaticTransformTree`; tf2_ros is not on PyPI).
* :class:`TfBroadcaster` sends TransformStamped through tf2_ros when importable, else as
  ``tf2_msgs/TFMessage`` on ``/tf``; without tf2_msgs it logs once and sends nothing.
"""

from fmdepth_ros.messages import StaticTransformTree, transform_to_matrix
from fmdepth_ros.ros.event_handlers import lean_publisher_options
import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

try:  # pragma: no cover - depends on the installation
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover
    TFMessage = None

try:  # pragma: no cover - tf2_ros is not on PyPI
    import tf2_ros
except ImportError:
    tf2_ros = None

TF_STATIC_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                    reliability=ReliabilityPolicy.RELIABLE)


class StaticTransforms:
    """``T_parent_child`` look-ups of static transforms for ``node``.

    ``backend`` is ``'tf2_ros'`` (a ``tf2_ros.Buffer`` filled by a static-only
    ``TransformListener``) or ``'tf_static'`` (own subscription to /tf_static, needs tf2_msgs),
    or None when neither is importable (every look-up returns None).
    """

    def __init__(self, node, callback_group=None):
        """Subscribe to the static transforms."""
        self.node = node
        self.backend = None
        self._buffer = self._listener = self._subscription = None
        self.tree = StaticTransformTree()
        if tf2_ros is not None:  # pragma: no cover - not installable from PyPI
            self._buffer = tf2_ros.Buffer()
            try:
                self._listener = tf2_ros.TransformListener(self._buffer, node, static_only=True)
            except TypeError:   # a tf2_ros older than the static_only keyword
                self._listener = tf2_ros.TransformListener(self._buffer, node)
            self.backend = 'tf2_ros'
        elif TFMessage is not None:
            self._subscription = node.create_subscription(
                TFMessage, '/tf_static', self.tree.add_message, TF_STATIC_QOS,
                callback_group=callback_group)
            self.backend = 'tf_static'

    def lookup(self, parent, child):
        """``T_parent_child`` [4,4] (p_parent = T @ p_child), or None when not known."""
        if self.backend == 'tf2_ros':  # pragma: no cover - not installable from PyPI
            from rclpy.time import Time
            try:
                stamped = self._buffer.lookup_transform(parent, child, Time())
            except (tf2_ros.LookupException, tf2_ros.ConnectivityException,
                    tf2_ros.ExtrapolationException, tf2_ros.InvalidArgumentException):
                return None
            return transform_to_matrix(stamped.transform)
        return self.tree.lookup(parent, child)

    def destroy(self):
        """Stop listening (the node may be configured again later)."""
        if self._listener is not None:  # pragma: no cover - tf2_ros only
            self._listener.unregister()
        if self._subscription is not None:
            self.node.destroy_subscription(self._subscription)
        self._listener = self._subscription = None


class OdometryChain:
    """Accumulates camera motion into base_link odometry.

    ``T_base_cam`` [4,4]: base_frame -> camera optical frame (p_base = T @ p_cam).
    """

    def __init__(self, T_base_cam=None):
        """Start at the identity pose."""
        self.T_base_cam = np.eye(4) if T_base_cam is None else np.asarray(T_base_cam, float)
        self.reset()

    def reset(self):
        """Restart odometry at the identity (odom frame = current base pose)."""
        self.T_cam0_cam = np.eye(4)
        self.frames = 0
        self.distance = 0.0

    def step(self, T_earlier_later, scale=1.0):
        """Append one camera motion (translation multiplied by ``scale``); returns T_odom_base."""
        motion = np.array(T_earlier_later, dtype=np.float64)
        motion[:3, 3] *= scale
        self.T_cam0_cam = self.T_cam0_cam @ motion
        self.frames += 1
        self.distance += float(np.linalg.norm(motion[:3, 3]))
        return self.T_odom_base

    @property
    def T_odom_base(self):
        """Return the current base pose in the odom frame [4,4]."""
        return self.T_base_cam @ self.T_cam0_cam @ np.linalg.inv(self.T_base_cam)

    def base_motion(self, T_earlier_later, scale=1.0):
        """Return the base_link motion [4,4] of a camera motion (for the twist)."""
        motion = np.array(T_earlier_later, dtype=np.float64)
        motion[:3, 3] *= scale
        return self.T_base_cam @ motion @ np.linalg.inv(self.T_base_cam)


class TfBroadcaster:
    """Sends TransformStamped messages on /tf (tf2_ros when importable, else TFMessage)."""

    def __init__(self, node, callback_group=None):
        """Create the publisher; logs once when no TF transport is available."""
        self.node = node
        self.backend = None
        self._pub = None
        if tf2_ros is not None:  # pragma: no cover - not installable from PyPI
            self._pub = tf2_ros.TransformBroadcaster(node)
            self.backend = 'tf2_ros'
        elif TFMessage is not None:
            self._pub = node.create_publisher(TFMessage, '/tf', TF_QOS,
                                              callback_group=callback_group,
                                              **lean_publisher_options())
            self.backend = 'tf2_msgs'
        else:
            node.get_logger().warning('neither tf2_ros nor tf2_msgs is importable: TF output '
                                      'is disabled (odometry is still published on odom)')

    def subscription_count(self):
        """Return the number of /tf subscribers (0 when TF is unavailable)."""
        if self._pub is None:
            return 0
        if self.backend == 'tf2_ros':  # pragma: no cover - the broadcaster hides its publisher
            return self.node.count_subscribers('/tf')
        return self._pub.get_subscription_count()

    def send(self, transforms):
        """Broadcast a list of TransformStamped."""
        if self._pub is None:
            return
        if self.backend == 'tf2_ros':  # pragma: no cover
            self._pub.sendTransform(transforms)
        else:
            self._pub.publish(TFMessage(transforms=list(transforms)))

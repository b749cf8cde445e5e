"""The ``fmdepth`` node: live monocular depth and egomotion with background online refinement.

Subscriptions (sensor-data QoS): ``image`` (sensor_msgs/Image rgb8/bgr8/mono8/rgba8/bgra8) or
``image/compressed`` (``use_compressed``), ``camera_info``, ``/tf_static``.

Publications (RELIABLE by default, ``output_reliability``), every one stamped with the input
image's header (never ``now()``):

* ``depth/image``: 32FC1 metres at the input resolution, NaN outside [min_depth, max_depth];
* ``depth/camera_info``: the paired camera_info with the identical header (depth_image_proc's
  ``point_cloud_xyz`` pairs them by exact stamp), published with every ``depth/image`` once any
  valid camera_info is known (each image, the first included, waits ``camera_info_wait`` for
  its own); a camera that never sends a valid camera_info gets ``depth/image`` alone, with a
  throttled warning;
* ``depth/colored``: rgb8 colour map for people (``publish_colored``);
* ``depth/points`` (sensor_msgs/PointCloud2): x, y, z float32 in the camera optical frame (the
  depth image's header), optional packed rgb, back-projected from ``depth/image`` with
  ``depth/camera_info``'s K; computed only while subscribed (``points_*`` parameters);
* ``odom`` (nav_msgs/Odometry) and TF ``odom_frame -> base_frame`` (REP-105), chained through
  base_frame -> camera optical frame from /tf_static or ``base_to_camera``;
* ``/diagnostics``: rate, latency, device, refinement state, input problems.

Lifecycle (a managed ``rclpy`` LifecycleNode; ``autostart`` true configures and activates it at
start, so ``ros2 run`` / ``ros2 launch`` behave as a plain node): ``configure`` loads weights and
config and builds the predictors (a bad file: FAILURE with a one-line reason, the node stays
unconfigured); ``activate`` creates the input subscriptions and starts the threads;
``deactivate`` removes the subscriptions, lets the queued frames finish and stops the threads,
so nothing is published while inactive (the outputs are lifecycle publishers too); ``cleanup``
frees the networks (and cached CUDA memory); ``shutdown`` does what is still needed of both.

Threads: the image subscription's callback only queues the message (its own
MutuallyExclusive callback group); conversion, inference and publishing run on the node's
``fmdepth-inference`` thread, in arrival order, from a queue of ``queue_size`` frames that drops
the oldest when inference falls behind (counted, with a throttled warning). camera_info,
/tf_static and the diagnostics timer share another group; online refinement has its own thread
(:class:`runtime.refinement.OnlineRefiner`). Neither inference nor refinement runs on the
executor: a callback that keeps its group busy for a whole inference makes rclpy's
MultiThreadedExecutor spin without sleeping while the next image waits (measured: ~800 empty
wake-ups per frame; the spinning thread holds the GIL and cut throughput ~4x on 2 cores).
Since every callback only queues or caches, ``main`` spins one ``SingleThreadedExecutor``
(:func:`node_executor`); the callback groups keep the node correct under a multi-threaded
executor too (tests and other hosts may spin it with one).
"""

import signal
import sys
import time

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from fmdepth_ros.geometry import scale_intrinsics
from fmdepth_ros.messages import camera_info_to_K, stamp_to_ns, xyz_rpy_to_matrix
from fmdepth_ros.pointcloud import depth_to_cloud
from fmdepth_ros.ros import conversions as conv
from fmdepth_ros.ros import params as node_params
from fmdepth_ros.ros.diagnostics import build_diagnostics, NodeStats
from fmdepth_ros.ros.event_handlers import (create_destroyable_subscription,
                                            lean_publisher_options)
from fmdepth_ros.ros.frame_inputs import CameraInfoCache, FrameWindow, WarningThrottle
from fmdepth_ros.ros.model_setup import inference_options, load_model, StartupError
from fmdepth_ros.ros.tf_publisher import OdometryChain, StaticTransforms, TfBroadcaster
from fmdepth_ros.runtime.scale import DepthScaler, scale_and_mask
from fmdepth_ros.runtime.worker import BoundedWorker
from nav_msgs.msg import Odometry
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

RUNTIME_SCALE = ('scale_mode', 'scale_factor', 'camera_height')
RUNTIME_REFINE = {'refine': 'enabled', 'refine_iterations': 'iterations', 'refine_lr': 'lr',
                  'refine_target': 'target', 'refine_guard': 'guard',
                  'refine_batchnorm': 'batchnorm', 'refine_min_motion': 'min_motion'}


class DepthNode(LifecycleNode):
    """The ``fmdepth`` node.

    ``DepthNode(**kwargs)`` forwards kwargs (context, parameter_overrides, namespace...) to
    ``rclpy.lifecycle.LifecycleNode``. With ``autostart`` (default) it raises
    :class:`StartupError` on bad weights/config.
    """

    def __init__(self, **kwargs):
        """Declare parameters and the outputs; with ``autostart``, configure and activate.

        With ``autostart`` a failed configure raises :class:`StartupError` (one line), as a
        plain node would; without it the node waits, unconfigured, for a lifecycle manager.
        """
        super().__init__('fmdepth', **kwargs)
        node_params.declare_all(self)
        # {parameter name: current value}, updated by the parameter callback
        self.params = {p.name: self.get_parameter(p.name).value for p in node_params.PARAMS}
        self.warnings = WarningThrottle(self.get_logger(), self.params['warning_period'])
        self.stats = NodeStats()
        self.predictor = self.pose_estimator = self.refiner = self.scaler = None
        self.frames = None
        #: optional :class:`runtime.stage_timer.StageTimer` (``fmdepth bench``): None = untimed
        self.stage_timer = None
        self.configure_error = None
        self._inputs = []
        self._diag_timer = None
        self._setup_outputs()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self._autostarting = bool(self.params['autostart'])
        if self._autostarting:
            configured = self.trigger_configure()
            self._autostarting = False
            if configured != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.configure_error or 'configure failed')
            self.trigger_activate()

    # -------------------------------------------------------------------------- lifecycle
    def on_configure(self, state):
        """Load weights/config and build the predictors; FAILURE (one-line reason) if bad."""
        self.params = {p.name: self.get_parameter(p.name).value for p in node_params.PARAMS}
        try:
            reason = node_params.validate(self.params)
            if reason:
                raise StartupError(f'invalid parameters: {reason}')
            self._setup_networks()
        except Exception as exc:  # noqa: BLE001 - a failed configure reports, never raises
            self.configure_error = (str(exc) if isinstance(exc, StartupError)
                                    else f'{type(exc).__name__}: {exc}')
            if not self._autostarting:      # autostart: StartupError carries the line
                self.get_logger().error(f'configure failed: {self.configure_error}')
            self._free_networks()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        self.scaler = DepthScaler(self.params['scale_mode'], self.params['scale_factor'],
                                  self.params['camera_height'])
        self.window = FrameWindow(self.params['frame_ids'])
        self.infos = CameraInfoCache()
        self.odometry = OdometryChain()
        self._pose_cov = np.zeros(6)
        self._last_stamp_ns = None
        self._last_size = None
        self._first_image_time = None
        self._frames_since_refine = 0
        self._skipping = False
        # _convert_and_process catches and reports every error of a frame: no on_error needed
        self.frames = BoundedWorker(self._process_queued, int(self.params['queue_size']),
                                    'fmdepth-inference')
        opts = self._inference_state()
        self.get_logger().info(
            f'fmdepth ready: {self.cfg.model.width}x{self.cfg.model.height} network input on '
            f'{self.device} ({opts["backend"]} {opts["precision"]}'
            + (', channels_last' if opts['channels_last'] else '')
            + (', CUDA graphs' if opts['cuda_graphs'] else '')
            + (', torch.compile' if opts['compile'] else '')
            + f', {self.cpu_threads} CPU thread{"s" if self.cpu_threads > 1 else ""}'
            + f'), refinement {"on" if self.params["refine"] else "off"}, '
            f'scale_mode {self.params["scale_mode"]}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        """Create the input subscriptions and the diagnostics timer; start the threads."""
        self.frames.start()
        if self.params['refine']:
            self.refiner.start()
        self._setup_inputs()
        return super().on_activate(state)

    def on_deactivate(self, state):
        """Remove the inputs, let queued frames finish, stop the threads; outputs go quiet."""
        self._stop_activity()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        """Free the networks and the refiner (and cached CUDA memory)."""
        self._free_networks()
        return super().on_cleanup(state)

    def on_shutdown(self, state):
        """Stop whatever runs and free the networks."""
        self._stop_activity()
        self._free_networks()
        return super().on_shutdown(state)

    def _stop_activity(self):
        for entity in self._inputs:
            self.destroy_subscription(entity)
        self._inputs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.frames is not None:
            self.frames.wait_idle(60.0)     # the queued frames finish and publish
            _quietly(self.frames.stop)
        if self.refiner is not None:
            _quietly(self.refiner.stop)     # the window in progress finishes

    def _free_networks(self):
        import gc
        device = getattr(self, 'device', 'cpu')
        self.predictor = self.pose_estimator = self.refiner = None
        self.frames = None
        gc.collect()
        if str(device).startswith('cuda'):
            import torch
            torch.cuda.empty_cache()

    # ----------------------------------------------------------------------------- set-up
    def _setup_networks(self):
        from fmdepth_ros.runtime.backends import create_depth_predictor, engine_options
        from fmdepth_ros.runtime.inference import (PoseEstimator, select_device,
                                                   set_cpu_threads)
        self.cpu_threads = set_cpu_threads(self.params['cpu_threads'])
        from fmdepth_ros.runtime.refinement import OnlineRefiner
        model, self.cfg, warning = load_model(self.params['weights'], self.params['config_file'],
                                              self.params['width'], self.params['height'])
        if warning:
            self.get_logger().warning(warning)
        self.cfg.model.frame_ids = tuple(self.params['frame_ids'])
        try:
            self.device, device_warning = select_device(self.params['device'])
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        if device_warning:
            self.get_logger().warning(device_warning)
        self.cfg.refine.queue_size = int(self.params['refine_queue_size'])
        precision = self.params['precision']
        # int8 is the DepthNet engine's; PoseNet (and a torch fallback) run torch's auto
        self.inference_options = inference_options(
            self.device, 'auto' if precision == 'int8' else precision,
            self.params['channels_last'], self.params['cuda_graphs'], self.params['compile'])
        calibration = None
        if precision == 'int8' and self.params['int8_calibration']:
            from fmdepth_ros.errors import BackendUnavailable
            from fmdepth_ros.runtime.quantize import calibration_inputs
            try:
                calibration = calibration_inputs(self.params['int8_calibration'],
                                                 self.cfg.model.height, self.cfg.model.width)
            except BackendUnavailable as exc:
                raise StartupError(f'int8_calibration: {exc}') from None
        self.predictor = create_depth_predictor(
            model.depth_net, self.cfg, self.params['backend'], self.device,
            precision, torch_options=self.inference_options,
            engine_options=engine_options(self.params['weights'], calibration),
            cache_path=self.params['backend_cache'] or None,
            logger=_LoggingAdapter(self.get_logger()))
        self._notes_logged = self._log_predictor_notes(0)
        self.pose_estimator = PoseEstimator(
            model.pose_net, self.cfg, device=self.device,
            precision=self.inference_options['precision'],
            cast_weights=self.inference_options.get('cast_weights', False))
        self.refiner = OnlineRefiner(model, self.cfg, device=self.device,
                                     on_weights=self._swap_weights,
                                     logger=_LoggingAdapter(self.get_logger()))
        self.refiner.configure(**self._refine_settings())

    def _refine_settings(self):
        """Return the OnlineRefiner settings from the node's refine_* parameters."""
        return {key: self.params[name] for name, key in RUNTIME_REFINE.items()}

    def _setup_outputs(self):
        """Lifecycle publishers (quiet unless active), /tf and the /tf_static listener."""
        self.image_group = MutuallyExclusiveCallbackGroup()
        self.aux_group = MutuallyExclusiveCallbackGroup()
        reliable = self.params['output_reliability'] == 'reliable'
        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST,
                             depth=int(self.params['output_depth']), reliability=reliability)
        self.static_tf = StaticTransforms(self, callback_group=self.aux_group)
        # no default QoS-event handlers: each costs every executor iteration (event_handlers)
        lean = lean_publisher_options
        self.depth_pub = self.create_lifecycle_publisher(Image, 'depth/image', out_qos, **lean())
        self.info_pub = self.create_lifecycle_publisher(CameraInfo, 'depth/camera_info', out_qos,
                                                        **lean())
        self.colored_pub = self.create_lifecycle_publisher(Image, 'depth/colored', out_qos,
                                                           **lean())
        self.points_pub = self.create_lifecycle_publisher(PointCloud2, 'depth/points', out_qos,
                                                          **lean())
        self.odom_pub = self.create_lifecycle_publisher(Odometry, 'odom', out_qos, **lean())
        self.tf = TfBroadcaster(self)
        self.diag_pub = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics', 10,
                                                        **lean())

    def _setup_inputs(self):
        """Image / camera_info subscriptions (sensor-data QoS) and the diagnostics timer."""
        in_qos = QoSProfile(**{'history': HistoryPolicy.KEEP_LAST,
                               'depth': int(self.params['queue_size']),
                               'reliability': qos_profile_sensor_data.reliability,
                               'durability': qos_profile_sensor_data.durability})
        if self.params['use_compressed']:
            image = create_destroyable_subscription(self, CompressedImage, 'image/compressed',
                                                    self._queue_compressed, in_qos,
                                                    callback_group=self.image_group)
        else:
            image = create_destroyable_subscription(self, Image, 'image', self._queue_image,
                                                    in_qos, callback_group=self.image_group)
        info = create_destroyable_subscription(self, CameraInfo, 'camera_info',
                                               self.camera_info_callback, in_qos,
                                               callback_group=self.aux_group)
        self._inputs = [image, info]
        self._diag_timer = self.create_timer(float(self.params['diagnostics_period']),
                                             self.publish_diagnostics,
                                             callback_group=self.aux_group)

    # ------------------------------------------------------------------------- parameters
    def _on_set_parameters(self, parameters):
        """Validate a parameter change (ranges are already checked by the descriptors)."""
        merged = dict(self.params)
        for param in parameters:
            spec = node_params.BY_NAME.get(param.name)
            if spec is not None and spec.read_only:
                return SetParametersResult(successful=False,
                                           reason=f'{param.name} is read-only at run time')
            merged[param.name] = param.value
        reason = node_params.validate(merged)
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _after_set_parameters(self, parameters):
        """Apply accepted changes (next frame uses them)."""
        for param in parameters:
            self.params[param.name] = param.value
        names = {param.name for param in parameters}
        if self.scaler is None:     # not configured: on_configure reads them
            return
        if names & set(RUNTIME_SCALE):
            self.scaler.configure(mode=self.params['scale_mode'],
                                  factor=self.params['scale_factor'],
                                  camera_height=self.params['camera_height'])
        if names & set(RUNTIME_REFINE):
            self.refiner.configure(**self._refine_settings())
            if self.params['refine']:
                self.refiner.start()
        if 'warning_period' in names:
            self.warnings.period = float(self.params['warning_period'])
        if names & {'base_to_camera', 'base_frame', 'use_tf_static'}:
            self.odometry.reset()

    def set_runtime_parameters(self, **values):
        """Set parameters atomically from keyword arguments (tests, demo); returns the result."""
        return self.set_parameters_atomically([Parameter(k, value=v) for k, v in values.items()])

    # --------------------------------------------------------------------------- callbacks
    def camera_info_callback(self, msg):
        """Store a valid camera_info; warn (throttled) about zero/NaN intrinsics."""
        try:
            self.infos.add(msg)
        except ValueError as exc:
            self.warnings.warn('bad_camera_info', f'ignoring camera_info: {exc}')

    def _queue_image(self, msg):
        """Subscription callback: hand the Image to the inference thread (returns at once)."""
        self._queue_frame(msg, conv.image_to_rgb)

    def _queue_compressed(self, msg):
        """Subscription callback: hand the CompressedImage to the inference thread."""
        self._queue_frame(msg, conv.compressed_to_rgb)

    def _queue_frame(self, msg, convert):
        self.stats.received += 1
        if self.frames.submit((msg, convert, time.perf_counter())):
            self.stats.dropped += 1
            self.warnings.warn('frames_dropped', f'inference is slower than the image rate: '
                               f'dropped the oldest queued frame (queue_size '
                               f'{self.params["queue_size"]})')

    def _process_queued(self, item):
        msg, convert, received = item
        timer = self.stage_timer
        if timer is not None:
            timer.begin(stamp_to_ns(msg.header.stamp), start=received)
            timer.event('received', received)
            timer.mark('handoff')       # subscription callback -> inference thread
        try:
            self._convert_and_process(msg, convert, received)
        finally:
            if timer is not None:
                timer.end()

    def _mark(self, stage):
        """Close ``stage`` of the attached stage timer (benchmarking only)."""
        if self.stage_timer is not None:
            self.stage_timer.mark(stage)

    def image_callback(self, msg):
        """Convert and process one sensor_msgs/Image now, on the calling thread; never raises.

        The subscription queues images for the inference thread instead.
        """
        self.stats.received += 1
        self._convert_and_process(msg, conv.image_to_rgb)

    def _convert_and_process(self, msg, convert, received=None):
        try:
            rgb = convert(msg)
            self._mark('convert')
        except ValueError as exc:
            self.warnings.warn('bad_image', f'dropping image: {exc}')
            return
        except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the node
            self.warnings.warn('bad_image', f'dropping image: {type(exc).__name__}: {exc}')
            return
        try:
            self.process(msg.header, rgb, received)
        except Exception as exc:  # noqa: BLE001 - keep serving later frames
            self.stats.errors += 1
            self.warnings.warn('processing_error',
                               f'frame processing failed: {type(exc).__name__}: {exc}')

    # ------------------------------------------------------------------------- processing
    def _check_stream(self, stamp_ns, size):
        """Stamp/size continuity; resets the window (and odometry) when needed. False = drop."""
        if self._last_size is not None and size != self._last_size:
            self.warnings.warn('size_change', f'image size changed from '
                               f'{self._last_size[1]}x{self._last_size[0]} to '
                               f'{size[1]}x{size[0]}: window reset')
            self.window.reset()
        self._last_size = size
        if self._last_stamp_ns is not None:
            delta = (stamp_ns - self._last_stamp_ns) * 1e-9
            if delta == 0:
                self.warnings.warn('duplicate_stamp', 'image with the same stamp as the '
                                   'previous one: dropped')
                return False
            if delta < 0:
                self.warnings.warn('stamp_backwards', f'image stamp went backwards by '
                                   f'{-delta:.3f} s (bag loop?): window and odometry reset')
                self.window.reset()
                self.odometry.reset()
                self._pose_cov[:] = 0
            elif delta > self.params['max_frame_gap']:
                self.warnings.warn('stamp_jump', f'image stamp jumped forward by {delta:.3f} s '
                                   f'(> max_frame_gap {self.params["max_frame_gap"]} s, dropped '
                                   'frames?): window reset')
                self.window.reset()
        self._last_stamp_ns = stamp_ns
        return True

    def _has_subscribers(self):
        pubs = [self.depth_pub, self.info_pub, self.odom_pub, self.points_pub]
        if self.params['publish_colored']:
            pubs.append(self.colored_pub)
        count = sum(p.get_subscription_count() for p in pubs)
        if self.params['publish_tf']:
            count += self.tf.subscription_count()
        return count > 0

    def _camera_info_for(self, stamp_ns):
        """Paired (info, K) by exact stamp, else the latest valid one; (None, None) if none.

        Every frame, the first ones included (nothing received yet: the camera_info is
        probably in flight on the other callback group), waits up to ``camera_info_wait`` for
        its camera_info; only once no camera_info at all has come for ``camera_info_timeout``
        seconds do frames stop waiting (a camera without camera_info is not slowed down).
        """
        wait = self.params['camera_info_wait']
        if (self.infos.latest is None and time.monotonic() - self._first_image_time
                > self.params['camera_info_timeout']):
            wait = 0.0
        match = self.infos.match(stamp_ns, wait=wait)
        waited = min(self.infos.age(), time.monotonic() - self._first_image_time)
        if waited > self.params['camera_info_timeout']:
            self.warnings.warn('no_camera_info', f'no valid camera_info for more than '
                               f'{self.params["camera_info_timeout"]:.1f} s'
                               + ('' if match else ': publishing depth without '
                                  'depth/camera_info, refinement paused'))
        if match is None:
            return None, None
        info, K, exact = match
        if not exact:
            self.stats.inexact_info += 1
        return info, K

    def process(self, header, rgb, received=None):
        """Depth, camera_info, odometry and refinement for one converted frame [H,W,3].

        ``received``: ``time.perf_counter()`` when the message arrived (latency is measured
        from it; default now).
        """
        start = time.perf_counter() if received is None else received
        if self._first_image_time is None:
            self._first_image_time = time.monotonic()
        stamp_ns = stamp_to_ns(header.stamp)
        height, width = rgb.shape[:2]
        if not self._check_stream(stamp_ns, (height, width)):
            return
        if self.params['skip_without_subscribers'] and not self._has_subscribers():
            if not self._skipping:
                self.get_logger().info('no subscribers: inference paused')
            self._skipping = True
            self.stats.skipped += 1
            self.window.reset()
            return
        if self._skipping:
            self.get_logger().info('subscriber present: inference resumed')
            self._skipping = False
        self._mark('bookkeeping')
        info, K = self._camera_info_for(stamp_ns)
        self._mark('camera_info_match')
        depth = self._publish_depth(header, rgb, info, K)
        if self.stage_timer is not None:
            self.stage_timer.event('published')
        net_image = cv2.resize(rgb, (self.cfg.model.width, self.cfg.model.height),
                               interpolation=cv2.INTER_AREA)
        K_net = None
        if K is not None:
            K_net = scale_intrinsics(K, self.cfg.model.width / float(width),
                                     self.cfg.model.height / float(height))
        self.window.push(stamp_ns, net_image, K_net)
        self._mark('window')
        self._publish_motion(header)
        self._maybe_refine()
        self._mark('refine_submit')
        self.stats.frame_done(time.perf_counter() - start, depth)
        self._mark('stats')

    def _log_predictor_notes(self, logged):
        """Log the predictor's new fallback notes (compile/graph/OOM) through rclpy."""
        notes = self.predictor.notes
        for note in notes[logged:]:
            self.get_logger().warning(note)
        return len(notes)

    def _predict_depth(self, rgb, out=None):
        """Depth [H,W] float32 of ``rgb`` (into ``out`` if given); follows a CUDA OOM fallback."""
        try:
            return self.predictor.predict(rgb, out=out)
        finally:
            if len(self.predictor.notes) > self._notes_logged:
                self._notes_logged = self._log_predictor_notes(self._notes_logged)
                if self.predictor.device.type != str(self.device).split(':')[0]:
                    self._pose_to_cpu('the depth predictor fell back to the CPU')

    def _pose_to_cpu(self, reason):
        """Move pose estimation to the CPU (fp32), in place: refiner swaps keep reaching it."""
        self.device = 'cpu'
        self.pose_estimator.fall_back_to_cpu(reason)

    def _estimate_pose(self, earlier, later):
        """``T_earlier_later`` [4,4]; a CUDA out-of-memory error moves PoseNet to the CPU."""
        import torch
        try:
            return self.pose_estimator.estimate(earlier, later)
        except torch.cuda.OutOfMemoryError:
            if self.pose_estimator.device.type != 'cuda':
                raise
            self.get_logger().warning('CUDA out of memory in pose estimation; falling back to '
                                      'the CPU (fp32)')
            self._pose_to_cpu('CUDA out of memory in pose estimation')
            return self.pose_estimator.estimate(earlier, later)

    def _publish_depth(self, header, rgb, info, K):
        # the depth is written straight into the message's buffer, then scaled and masked in
        # place: no copies of the [H, W] array between the network and the publish
        depth_msg, depth = conv.empty_depth_image(header, rgb.shape[0], rgb.shape[1])
        self._mark('depth_msg')
        self._predict_depth(rgb, out=depth)
        scale = self.scaler.update(depth, K) if K is not None else self.scaler.scale
        scale_and_mask(depth, scale, self.params['min_depth'], self.params['max_depth'])
        self._mark('scale_nan_mask')
        self.depth_pub.publish(depth_msg)
        self._mark('depth_publish')
        if info is not None:
            if (info.width, info.height) != (rgb.shape[1], rgb.shape[0]):
                out_info = conv.scaled_camera_info(info, rgb.shape[1], rgb.shape[0], header)
            else:
                out_info = conv.scaled_camera_info(info, info.width, info.height, header)
            self._mark('camera_info_copy')
            self.info_pub.publish(out_info)
            self._mark('camera_info_publish')
            if self.points_pub.get_subscription_count() > 0:
                self._publish_points(header, depth, camera_info_to_K(out_info), rgb)
                self._mark('points')
        if self.params['publish_colored'] and self.colored_pub.get_subscription_count() > 0:
            colours = conv.colorize_depth(depth, self.params['min_depth'],
                                          self.params['max_depth'])
            self.colored_pub.publish(conv.rgb_to_image(colours, header))
            self._mark('colored')
        return depth

    def _publish_points(self, header, depth, K, rgb):
        """Publish ``depth`` [H,W] metres back-projected with ``K`` [3,3] on depth/points."""
        cloud = depth_to_cloud(depth, K, stride=self.params['points_stride'],
                               min_range=self.params['points_min_range'],
                               max_range=self.params['points_max_range'],
                               organized=self.params['points_organized'],
                               rgb=rgb if self.params['points_rgb'] else None)
        self.points_pub.publish(conv.cloud_to_message(cloud, header))
        self.stats.clouds += 1

    def _base_to_camera(self, camera_frame):
        if self.params['use_tf_static']:
            T = self.static_tf.lookup(self.params['base_frame'], camera_frame)
            if T is not None:
                return T
        values = self.params['base_to_camera']
        return xyz_rpy_to_matrix(values[:3], values[3:])

    def _publish_motion(self, header):
        previous = self.window.previous()
        if previous is None:
            return
        T_prev_cur = self._estimate_pose(previous[1], self.window.frames[-1][1])
        self._mark('pose_network')
        camera_frame = self.params['camera_frame'] or header.frame_id
        self.odometry.T_base_cam = self._base_to_camera(camera_frame)
        scale = self.scaler.scale
        T_odom_base = self.odometry.step(T_prev_cur, scale)
        self._pose_cov += np.array([self.params['translation_variance']] * 3
                                   + [self.params['rotation_variance']] * 3)
        dt = (self.window.frames[-1][0] - previous[0]) * 1e-9
        motion = self.odometry.base_motion(T_prev_cur, scale)
        twist = None
        if dt > 0:
            rotvec = Rotation.from_matrix(motion[:3, :3]).as_rotvec()
            twist = np.concatenate([motion[:3, 3], rotvec]) / dt
        if self.params['publish_odom']:
            self.odom_pub.publish(conv.make_odometry(
                T_odom_base, header.stamp, self.params['odom_frame'], self.params['base_frame'],
                pose_cov=self._pose_cov, twist=twist,
                twist_cov=[self.params['translation_variance'] / max(dt, 1e-3) ** 2] * 3
                + [self.params['rotation_variance'] / max(dt, 1e-3) ** 2] * 3))
        if self.params['publish_tf']:
            self.tf.send([conv.make_transform(T_odom_base, header.stamp, self.params['odom_frame'],
                                              self.params['base_frame'])])
        self.stats.poses += 1
        self._mark('odometry_tf')

    def _maybe_refine(self):
        if not self.params['refine']:
            return
        self._frames_since_refine += 1
        if self._frames_since_refine < self.params['refine_every']:
            return
        window = self.window.batch_window()
        if window is None:
            return
        self._frames_since_refine = 0
        self.refiner.submit(window)

    def _swap_weights(self, states):
        """Refiner-thread callback: copy refined weights into the inference networks."""
        self.predictor.load_depth_state(states['depth_net'])
        if 'pose_net' in states:
            self.pose_estimator.load_pose_state(states['pose_net'])
        self.stats.swaps += 1

    # ------------------------------------------------------------------------ diagnostics
    def publish_diagnostics(self):
        """Publish a DiagnosticArray (rate, latency, device, refinement, input problems)."""
        refine = self.refiner.stats()
        msg = build_diagnostics(self.get_name(), self.get_clock().now().to_msg(), self.stats,
                                self.device, refine, self.params['refine'],
                                dict(self.warnings.counts),
                                self.infos.age(), self._skipping, self.scaler.scale,
                                self._inference_state())
        self.diag_pub.publish(msg)

    def _inference_state(self):
        """Live inference settings (they change after a CUDA OOM / compile fallback)."""
        predictor = self.predictor
        choice = getattr(predictor, 'backend_choice', {})
        return {'backend': predictor.backend, 'backend_reason': choice.get('reason', ''),
                'precision': predictor.describe()['precision'],
                'channels_last': predictor.channels_last,
                'cuda_graphs': predictor.cuda_graphs, 'compile': predictor.compile}

    def destroy_node(self):
        """Stop the inference and refinement threads, then destroy the node.

        A Ctrl-C in between is ignored. Queued frames are discarded; the frame in progress
        finishes first (publishing from a destroyed node would raise on that thread).
        """
        if getattr(self, 'frames', None) is not None:
            _quietly(self.frames.stop)
        if getattr(self, 'refiner', None) is not None:
            _quietly(self.refiner.stop)
        self._inputs = []
        return super().destroy_node()


class _LoggingAdapter:
    """Lets the refiner thread log through the node's rclpy logger."""

    def __init__(self, logger):
        self._logger = logger

    def warning(self, fmt, *args):
        self._logger.warning(fmt % args if args else fmt)

    def info(self, fmt, *args):
        self._logger.info(fmt % args if args else fmt)


def _quietly(step, *args):
    """Run one shutdown step; a second Ctrl-C or a context already shut down is not an error."""
    try:
        return step(*args)
    except (KeyboardInterrupt, ExternalShutdownException):
        return None


def _ignore_sigint():
    """Ignore further SIGINTs while tearing down (``ros2 launch`` may forward more than one)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:      # not the main thread (main() called from a test thread)
        pass


def node_executor(context=None):
    """Return the executor ``main`` spins the node with (and ``fmdepth bench`` times).

    Single-threaded: every callback of the node only queues or caches (conversion, inference
    and publishing run on the inference thread, refinement on its own), so one executor thread
    is enough, and with the rclpy of ROS 2 Kilted (9.1.2) it is also far quicker to deliver a
    message. Measured on a 2-core Xeon, an rgb8 Image published every 0.3 s to a subscriber in
    the same process: 640x192 arrives in 2.0 ms median with a SingleThreadedExecutor and in
    72 ms (p90 824 ms) with MultiThreadedExecutor(3); 1242x375 in 4.7 ms vs 225 ms. The
    multi-threaded executor re-yields tasks queued in its pool and spins holding the GIL
    (rclpy#1452, fixed upstream by rclpy#1547).
    """
    return SingleThreadedExecutor(context=context)


def main(args=None):
    """``depth_node`` executable: run the node until Ctrl-C; returns the exit code.

    Ctrl-C / SIGINT from ``ros2 launch`` at any stage (start-up, spin, refiner stop, node
    destruction, shutdown) ends quietly with code 0; a :class:`StartupError` prints one line
    and returns 1.
    """
    node = None
    code = 0
    try:
        rclpy.init(args=args)
        node = DepthNode()
        executor = node_executor()
        executor.add_node(node)
        try:
            executor.spin()
        except Exception:
            # SIGINT makes rclpy shut the context down; the single-threaded executor then
            # fails in its next wait ("context is not valid") instead of raising
            # ExternalShutdownException: that is the shutdown, not an error
            if rclpy.ok():
                raise
    except StartupError as exc:
        print(f'depth_node: error: {exc}', file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _ignore_sigint()
        if node is not None:
            _quietly(node.destroy_node)
        _quietly(rclpy.try_shutdown)
    return code


if __name__ == '__main__':
    sys.exit(main())

"""Bad inputs and faults (messages, camera_info, stamps, weights, signals) never stop the node.

The node's callbacks are called directly with real sensor_msgs messages (the publishers and
the networks are real); each bad input must give its own throttled warning kind, reset the
window/odometry where needed, and the node must keep publishing for the good frames after it.
"""

import importlib.util
import math
import os
import subprocess
import sys

from diagnostic_msgs.msg import DiagnosticArray
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.messages import image_to_depth, stamp_to_ns
from fmdepth_ros.ros import conversions as conv
from fmdepth_ros.ros.model_setup import StartupError
from node_helpers import (executor_for, frame_messages, header, make_node,  # noqa: F401
                          one_torch_thread, ros_graph, spin_until)
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
import torch

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def seq():
    """Six synthetic 64x192 frames."""
    return render_sequence(6)


def _robustness_node(context):
    return make_node(context, skip_without_subscribers=False, warning_period=60.0,
                     camera_info_wait=0.0)


@pytest.fixture(scope='module')
def node():
    """One randomly initialised node for the module (publishes without subscribers).

    Tests that change parameters successfully use ``fresh_node`` instead.
    """
    with ros_graph() as context:
        n = _robustness_node(context)
        yield n
        n.destroy_node()


@pytest.fixture
def fresh_node():
    """Yield a node of its own for one test (its parameter changes stay in that test)."""
    with ros_graph() as context:
        n = _robustness_node(context)
        yield n
        n.destroy_node()


class Feeder:
    """Feeds frames of ``seq`` with increasing stamps, tracking what got published."""

    def __init__(self, node, seq):
        self.node, self.seq = node, seq
        self.stamp = 10 ** 12 + node.stats.received * 10 ** 9

    def good(self, index=0, with_info=True, dt_ns=100_000_000):
        """Feed one good frame; returns True when it was published."""
        self.stamp += dt_ns
        image, info = frame_messages(self.seq, index % len(self.seq))
        image.header.stamp = info.header.stamp = conv.stamp_from_ns(self.stamp)
        if with_info:
            self.node.camera_info_callback(info)
        before = self.node.stats.published
        self.node.image_callback(image)
        return self.node.stats.published == before + 1


def _warned(node, kind):
    return node.warnings.counts[kind]


def test_unsupported_encoding_empty_and_bad_step_are_dropped(node, seq):
    """Unsupported encoding, empty image and step/size mismatch warn and are dropped."""
    feed = Feeder(node, seq)
    assert feed.good(0)
    before = node.stats.published
    bad = [Image(height=4, width=4, encoding='yuv422', step=8, data=bytes(32)),
           Image(height=0, width=0, encoding='rgb8', step=0, data=b''),
           Image(height=64, width=192, encoding='rgb8', step=576, data=bytes(100)),
           Image(height=4, width=4, encoding='rgb8', step=5, data=bytes(80))]
    count = _warned(node, 'bad_image')
    for msg in bad:
        msg.header = header(feed.stamp + 1)
        node.image_callback(msg)
    assert node.stats.published == before
    assert _warned(node, 'bad_image') == count + len(bad)
    assert feed.good(1) and feed.good(2)


def test_size_change_resets_window_and_keeps_publishing(node, seq):
    """A new image size mid-stream resets the window, and frames of the new size publish."""
    feed = Feeder(node, seq)
    feed.good(0)
    feed.good(1)
    count = _warned(node, 'size_change')
    feed.stamp += 100_000_000
    small = conv.rgb_to_image(seq.images[2][::2, ::2].copy(), header(feed.stamp))
    node.camera_info_callback(conv.camera_info_for(small.header, seq.K / 2, 96, 32))
    node.image_callback(small)
    assert _warned(node, 'size_change') == count + 1
    assert len(node.window.frames) == 1
    assert node.stats.published > 0


@pytest.mark.parametrize('bad_value', [0.0, math.nan])
def test_bad_intrinsics_are_ignored(node, seq, bad_value):
    """camera_info with zero or NaN focal length warns and is never paired."""
    feed = Feeder(node, seq)
    count = _warned(node, 'bad_camera_info')
    info = CameraInfo(header=header(feed.stamp + 100_000_000), width=192, height=64)
    info.k = [bad_value, 0.0, 96.0, 0.0, bad_value, 32.0, 0.0, 0.0, 1.0]
    node.camera_info_callback(info)
    assert _warned(node, 'bad_camera_info') == count + 1
    assert feed.good(3, with_info=False)        # falls back to the latest valid camera_info
    assert node.infos.latest[1][0, 0] > 0


def test_missing_camera_info_warns_but_depth_is_published(seq):
    """Images without any camera_info for longer than the timeout: warning, depth still out."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, camera_info_timeout=0.1,
                      camera_info_wait=0.0)
        try:
            feed = Feeder(n, seq)
            assert feed.good(0, with_info=False)
            import time
            _wait(lambda: time.monotonic() - n._first_image_time > 0.1)   # timeout passed
            assert feed.good(1, with_info=False)
            assert _warned(n, 'no_camera_info') >= 1
            assert n.window.batch_window() is None       # no K: no refinement window
        finally:
            n.destroy_node()


def test_stamps_backwards_reset_window_and_odometry(node, seq):
    """A bag loop (stamp going back) resets window and odometry; publishing continues."""
    feed = Feeder(node, seq)
    for i in range(3):
        assert feed.good(i)
    assert node.odometry.frames >= 2
    count = _warned(node, 'stamp_backwards')
    feed.stamp -= 5 * 10 ** 9
    assert feed.good(0)
    assert _warned(node, 'stamp_backwards') == count + 1
    assert node.odometry.frames == 0 and len(node.window.frames) == 1
    assert feed.good(1) and node.odometry.frames == 1


def test_stamp_jump_forward_resets_window_only(node, seq):
    """Dropped frames (a large forward jump) reset the window but keep the odometry."""
    feed = Feeder(node, seq)
    feed.good(0)
    feed.good(1)
    frames = node.odometry.frames
    count = _warned(node, 'stamp_jump')
    assert feed.good(2, dt_ns=10 * 10 ** 9)
    assert _warned(node, 'stamp_jump') == count + 1
    assert len(node.window.frames) == 1 and node.odometry.frames == frames


def test_duplicate_stamp_is_dropped(node, seq):
    """The same stamp twice is answered once."""
    feed = Feeder(node, seq)
    feed.good(0)
    count = _warned(node, 'duplicate_stamp')
    assert not feed.good(1, dt_ns=0)
    assert _warned(node, 'duplicate_stamp') == count + 1


def test_warnings_are_throttled(node, seq):
    """Repeated problems of one kind are counted but logged once per warning_period."""
    emitted = []
    original = node.warnings.logger
    node.warnings.logger = type('L', (), {'warning': lambda self, m: emitted.append(m)})()
    try:
        for _ in range(5):
            node.image_callback(Image(height=2, width=2, encoding='16UC1', step=4, data=bytes(8)))
    finally:
        node.warnings.logger = original
    assert len(emitted) <= 1


@pytest.mark.parametrize('name, value, reason', [
    ('min_depth', -1.0, None),
    ('max_depth', 0.0, None),
    ('refine_iterations', 0, None),
    ('refine_lr', 1.0, None),
    ('scale_factor', 0.0, None),
    ('scale_mode', 'lidar', 'scale_mode must be one of'),
    ('refine_target', 'encoder', 'refine_target must be one of'),
    ('min_depth', 500.0, 'must be smaller than max_depth'),
    ('weights', 'other.pt', 'read-only'),
    ('width', 320, 'read-only'),
    ('base_to_camera', [0.0, 1.0], 'base_to_camera must be 6'),
])
def test_invalid_parameter_changes_are_rejected_with_a_reason(node, name, value, reason):
    """Out-of-range (descriptor) and invalid (callback) values are refused; nothing changes."""
    before = node.get_parameter(name).value
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful
    assert result.reason
    if reason:
        assert reason in result.reason
    assert node.get_parameter(name).value == before


def _received_after(node, msg_type, topic, publisher, action):
    """Messages a probe subscribed to ``topic`` receives after ``action()`` (at least one).

    The probe waits until the node's ``publisher`` sees it before ``action`` runs; a falsy
    return value of ``action`` fails the test.
    """
    received = []
    probe = rclpy.create_node('probe_received', context=node.context)
    probe.create_subscription(msg_type, topic, received.append, 10)
    executor = executor_for(node.context, probe)
    try:
        spin_until(executor, lambda: publisher.get_subscription_count() > 0, 5.0)
        assert action() is not False, f'{action} failed'
        assert spin_until(executor, lambda: received, 5.0), f'nothing on {topic}'
    finally:
        executor.shutdown()
        probe.destroy_node()
    return received


def test_runtime_parameter_changes_take_effect(fresh_node, seq):
    """max_depth, scale, refinement settings and publish_tf change the node's behaviour."""
    node = fresh_node
    feed = Feeder(node, seq)
    ok = node.set_runtime_parameters(scale_mode='fixed', scale_factor=2.0, max_depth=1e-3 * 2,
                                     min_depth=1e-3, refine_iterations=3, refine_lr=1e-3,
                                     publish_tf=False)
    assert ok.successful, ok.reason
    assert node.scaler.scale == 2.0
    assert node.refiner.stats()['iterations'] == 3 and node.refiner.stats()['lr'] == 1e-3
    assert node.params['publish_tf'] is False
    published = _received_after(node, Image, 'depth/image', node.depth_pub,
                                lambda: feed.good(0))
    depth = image_to_depth(published[-1])
    assert np.isnan(depth).all()      # every depth is above max_depth = 2 mm
    node.set_runtime_parameters(scale_mode='none', max_depth=100.0, min_depth=0.1,
                                publish_tf=True)
    assert node.scaler.scale == 1.0


def test_missing_weights_file_is_a_one_line_startup_error():
    """A missing weights file raises StartupError naming the file."""
    with ros_graph() as context:
        with pytest.raises(StartupError, match='weights file not found: /no/such/model.pt'):
            make_node(context, weights='/no/such/model.pt')


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all'])
def test_corrupt_weights_exit_nonzero_without_traceback(tmp_path, content):
    """``depth_node`` with a corrupt weights file prints one line naming it and exits != 0."""
    weights = tmp_path / 'broken.pt'
    weights.write_bytes(content)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, '-c', 'import sys; from fmdepth_ros.ros.depth_node import main; '
         'sys.exit(main())', '--ros-args', '-p', f'weights:={weights}', '-p', 'device:=cpu'],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if 'error' in line.lower()]
    assert len(errors) == 1 and str(weights) in errors[0], proc.stderr


@pytest.mark.parametrize('size', [{'width': 32}, {'height': 32}, {'width': 32, 'height': 32}])
def test_network_input_below_64_is_a_one_line_startup_error(size):
    """32 px passes the descriptor (multiple of 32) but fails every frame: refused at start-up."""
    with ros_graph() as context:
        with pytest.raises(StartupError, match='at least 64') as info:
            make_node(context, **size)
    assert '\n' not in str(info.value)


def test_network_input_of_64_publishes_depth(seq):
    """The smallest accepted input size (64x64) serves frames."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, width=64, height=64,
                      camera_info_wait=0.0)
        try:
            assert Feeder(n, seq).good(0)
        finally:
            n.destroy_node()


def _fp32_twin(predictor):
    """Build an fp32 eager DepthPredictor with ``predictor``'s weights (reference output)."""
    import copy
    from fmdepth_ros.runtime.inference import DepthPredictor
    net = copy.deepcopy(predictor.net).float().to(memory_format=torch.contiguous_format)
    return DepthPredictor(net, predictor.cfg, device='cpu', precision='fp32')


def test_inference_options_default_to_the_device_recommendation(node, seq):
    """Precision auto = fast_options('cpu'); no CUDA graphs on the CPU; depth close to fp32."""
    from fmdepth_ros.runtime.inference import fast_options
    expected = fast_options('cpu')
    predictor = node.predictor
    assert predictor.precision == expected['precision']
    assert predictor.cast_weights == expected['cast_weights']
    assert predictor.channels_last and not predictor.cuda_graphs and not predictor.compile
    assert node.pose_estimator.precision == expected['precision']
    assert not predictor.notes                   # no 'CUDA graphs need a CUDA device' warning
    published = _received_after(node, DiagnosticArray, '/diagnostics', node.diag_pub,
                                node.publish_diagnostics)
    values = {kv.key: kv.value for kv in published[-1].status[0].values}
    assert values['inference_precision'] == expected['precision']
    assert values['inference_cuda_graphs'] == 'False'
    image = seq.images[1]
    depth = predictor.predict(image)
    reference = _fp32_twin(predictor).predict(image)
    rel = np.abs(depth - reference) / reference
    assert np.median(rel) < 0.02 and rel.max() < 0.1, (np.median(rel), rel.max())


@pytest.mark.parametrize('precision, channels_last', [('fp32', False), ('bf16', True)])
def test_inference_options_follow_the_parameters(seq, precision, channels_last):
    """The precision / channels_last parameters reach the DepthPredictor and PoseEstimator."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, precision=precision,
                      channels_last=channels_last, cuda_graphs=True, camera_info_wait=0.0)
        try:
            assert n.predictor.precision == precision
            assert n.predictor.channels_last == channels_last
            assert not n.predictor.cuda_graphs and not n.predictor.compile
            assert n.pose_estimator.precision == precision
            assert Feeder(n, seq).good(0)
            assert not n.set_parameters([Parameter('precision', value='fp16')])[0].successful
        finally:
            n.destroy_node()


@pytest.mark.skipif(importlib.util.find_spec('onnxruntime') is None
                    or importlib.util.find_spec('onnxscript') is None,
                    reason='onnxruntime / onnxscript not installed (scripts/setup_env.sh)')
def test_backend_parameter_runs_the_node_on_onnxruntime(seq, tmp_path):
    """backend:=onnxruntime serves depth through the engine and says so on /diagnostics."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, backend='onnxruntime',
                      precision='fp32', camera_info_wait=0.0,
                      backend_cache=str(tmp_path / 'choice.json'))
        try:
            assert n.predictor.backend == 'onnxruntime'
            assert Feeder(n, seq).good(0)
            state = n._inference_state()
            assert state['backend'] == 'onnxruntime' and state['backend_reason'] == 'requested'
            assert not n.set_parameters([Parameter('backend', value='torch')])[0].successful
        finally:
            n.destroy_node()


def test_unknown_precision_is_a_startup_error():
    """A precision outside auto/fp32/fp16/bf16/int8 is refused at start-up with the choices."""
    with ros_graph() as context:
        with pytest.raises(StartupError, match='precision must be one of'):
            make_node(context, precision='int4')
        with pytest.raises(StartupError, match='int8 runs on the onnxruntime or openvino'):
            make_node(context, precision='int8')                # backend torch (default)


@pytest.mark.skipif(importlib.util.find_spec('openvino') is None
                    or importlib.util.find_spec('onnxscript') is None,
                    reason='openvino / onnxscript not installed (scripts/setup_env.sh)')
@pytest.mark.slow   # 9-24 s of int8 quantisation: full suite only
def test_int8_on_openvino_calibrates_on_the_folder_and_serves_depth(seq, tmp_path,
                                                                    monkeypatch):
    """precision:=int8 backend:=openvino int8_calibration:=DIR: an int8 engine serves depth."""
    import cv2
    monkeypatch.setenv('FMDEPTH_CACHE_DIR', str(tmp_path / 'cache'))   # no weights: user cache
    frames = tmp_path / 'frames'
    frames.mkdir()
    for i, rgb in enumerate(seq.images[:6]):
        cv2.imwrite(str(frames / f'{i:04d}.png'), rgb[:, :, ::-1])
    with ros_graph() as context:
        with pytest.raises(StartupError, match='int8_calibration: .*no such folder'):
            make_node(context, backend='openvino', precision='int8',
                      int8_calibration=str(tmp_path / 'missing'))
        n = make_node(context, skip_without_subscribers=False, backend='openvino',
                      precision='int8', int8_calibration=str(frames), camera_info_wait=0.0)
        try:
            assert n.predictor.backend == 'openvino'
            assert n._inference_state()['precision'] == 'int8'
            assert Feeder(n, seq).good(0)
            assert len(list((tmp_path / 'cache').glob('depth-int8-*.onnx'))) == 1
        finally:
            n.destroy_node()


def test_cuda_request_without_cuda_starts_on_cpu_with_one_warning(seq, capfd):
    """Device 'cuda' on a machine without CUDA: one clear warning, the node serves on the CPU."""
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    capfd.readouterr()
    with ros_graph() as context:
        n = make_node(context, device='cuda', skip_without_subscribers=False,
                      camera_info_wait=0.0)
        try:
            assert n.device == 'cpu' and n.predictor.device.type == 'cpu'
            assert Feeder(n, seq).good(0)
        finally:
            n.destroy_node()
    output = capfd.readouterr()
    lines = [line for line in (output.out + output.err).splitlines() if 'CUDA' in line]
    assert len(lines) == 1, lines
    assert 'falling back to the CPU' in lines[0] and 'WARN' in lines[0]


def _depth_probe(node):
    """Create a probe node recording depth/image and depth/camera_info."""
    images, infos = [], []
    probe = rclpy.create_node('probe_pairs', context=node.context)
    probe.create_subscription(Image, 'depth/image', images.append, 10)
    probe.create_subscription(CameraInfo, 'depth/camera_info', infos.append, 10)
    return probe, images, infos


def test_frames_arriving_during_slow_inference_drop_the_oldest(seq, capfd):
    """A stuck inference makes the frame queue drop its oldest frames, with one warning.

    Inference runs on the node's own thread, so the executor keeps taking images meanwhile;
    the queue keeps the newest ``queue_size`` frames, which are published afterwards, in order.
    """
    import threading
    from rclpy.qos import qos_profile_sensor_data
    with ros_graph() as context:
        n = make_node(context, queue_size=2, skip_without_subscribers=False,
                      camera_info_wait=0.0, camera_info_timeout=60.0, warning_period=60.0)
        probe, images, _ = _depth_probe(n)
        image_pub = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
        threads = []
        process = n.process
        n.process = lambda *args: (threads.append(threading.current_thread().name),
                                   process(*args))[1]
        executor = executor_for(context, n, probe)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        stamps = [int(seq.stamps_ns[0]) + i * 100_000_000 for i in range(6)]
        try:
            _wait(lambda: image_pub.get_subscription_count() > 0
                  and n.depth_pub.get_subscription_count() > 0)
            with n.predictor._lock:                  # inference of the first frame blocks
                for i, stamp in enumerate(stamps):
                    msg = conv.rgb_to_image(seq.images[i], header(stamp))
                    image_pub.publish(msg)
                    if i == 0:
                        _wait(lambda: n.frames.stats()['busy'])
                    _wait(lambda: n.stats.received == i + 1)
                assert n.stats.published == 0    # the executor took every image meanwhile
            _wait(lambda: len(images) == 3)
        finally:
            executor.shutdown()
            spinner.join(10.0)
            probe.destroy_node()
            n.destroy_node()
    assert [stamp_to_ns(m.header.stamp) for m in images] == [stamps[0]] + stamps[4:]
    assert n.stats.dropped == n.warnings.counts['frames_dropped'] == 3
    output = capfd.readouterr()
    assert (output.out + output.err).count('inference is slower than the image rate') == 1
    assert set(threads) == {'fmdepth-inference'}


def _wait(condition, timeout=20.0):
    import time
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'condition not reached in time'
        time.sleep(0.01)


def test_first_frame_waits_for_its_camera_info_and_outputs_pair(seq):
    """The first image waits for a camera_info still in flight; depth + info share a header."""
    import threading
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, camera_info_wait=1.0)
        probe, images, infos = _depth_probe(n)
        executor = executor_for(context, probe)
        try:
            assert spin_until(executor, lambda: n.info_pub.get_subscription_count() > 0, 10.0)
            for index in range(2):
                image, info = frame_messages(seq, index)
                timer = threading.Timer(0.3, n.camera_info_callback, (info,))
                timer.start()          # camera_info arrives after the image (other thread)
                n.image_callback(image)
                timer.join()
                assert n.stats.inexact_info == 0
            assert spin_until(executor, lambda: len(images) == 2 and len(infos) == 2, 10.0)
        finally:
            executor.shutdown()
            probe.destroy_node()
            n.destroy_node()
    for depth_msg, info_msg, index in zip(images, infos, range(2)):
        assert depth_msg.header == info_msg.header
        assert stamp_to_ns(depth_msg.header.stamp) == int(seq.stamps_ns[index])
        assert (info_msg.width, info_msg.height) == (depth_msg.width, depth_msg.height)


def test_frames_stop_waiting_once_camera_info_is_overdue(seq):
    """Without any camera_info for camera_info_timeout, frames no longer wait camera_info_wait."""
    with ros_graph() as context:
        n = make_node(context, skip_without_subscribers=False, camera_info_wait=1.0,
                      camera_info_timeout=0.1)
        waits = []                      # the wait each frame asks the camera_info cache for
        match = n.infos.match

        def recording_match(stamp_ns, wait=0.0):
            waits.append(wait)
            return match(stamp_ns, wait=wait)

        n.infos.match = recording_match
        try:
            feed = Feeder(n, seq)
            assert feed.good(0, with_info=False)     # waits 1 s: the timeout (0.1 s) passes
            assert feed.good(1, with_info=False)
        finally:
            n.destroy_node()
    assert waits == [1.0, 0.0], 'the second frame still waited for a camera_info'


def _answers_get_state(namespace, timeout=120.0):
    """Whether the node ``namespace``/fmdepth answers its lifecycle get_state service.

    An answer needs the node's executor to spin, so it proves that ``main`` is in ``spin``.
    """
    from lifecycle_msgs.srv import GetState
    from rclpy.executors import SingleThreadedExecutor
    with ros_graph() as context:
        probe = rclpy.create_node('sigint_probe', context=context)
        try:
            client = probe.create_client(GetState, f'{namespace}/fmdepth/get_state')
            if not client.wait_for_service(timeout_sec=timeout):
                return False
            future = client.call_async(GetState.Request())
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(probe)
            executor.spin_until_future_complete(future, timeout_sec=timeout)
            executor.shutdown()
            return future.done() and future.result() is not None
        finally:
            probe.destroy_node()


def _wait_signal_delivered(pid, signum, timeout=30.0):
    """Wait until ``signum`` is no longer pending for process ``pid`` (Linux /proc)."""
    import time

    status = f'/proc/{pid}/status'
    deadline = time.monotonic() + timeout
    while os.path.exists(status) and time.monotonic() < deadline:
        try:
            with open(status) as f:
                fields = dict(line.split(':', 1) for line in f if ':' in line)
        except OSError:   # the process is gone
            return
        pending = int(fields.get('SigPnd', '0'), 16) | int(fields.get('ShdPnd', '0'), 16)
        if not pending & (1 << (signum - 1)):
            return
        time.sleep(0.001)   # polling interval of the condition, not a timed wait


def test_sigint_stops_depth_node_quietly(tmp_path):
    """SIGINT (twice, as launch + terminal may send) ends depth_node: code 0, no traceback.

    The first SIGINT is sent once the node answers a service call (it is spinning), the
    second once the first has been delivered (the node is shutting down).
    """
    import signal
    import time
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    namespace = f'/sigint_{os.getpid()}'
    proc = subprocess.Popen(
        [sys.executable, '-c', 'import sys; from fmdepth_ros.ros.depth_node import main; '
         'sys.exit(main())', '--ros-args', '-p', 'device:=cpu', '-r', f'__ns:={namespace}'],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if 'fmdepth ready' in line:
                break
        assert any('fmdepth ready' in line for line in lines), ''.join(lines)
        assert _answers_get_state(namespace), 'the node never answered get_state'
        proc.send_signal(signal.SIGINT)
        _wait_signal_delivered(proc.pid, signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    output = ''.join(lines) + output
    assert 'Traceback' not in output, output[-3000:]
    assert proc.returncode == 0, output[-3000:]


def test_depth_yaml_is_generated_from_the_parameter_table():
    """config/depth.yaml lists every parameter with its default (regenerate it after edits)."""
    from fmdepth_ros.ros import params as node_params
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, 'config', 'depth.yaml'), encoding='utf-8') as f:
        text = f.read()
    assert text == node_params.yaml_text(), \
        'config/depth.yaml is stale: python -m fmdepth_ros.ros.params > config/depth.yaml'


def test_readme_parameter_table_is_generated_from_the_parameter_table():
    """The parameter table in README.md is params.markdown_table() (regenerate after edits)."""
    from fmdepth_ros.ros import params as node_params
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    assert node_params.markdown_table() in text, (
        "README's parameter table is stale: replace it with the output of "
        'python -m fmdepth_ros.ros.params --markdown')

"""int8 DepthNet: calibration frames, the quantised graph on each CPU engine, its cache, refit."""

import importlib.util
import logging
import os

import cv2
from fmdepth_ros.checkpoint import build_model, save_checkpoint
from fmdepth_ros.cli import main as cli_main
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.ros.params import validate
from fmdepth_ros.runtime import onnx_export
from fmdepth_ros.runtime.backends import create_depth_predictor, engine_options
from fmdepth_ros.runtime.inference import _to_network_input
from fmdepth_ros.runtime.quantize import as_network_input, calibration_inputs, quantization_key
import numpy as np
import pytest
import torch

ONNX_BACKENDS = [name for name, module in (('onnxruntime', 'onnxruntime'),
                                           ('openvino', 'openvino'))
                 if importlib.util.find_spec(module) is not None]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('onnxscript') is None
    or importlib.util.find_spec('onnxruntime') is None,
    reason='onnx/onnxscript/onnxruntime not installed (scripts/setup_env.sh installs them)')


@pytest.fixture(scope='module')
def frames_dir(tmp_path_factory):
    """Write 12 synthetic corridor frames (PNG, one of them grey) into a sub-folder."""
    root = tmp_path_factory.mktemp('calibration')
    os.makedirs(root / 'images')
    seq = render_sequence(12, seed=3)
    for i, rgb in enumerate(seq.images):
        image = rgb[:, :, ::-1] if i else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(root / 'images' / f'{i:06d}.png'), image)
    (root / 'notes.txt').write_text('not an image')
    return root, seq


def test_calibration_skips_ground_truth_folders(tmp_path):
    """A dataset folder gives its images/; depth maps (depth/, proj_depth/) are never frames."""
    from fmdepth_ros.runtime.quantize import calibration_image_paths
    for folder in ('images', 'depth', 'other/proj_depth/velodyne_raw'):
        os.makedirs(tmp_path / folder)
        cv2.imwrite(str(tmp_path / folder / '0000.png'), np.zeros((4, 4, 3), np.uint8))
    assert calibration_image_paths(tmp_path) == [str(tmp_path / 'images' / '0000.png')]
    os.rename(tmp_path / 'images', tmp_path / 'image_02')
    assert calibration_image_paths(tmp_path) == [str(tmp_path / 'image_02' / '0000.png')]


@pytest.fixture(scope='module')
def model_and_graph():
    """Build a small random model (ResNet-18, 64x192) and its float depth graph."""
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    proto = onnx_export.export_depth(model.depth_net, cfg.model.height, cfg.model.width)
    return model, cfg, proto


def test_calibration_inputs_are_the_predictors_network_inputs(frames_dir):
    """Evenly spaced frames, pre-processed as inference does; grey files become RGB."""
    root, seq = frames_dir
    inputs = calibration_inputs(root, 64, 192, count=4)
    assert len(inputs) == 4
    # stored as the pre-processing's grey levels (uint8), a quarter of float32's memory
    assert all(a.shape == (1, 3, 64, 192) and a.dtype == np.uint8 for a in inputs)
    expected = torch.empty(1, 3, 64, 192)
    _to_network_input(torch.from_numpy(seq.images[11].copy()), expected)   # the last frame
    network_input = as_network_input(inputs[-1])
    assert network_input.dtype == np.float32
    np.testing.assert_array_equal(network_input, expected.numpy())         # bitwise
    with pytest.raises(ValueError, match='uint8 grey levels'):
        as_network_input(network_input)                  # float frames would be divided twice
    grey = inputs[0][0]                                  # frame 0 was written grey
    assert np.array_equal(grey[0], grey[1]) and np.array_equal(grey[1], grey[2])
    assert len(calibration_inputs(root, 64, 192)) == 12          # fewer than the default 32


def test_calibration_errors_are_one_line(tmp_path):
    """A missing folder or one without images is BackendUnavailable with the path."""
    from fmdepth_ros.errors import BackendUnavailable
    with pytest.raises(BackendUnavailable, match='no such folder'):
        calibration_inputs(tmp_path / 'missing', 64, 192)
    with pytest.raises(BackendUnavailable, match='no images'):
        calibration_inputs(tmp_path, 64, 192)


@pytest.mark.slow   # 9-24 s of int8 quantisation: full suite only
@pytest.mark.parametrize('backend', ONNX_BACKENDS)
def test_int8_backend_is_quantised_close_to_fp32_and_cached(model_and_graph, frames_dir,
                                                            backend, tmp_path, caplog):
    """The int8 engine runs a QDQ graph; depth near fp32; the second build reads the cache."""
    model, cfg, proto = model_and_graph
    root, seq = frames_dir
    calibration = calibration_inputs(root, cfg.model.height, cfg.model.width)
    options = dict(engine_options(str(tmp_path / 'model.pt'), calibration))
    with caplog.at_level(logging.WARNING):
        predictor = create_depth_predictor(model.depth_net, cfg, backend, precision='int8',
                                           model_proto=proto, engine_options=options)
    assert predictor.backend == backend and predictor.describe()['precision'] == 'int8'
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    engine = predictor.engine
    assert not engine.quantized_cached and os.path.isfile(engine.quantized_path)
    assert os.path.dirname(engine.quantized_path) == str(tmp_path)
    import onnx
    ops = {n.op_type for n in onnx.load(engine.quantized_path).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    reference = create_depth_predictor(model.depth_net, cfg, 'torch', precision='fp32',
                                       torch_options={'cast_weights': False})
    for index in (0, 5, 11):                         # calibration-like frames, camera size
        image = seq.images[index]
        expected, got = reference.predict(image), predictor.predict(image)
        assert got.shape == expected.shape and np.isfinite(got).all()
        relative = np.abs(got - expected) / expected
        assert np.median(relative) < 0.02 and relative.max() < 0.2, (np.median(relative),
                                                                     relative.max())
    again = create_depth_predictor(model.depth_net, cfg, backend, precision='int8',
                                   model_proto=proto, engine_options=options)
    assert again.engine.quantized_cached and again.engine.quantized_path == engine.quantized_path
    np.testing.assert_array_equal(again.predict(seq.images[3]), predictor.predict(seq.images[3]))


def test_cache_key_follows_graph_and_calibration(model_and_graph, frames_dir):
    """Other calibration frames or another graph give another cache key."""
    model, cfg, proto = model_and_graph
    root, _ = frames_dir
    inputs = calibration_inputs(root, cfg.model.height, cfg.model.width)
    key = quantization_key(proto, inputs)
    assert key == quantization_key(proto, [a.copy() for a in inputs])
    assert key != quantization_key(proto, inputs[:-1])
    other = onnx_export.export_depth(build_model(cfg).depth_net.eval(), cfg.model.height,
                                     cfg.model.width)
    assert key != quantization_key(other, inputs)


def test_int8_without_calibration_falls_back_with_the_reason(model_and_graph, caplog):
    """No calibration frames: int8 is unavailable; one warning names why, fp32 runs."""
    model, cfg, proto = model_and_graph
    with caplog.at_level(logging.WARNING):
        predictor = create_depth_predictor(model.depth_net, cfg, 'onnxruntime',
                                           precision='int8', model_proto=proto)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'calibration' in warnings[0]
    assert predictor.backend_choice['reason'].startswith('fallback')
    assert predictor.describe()['precision'] != 'int8'


def test_an_unavailable_runtime_is_refused_before_quantising(model_and_graph, frames_dir):
    """The runtime's own checks run before the seconds-long quantisation (and its errors)."""
    from fmdepth_ros.errors import BackendUnavailable
    from fmdepth_ros.runtime.backends.onnxruntime_engine import OnnxRuntimeEngine

    class Unavailable(OnnxRuntimeEngine):

        def _check_available(self):
            raise BackendUnavailable('no int8 here')

    _, cfg, proto = model_and_graph
    with pytest.raises(BackendUnavailable, match='no int8 here'):
        Unavailable(proto, 'cpu', 'int8', 1)       # no calibration: would fail on that first


@pytest.mark.slow   # 9-24 s of int8 quantisation: full suite only
def test_int8_refit_quantises_the_refined_weights_in_memory(model_and_graph, frames_dir,
                                                            tmp_path):
    """Refit (load_depth_state) an int8 engine: the new weights' int8 depth, no cache file."""
    model, cfg, proto = model_and_graph
    root, seq = frames_dir
    options = engine_options(str(tmp_path / 'model.pt'),
                             calibration_inputs(root, cfg.model.height, cfg.model.width))
    predictor = create_depth_predictor(model.depth_net, cfg, 'onnxruntime', precision='int8',
                                       model_proto=proto, engine_options=options)
    refined = build_model(cfg).depth_net.eval()
    with torch.no_grad():      # random nets all predict about the same flat depth: move it
        for name, parameter in refined.named_parameters():
            if name.endswith('bias') and parameter.numel() == 1:     # the disparity heads
                parameter.add_(1.0)
    reference = create_depth_predictor(refined, cfg, 'torch', precision='fp32',
                                       torch_options={'cast_weights': False})
    image = seq.images[6]
    before = predictor.predict(image)
    predictor.load_depth_state(refined.state_dict())
    after, expected = predictor.predict(image), reference.predict(image)
    assert np.median(np.abs(after - expected) / expected) < 0.02
    assert np.median(np.abs(before - expected) / expected) > 0.05     # it really changed
    assert predictor.engine.quantized_path is None               # refits are not cached
    assert len([p for p in os.listdir(tmp_path) if p.endswith('.onnx')]) == 1


def test_int8_needs_an_onnx_backend_and_calibration(tmp_path, capsys):
    """The predict command and the node's parameters refuse int8 on torch or without frames."""
    cfg = small_cpu_config()
    checkpoint = tmp_path / 'model.pt'
    save_checkpoint(checkpoint, build_model(cfg), cfg)
    image = tmp_path / 'a.png'
    cv2.imwrite(str(image), np.zeros((64, 192, 3), np.uint8))
    base = ['predict', '--checkpoint', str(checkpoint), '--out', str(tmp_path / 'out'),
            str(image), '--precision', 'int8']
    assert cli_main(base) != 0
    assert 'onnxruntime or openvino' in capsys.readouterr().err
    assert cli_main(base + ['--backend', 'onnxruntime']) != 0
    assert '--calibration' in capsys.readouterr().err
    assert 'int8' in validate({'precision': 'int8', 'backend': 'torch'})
    assert validate({'precision': 'int8', 'backend': 'openvino'}) is None

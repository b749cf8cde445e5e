"""Inference backends: ONNX export, equivalence of every installed backend, fallbacks, auto."""

import importlib.util
import json
import logging
import sys

from fmdepth_ros.checkpoint import build_model, save_checkpoint
from fmdepth_ros.cli import main as cli_main
from fmdepth_ros.config import small_cpu_config
from fmdepth_ros.runtime import onnx_export
from fmdepth_ros.runtime.backends import create_depth_predictor
import numpy as np
import pytest
import torch

ONNX_BACKENDS = [name for name, module in (('onnxruntime', 'onnxruntime'),
                                           ('openvino', 'openvino'))
                 if importlib.util.find_spec(module) is not None]
needs_onnx = pytest.mark.skipif(importlib.util.find_spec('onnxscript') is None
                                or importlib.util.find_spec('onnxruntime') is None,
                                reason='onnx/onnxscript/onnxruntime not installed '
                                       '(scripts/setup_env.sh installs them)')


@pytest.fixture(scope='module')
def model_and_graph():
    """Build a small random model (ResNet-18, 64x192) and export its depth graph once."""
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    if importlib.util.find_spec('onnxscript') is None:
        pytest.skip('onnxscript not installed (scripts/setup_env.sh installs it)')
    proto = onnx_export.export_depth(model.depth_net, cfg.model.height, cfg.model.width)
    return model, cfg, proto


def _image(seed=1, height=120, width=300):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING
            and r.name.startswith('fmdepth_ros.runtime.backends')]


@needs_onnx
@pytest.mark.parametrize('backend', ONNX_BACKENDS)
def test_fp32_backend_matches_torch(model_and_graph, backend, caplog):
    """Depth and disparity of each installed backend are within 1e-3 of torch fp32."""
    model, cfg, proto = model_and_graph
    reference = create_depth_predictor(model.depth_net, cfg, 'torch', precision='fp32',
                                       torch_options={'cast_weights': False})
    with caplog.at_level(logging.WARNING):
        predictor = create_depth_predictor(model.depth_net, cfg, backend, precision='fp32',
                                           model_proto=proto)
    assert predictor.backend == backend and not _warnings(caplog)
    assert predictor.describe()['precision'] == 'fp32'
    for seed, (height, width) in ((1, (120, 300)), (2, (64, 192)), (3, (375, 1242))):
        image = _image(seed, height, width)
        expected, got = reference.predict(image), predictor.predict(image)
        assert got.shape == (height, width) and got.dtype == np.float32
        assert np.max(np.abs(got - expected) / expected) < 1e-3
    image = _image(4)
    expected, got = reference.predict_disparity(image), predictor.predict_disparity(image)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected) / expected) < 1e-3


@needs_onnx
def test_refit_swaps_refined_weights_into_the_engine(model_and_graph):
    """load_depth_state on an ONNX backend makes it predict with the new weights."""
    model, cfg, proto = model_and_graph
    predictor = create_depth_predictor(model.depth_net, cfg, 'onnxruntime', precision='fp32',
                                       model_proto=proto)
    refined = build_model(cfg).depth_net.eval()   # other random weights
    with torch.no_grad():
        for p in refined.parameters():
            p.add_(0.01 * torch.randn_like(p))
    reference = create_depth_predictor(refined, cfg, 'torch', precision='fp32',
                                       torch_options={'cast_weights': False})
    image = _image(5)
    before = predictor.predict(image)
    predictor.load_depth_state({'depth_net': refined.state_dict()})
    after = predictor.predict(image)
    expected = reference.predict(image)
    assert np.max(np.abs(after - expected) / expected) < 1e-3
    assert np.max(np.abs(before - expected) / expected) > 1e-2
    assert len(predictor.swap_seconds) == 1 and predictor.swap_seconds[0] > 0
    with pytest.raises(ValueError, match='state mismatch'):
        predictor.load_depth_state({'nonsense.weight': torch.zeros(1)})


def test_tensorrt_without_cuda_falls_back_with_one_warning(caplog):
    """No CUDA (or no tensorrt): one warning, then the next backend of the list runs."""
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    with caplog.at_level(logging.WARNING):
        predictor = create_depth_predictor(model.depth_net, cfg, 'tensorrt')
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and 'tensorrt unavailable' in warnings[0].getMessage()
    assert predictor.backend in ('onnxruntime', 'openvino', 'torch')
    assert predictor.backend_choice['reason'] == 'fallback from tensorrt'
    assert np.isfinite(predictor.predict(_image())).all()


def test_runtime_not_installed_falls_back(monkeypatch, caplog):
    """A runtime that does not import (here: hidden) gives one warning and the next one."""
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)   # import raises ImportError
    monkeypatch.setitem(sys.modules, 'openvino', None)
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    with caplog.at_level(logging.WARNING):
        predictor = create_depth_predictor(model.depth_net, cfg, 'onnxruntime',
                                           model_proto=_empty_graph_or_skip())
    messages = [r.getMessage() for r in _warnings(caplog)]
    assert len(messages) == 2, messages
    assert 'onnxruntime is not installed' in messages[0] and 'falling back to openvino' in \
        messages[0]
    assert 'openvino is not installed' in messages[1] and 'falling back to torch' in messages[1]
    assert predictor.backend == 'torch'


def _empty_graph_or_skip():
    """Return a syntactically valid ONNX graph whose one node no runtime knows."""
    pytest.importorskip('onnx')
    from onnx import helper, TensorProto
    node = helper.make_node('NoSuchOperator', ['image'], ['disp'], domain='fmdepth.invalid')
    graph = helper.make_graph(
        [node], 'broken', [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                                         [1, 3, 64, 192])],
        [helper.make_tensor_value_info('disp', TensorProto.FLOAT, [1, 1, 32, 96])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18),
                                                   helper.make_opsetid('fmdepth.invalid', 1)])


@needs_onnx
def test_missing_execution_provider_falls_back(caplog):
    """Asking onnxruntime for an EP it lacks (CUDA here) warns once and moves on."""
    pytest.importorskip('openvino')
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    import onnxruntime
    if 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        pytest.skip('this onnxruntime has the CUDA EP')
    with caplog.at_level(logging.WARNING):
        predictor = create_depth_predictor(
            model.depth_net, cfg, 'onnxruntime', precision='fp32',
            engine_options={'providers': ['CUDAExecutionProvider', 'CPUExecutionProvider']})
    messages = [r.getMessage() for r in _warnings(caplog)]
    assert len(messages) == 1 and 'has no CUDAExecutionProvider' in messages[0]
    assert predictor.backend == 'openvino'


@needs_onnx
def test_engine_build_failure_falls_back_to_torch(caplog):
    """A graph the runtimes cannot build: one warning per backend, then torch runs."""
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    with caplog.at_level(logging.WARNING):
        predictor = create_depth_predictor(model.depth_net, cfg, 'onnxruntime',
                                           model_proto=_empty_graph_or_skip())
    messages = [r.getMessage() for r in _warnings(caplog)]
    assert messages and 'cannot load the graph' in messages[0]
    assert len(messages) == 1 + ('openvino' in ONNX_BACKENDS)
    assert predictor.backend == 'torch'
    assert np.isfinite(predictor.predict(_image())).all()


@needs_onnx
def test_auto_measures_candidates_and_caches_the_choice(model_and_graph, tmp_path, caplog):
    """Auto times every candidate, logs one line, caches it; the next start reads the cache."""
    model, cfg, proto = model_and_graph
    cache = tmp_path / 'cache' / 'backend_choice.json'
    with caplog.at_level(logging.INFO, logger='fmdepth_ros.runtime.backends'):
        predictor = create_depth_predictor(model.depth_net, cfg, 'auto', model_proto=proto,
                                           cache_path=str(cache))
    choice = predictor.backend_choice
    assert choice['backend'] == predictor.backend
    assert len(choice['timings_ms']) >= 2 + len(ONNX_BACKENDS)
    assert choice['median_ms'] == min(choice['timings_ms'].values())
    lines = [r.getMessage() for r in caplog.records if 'backend auto' in r.getMessage()]
    assert len(lines) == 1 and 'fastest of' in lines[0]
    stored = json.loads(cache.read_text())
    (key, entry), = stored.items()
    assert str(cfg.model.width) in key and entry['backend'] == choice['backend']
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='fmdepth_ros.runtime.backends'):
        again = create_depth_predictor(model.depth_net, cfg, 'auto', model_proto=proto,
                                       cache_path=str(cache))
    assert again.backend == predictor.backend
    assert again.backend_choice['reason'].startswith('cached in')
    cache.write_text('{not json')
    with caplog.at_level(logging.WARNING):
        third = create_depth_predictor(model.depth_net, cfg, 'auto', model_proto=proto,
                                       cache_path=str(cache))
    assert 'unreadable' in caplog.text and third.backend_choice['reason'].startswith('fastest')


def test_unknown_backend_is_a_clear_error():
    """A misspelt backend name is rejected with the list of choices."""
    cfg = small_cpu_config()
    with pytest.raises(ValueError, match='unknown backend .*auto, torch, onnxruntime'):
        create_depth_predictor(build_model(cfg).depth_net, cfg, 'onnx')


@needs_onnx
@pytest.mark.slow
def test_export_onnx_command_writes_depth_and_pose_graphs(tmp_path, capsys):
    """``fmdepth export --onnx --dynamic``: both graphs, opset 18, equal to torch at 2 sizes."""
    import onnx
    import onnxruntime as ort
    torch.manual_seed(0)
    cfg = small_cpu_config()
    model = build_model(cfg).eval()
    ckpt = tmp_path / 'model.pt'
    save_checkpoint(ckpt, model, cfg)
    dst = tmp_path / 'model.onnx'
    assert cli_main(['export', '--onnx', '--dynamic', str(ckpt), str(dst)]) == 0
    out = capsys.readouterr().out
    assert 'opset 18' in out and 'dynamic size' in out and 'max rel diff' in out
    depth, pose = onnx.load(str(dst)), onnx.load(str(tmp_path / 'model_pose.onnx'))
    assert depth.opset_import[0].version == onnx_export.OPSET
    assert [i.name for i in pose.graph.input] == ['frame_a', 'frame_b']
    session = ort.InferenceSession(str(dst), providers=['CPUExecutionProvider'])
    for height, width in ((64, 192), (128, 256)):
        x = torch.rand(1, 3, height, width)
        with torch.no_grad():
            expected = model.depth_net(x)[0].numpy()
        got = session.run(None, {'image': x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected) / expected) < 1e-4
    pose_session = ort.InferenceSession(str(tmp_path / 'model_pose.onnx'),
                                        providers=['CPUExecutionProvider'])
    a, b = torch.rand(1, 3, 64, 192), torch.rand(1, 3, 64, 192)
    with torch.no_grad():
        axisangle, translation = model.pose_net(a, b)
    got = pose_session.run(None, {'frame_a': a.numpy(), 'frame_b': b.numpy()})
    assert np.allclose(got[0], axisangle.numpy(), rtol=1e-3, atol=1e-6)
    assert np.allclose(got[1], translation.numpy(), rtol=1e-3, atol=1e-6)
    assert cli_main(['export', '--onnx', str(tmp_path / 'missing.pt'), str(dst)]) == 2

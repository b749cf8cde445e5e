"""One predictor interface over four inference backends: torch, onnxruntime, OpenVINO, TensorRT.

Every backend gives a :class:`fmdepth_ros.runtime.inference.DepthPredictor` (same ``predict`` /
``predict_disparity`` / ``load_depth_state``): torch runs the network itself, the others run
its ONNX export (:mod:`fmdepth_ros.runtime.onnx_export`) through an engine
(:mod:`.onnxruntime_engine`, :mod:`.openvino_engine`, :mod:`.tensorrt_engine`) while the
pre/post-processing stays the predictor's.

:func:`create_depth_predictor` builds the requested backend; when it cannot run here (runtime
not installed, execution provider missing, engine build failure) it logs one warning and tries
the next one of :data:`FALLBACK_ORDER` (torch always works). ``backend='auto'`` measures the
candidates instead (:mod:`.auto`).
"""

import logging

from fmdepth_ros.errors import BackendUnavailable, ExportError

LOGGER = logging.getLogger(__name__)

BACKENDS = ('torch', 'onnxruntime', 'openvino', 'tensorrt')
CHOICES = ('auto',) + BACKENDS
#: the backends that run int8 (on the CPU); ``auto`` picks among them when int8 is asked for
INT8_BACKENDS = ('onnxruntime', 'openvino')
#: a backend that cannot run falls back to the next one of this list
FALLBACK_ORDER = ('tensorrt', 'onnxruntime', 'openvino', 'torch')

_ENGINES = {
    'onnxruntime': ('fmdepth_ros.runtime.backends.onnxruntime_engine', 'OnnxRuntimeEngine'),
    'openvino': ('fmdepth_ros.runtime.backends.openvino_engine', 'OpenVinoEngine'),
    'tensorrt': ('fmdepth_ros.runtime.backends.tensorrt_engine', 'TensorRtEngine'),
}


def engine_class(backend):
    """Return the engine class of an ONNX ``backend`` (imports its module, not its runtime)."""
    import importlib
    module, name = _ENGINES[backend]
    return getattr(importlib.import_module(module), name)


def check_backend(name):
    """Return ``name`` lower-cased when it is one of :data:`CHOICES`, else raise ValueError."""
    value = str(name or 'auto').strip().lower()
    if value not in CHOICES:
        raise ValueError(f'unknown backend {name!r} (use {", ".join(CHOICES)})')
    return value


def default_precision(backend, device):
    """Return the precision a backend runs for 'auto' without measuring (fp16 on CUDA)."""
    import torch
    cuda = torch.device(device).type == 'cuda'
    if backend == 'torch':
        from fmdepth_ros.runtime.inference import fast_options
        return fast_options(device)['precision']
    return 'fp16' if cuda and backend == 'tensorrt' else 'fp32'


def engine_options(weights='', calibration=None):
    """Engine keywords for a weights file: TensorRT engines and int8 graphs are cached beside it.

    ``calibration``: int8 calibration frames (uint8 grey levels, :func:`runtime.quantize.
    calibration_inputs`), needed by the int8 precision of onnxruntime and OpenVINO.
    """
    import os
    if not weights:
        from fmdepth_ros.runtime.backends.auto import cache_dir
        options = {'cache_dir': cache_dir(), 'stem': 'depth'}
    else:
        options = {'cache_dir': os.path.dirname(os.path.abspath(weights)),
                   'stem': os.path.splitext(os.path.basename(weights))[0]}
    if calibration:
        options['calibration'] = list(calibration)
    return options


class GraphSource:
    """The depth graph for the engines, exported once on first use (or given)."""

    def __init__(self, depth_net, cfg, model_proto=None):
        """Export ``depth_net`` at the config's network size when first asked."""
        self.depth_net, self.cfg, self._proto = depth_net, cfg, model_proto

    def get(self):
        """Return the ``onnx.ModelProto``; raises ``BackendUnavailable`` when the export fails."""
        if self._proto is None:
            from fmdepth_ros.runtime.onnx_export import export_depth
            try:
                self._proto = export_depth(self.depth_net, self.cfg.model.height,
                                           self.cfg.model.width)
            except ExportError as exc:
                raise BackendUnavailable(str(exc)) from None
        return self._proto


def build_predictor(depth_net, cfg, backend, device='cpu', precision='auto', graph=None,
                    torch_options=None, engine_options=None):
    """Build exactly ``backend`` (no fallback): a DepthPredictor, or ``BackendUnavailable``.

    ``torch_options``: extra DepthPredictor keywords of the torch backend (channels_last,
    cuda_graphs, compile, cast_weights); default :func:`runtime.inference.fast_options`.
    ``graph``: a :class:`GraphSource` (shared by several calls so the network is exported
    once). ``engine_options``: keywords of the engine (e.g. onnxruntime ``providers``,
    TensorRT ``cache_dir``).
    """
    from fmdepth_ros.runtime.inference import DepthPredictor, fast_options
    if precision == 'auto':
        precision = default_precision(backend, device)
    if backend == 'torch':
        if precision == 'int8':
            raise BackendUnavailable('torch runs no int8 here (onnxruntime and openvino do)')
        options = fast_options(device, precision)
        options.update(torch_options or {})
        options['precision'] = precision
        return DepthPredictor(depth_net, cfg, device=device, **options)
    graph = graph or GraphSource(depth_net, cfg)
    engine = engine_class(backend)(graph.get(), device, precision, **(engine_options or {}))
    return DepthPredictor(depth_net, cfg, device=engine.device, engine=engine)


def create_depth_predictor(depth_net, cfg, backend='auto', device='cpu', precision='auto',
                           torch_options=None, engine_options=None, model_proto=None,
                           cache_path=None, logger=None):
    """Build a DepthPredictor of ``backend``; fall back (one warning each) when it cannot run.

    ``backend``: one of :data:`CHOICES`; 'auto' times the candidates (:func:`.auto.choose`,
    cached in ``cache_path``). ``model_proto``: an already exported depth graph (else the
    network is exported when an ONNX backend is first built). The returned predictor has
    ``backend_choice``: ``{'backend', 'precision', 'requested', 'reason', 'fallbacks'}``.
    """
    logger = logger or LOGGER
    backend = check_backend(backend)
    graph = GraphSource(depth_net, cfg, model_proto)
    if backend == 'auto':
        from fmdepth_ros.runtime.backends import auto
        return auto.choose(depth_net, cfg, device, precision, graph=graph,
                           torch_options=torch_options, engine_options=engine_options,
                           cache_path=cache_path, logger=logger)
    chain = [backend] + [b for b in FALLBACK_ORDER[FALLBACK_ORDER.index(backend) + 1:]
                         if b != backend]
    fallbacks = []
    for index, name in enumerate(chain):
        wanted = precision if name == backend else 'auto'
        try:
            predictor = build_predictor(depth_net, cfg, name, device, wanted, graph,
                                        torch_options, engine_options)
        except BackendUnavailable as exc:
            following = chain[index + 1] if index + 1 < len(chain) else None
            fallbacks.append(f'{name}: {exc}')
            logger.warning(f'backend {name} unavailable: {exc}; '
                           + (f'falling back to {following}' if following else 'giving up'))
            if following is None:
                raise
            continue
        reason = 'requested' if name == backend else f'fallback from {backend}'
        predictor.backend_choice = {'backend': name,
                                    'precision': predictor.describe()['precision'],
                                    'requested': backend, 'reason': reason,
                                    'fallbacks': fallbacks}
        return predictor
    raise AssertionError('unreachable: torch always builds')  # pragma: no cover


__all__ = ['BACKENDS', 'CHOICES', 'FALLBACK_ORDER', 'create_depth_predictor',
           'build_predictor', 'check_backend', 'engine_class', 'GraphSource',
           'default_precision', 'engine_options']

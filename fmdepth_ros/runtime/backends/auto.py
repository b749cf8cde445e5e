"""``backend='auto'``: pick the fastest backend x precision x memory format by timing it here.

At start-up every candidate of :func:`candidates` is built and times ``frames`` frames (after
one warm-up frame) on a fixed random image of the network size; a candidate whose depth
differs from torch fp32 by more than :data:`MAX_RELATIVE_DIFFERENCE` is not taken. The fastest
median wins. The choice is cached in a small JSON file (written atomically) keyed by the
hardware (CPU model or GPU name), the torch thread count, the network size and architecture,
so the next start builds only the winner. The cache file is
``$FMDEPTH_CACHE_DIR/backend_choice.json`` (default ``$XDG_CACHE_HOME/fmdepth_ros`` or
``~/.cache/fmdepth_ros``), or the path given.
"""

import json
import logging
import os
import platform
import time

from fmdepth_ros.atomic_io import write_json_atomic
from fmdepth_ros.errors import BackendUnavailable
import numpy as np
import torch

LOGGER = logging.getLogger(__name__)

CACHE_FILE = 'backend_choice.json'
#: largest max relative depth difference to torch fp32 that a candidate may have
MAX_RELATIVE_DIFFERENCE = 0.02


def cache_dir():
    """Return the user cache folder of fmdepth_ros (``FMDEPTH_CACHE_DIR`` overrides it)."""
    if os.environ.get('FMDEPTH_CACHE_DIR'):
        return os.environ['FMDEPTH_CACHE_DIR']
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'fmdepth_ros')


def default_cache_path():
    """``<cache_dir()>/backend_choice.json``."""
    return os.path.join(cache_dir(), CACHE_FILE)


def hardware_name(device):
    """Return the GPU name for a CUDA ``device``, else the CPU model name (and core count)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_model_name()} x{os.cpu_count()}'


def cpu_model_name():
    """Return the CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    model = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return model


def cache_key(device, cfg, precision='auto'):
    """Key of a choice: hardware, torch threads, network size and architecture, precision."""
    m = cfg.model
    return (f'{hardware_name(device)}|{torch.get_num_threads()} threads|{m.width}x{m.height}|'
            f'R{m.depth_layers}-{m.depth_decoder}|{precision}')


def candidates(device, precision='auto'):
    """``[(backend, precision, channels_last)]`` worth timing on ``device``.

    Only what can be faster somewhere: torch fp32 (NCHW and channels_last) and, on CPUs with
    native bf16, bf16 weights; fp16 + CUDA graphs on CUDA; onnxruntime fp32; OpenVINO fp32 and
    bf16 (CPU); TensorRT fp16 and fp32 (CUDA). ``precision`` other than 'auto' keeps only that
    precision; 'int8' (CPU) times onnxruntime and OpenVINO int8, never considered otherwise.
    """
    from fmdepth_ros.runtime.inference import cpu_has_native_bf16
    cuda = torch.device(device).type == 'cuda'
    if cuda:
        found = [('tensorrt', 'fp16', False), ('tensorrt', 'fp32', False),
                 ('torch', 'fp16', True), ('torch', 'fp32', True), ('onnxruntime', 'fp32', False)]
    else:
        bf16 = cpu_has_native_bf16()
        found = [('torch', 'fp32', False), ('torch', 'fp32', True)]
        found += [('torch', 'bf16', True)] if bf16 else []
        found += [('onnxruntime', 'fp32', False), ('openvino', 'fp32', False)]
        found += [('openvino', 'bf16', False)] if bf16 else []
        if precision == 'int8':     # lossy: only when asked for (needs calibration frames)
            from fmdepth_ros.runtime.backends import INT8_BACKENDS
            found += [(backend, 'int8', False) for backend in INT8_BACKENDS]
    return [c for c in found if precision in ('auto', c[1])]


def label(backend, precision, channels_last):
    """``'torch fp32 channels_last'``-style name of a candidate."""
    return f'{backend} {precision}' + (' channels_last' if channels_last else '')


def _read_cache(path, logger):
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning(f'backend cache {path} unreadable ({exc}); measuring again')
        return {}


def _write_cache(path, key, entry, logger):
    data = _read_cache(path, logger)
    data[key] = entry
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_json_atomic(path, data)
    except OSError as exc:
        logger.warning(f'backend cache {path} not written ({exc})')


def _build(depth_net, cfg, device, candidate, graph, torch_options, engine_options):
    from fmdepth_ros.runtime.backends import build_predictor
    backend, precision, channels_last = candidate
    options = dict(torch_options or {})
    if backend == 'torch':
        options['channels_last'] = channels_last
        options.setdefault('cast_weights', torch.device(device).type == 'cpu'
                           and precision != 'fp32')
    return build_predictor(depth_net, cfg, backend, device, precision, graph, options,
                           engine_options)


def measure(predictor, image, frames):
    """Median milliseconds of ``predictor.predict(image)`` over ``frames`` after one warm-up."""
    predictor.predict(image)
    times = []
    for _ in range(max(1, int(frames))):
        start = time.perf_counter()
        predictor.predict(image)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def choose(depth_net, cfg, device='cpu', precision='auto', frames=3, graph=None,
           torch_options=None, engine_options=None, cache_path=None, logger=None):
    """Return the fastest working candidate as a DepthPredictor (see the module doc).

    Logs one line naming the pick and why (its median against the others, or the cache).
    The predictor's ``backend_choice`` holds ``backend``, ``precision``, ``channels_last``,
    ``reason``, ``timings_ms`` ({label: median ms}), ``rejected`` ({label: why}) and ``cache``.
    """
    from fmdepth_ros.runtime.backends import GraphSource
    logger = logger or LOGGER
    graph = graph or GraphSource(depth_net, cfg)
    cache_path = cache_path or default_cache_path()
    key = cache_key(device, cfg, precision)
    cached = _read_cache(cache_path, logger).get(key)
    if cached:
        candidate = (cached['backend'], cached['precision'], bool(cached['channels_last']))
        try:
            predictor = _build(depth_net, cfg, device, candidate, graph, torch_options,
                               engine_options)
        except BackendUnavailable as exc:
            logger.warning(f'backend auto: cached choice {label(*candidate)} unavailable '
                           f'({exc}); measuring again')
        else:
            predictor.backend_choice = dict(cached, reason=f'cached in {cache_path}',
                                            cache=cache_path)
            logger.info(f'backend auto: {label(*candidate)} ({cached["median_ms"]:.1f} ms '
                        f'median when measured; cached for {key} in {cache_path})')
            return predictor
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (cfg.model.height, cfg.model.width, 3), dtype=np.uint8)
    timings, rejected, reference = {}, {}, None
    best = None
    for candidate in candidates(device, precision):
        name = label(*candidate)
        try:
            predictor = _build(depth_net, cfg, device, candidate, graph, torch_options,
                               engine_options)
        except BackendUnavailable as exc:
            rejected[name] = str(exc)
            continue
        depth = predictor.predict(image).astype(np.float64)
        if reference is None and candidate[:2] == ('torch', 'fp32'):
            reference = depth
        if reference is not None:
            diff = float(np.max(np.abs(depth - reference) / reference))
            if diff > MAX_RELATIVE_DIFFERENCE:
                rejected[name] = f'max relative depth difference {diff:.2e} to torch fp32'
                continue
        timings[name] = measure(predictor, image, frames)
        if best is None or timings[name] < timings[label(*best[0])]:
            best = (candidate, predictor)
        else:
            del predictor
    candidate, predictor = best
    name = label(*candidate)
    others = ', '.join(f'{k} {v:.1f}' for k, v in sorted(timings.items(), key=lambda kv: kv[1])
                       if k != name)
    reason = (f'fastest of {len(timings)} measured ({frames} frames each, ms: {others})'
              + (f'; not usable: {", ".join(sorted(rejected))}' if rejected else ''))
    entry = {'backend': candidate[0], 'precision': candidate[1],
             'channels_last': candidate[2], 'median_ms': timings[name],
             'timings_ms': timings, 'rejected': rejected, 'measured_at': time.time()}
    _write_cache(cache_path, key, entry, logger)
    predictor.backend_choice = dict(entry, reason=reason, cache=cache_path)
    logger.info(f'backend auto: {name} ({timings[name]:.1f} ms median), {reason}; cached in '
                f'{cache_path}')
    return predictor


__all__ = ['choose', 'candidates', 'cache_key', 'cache_dir', 'default_cache_path',
           'hardware_name', 'measure', 'label', 'MAX_RELATIVE_DIFFERENCE']

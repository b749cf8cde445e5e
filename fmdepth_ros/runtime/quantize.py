"""int8 depth graphs: ONNX Runtime static quantisation, calibrated on real camera frames.

:func:`quantize_depth_graph` turns the float depth graph (:func:`runtime.onnx_export.
export_depth`) into a QDQ graph with int8 weights (per output channel) and uint8 activations
whose ranges are the min/max seen on the calibration frames (onnxruntime's
``quantize_static``, after onnxscript's constant folding and ``quant_pre_process``). Both CPU
engines run that graph: onnxruntime with its int8 kernels and OpenVINO, which reads the QDQ
pairs as int8 convolutions. The library is used rather than hand-written quantisation: its
calibration, per-channel scales and operator coverage are what deployers use.

Measured on the 2-core Xeon (AVX512-BF16 / VNNI), ResNet-18 + FeatDepth decoder at 640x192, 2
threads: OpenVINO int8 51 ms vs 315 ms fp32; onnxruntime int8 156 ms vs 410 ms. The recipe
checkpoint's AbsRel on the city drive: 0.3010 fp32, 0.3009 int8 (docs/benchmarks.md, "int8").

Calibration frames go through the predictor's own pre-processing
(:func:`runtime.inference._to_network_input`), so the ranges are those the network sees at
run time. Quantising takes seconds (about 18 s for 32 frames at 640x192 on one core), so the
result is cached by a hash of the float graph, the calibration inputs and the onnxruntime
version (:func:`cached_quantized_graph`).
"""

import glob
import hashlib
import os
import tempfile

from fmdepth_ros.errors import BackendUnavailable
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.pgm')
#: calibration frames used when a folder holds more (evenly spaced over it)
DEFAULT_CALIBRATION_FRAMES = 32


#: folders of ground truth in the dataset layouts (folder ``depth/``, KITTI ``proj_depth/``):
#: their PNGs are depth maps, never calibration frames
NOT_CAMERA_FOLDERS = frozenset({'depth', 'proj_depth', 'groundtruth', 'ground_truth'})


def calibration_image_paths(source):
    """Camera image files of ``source`` (a folder, searched recursively, or one image), sorted.

    A dataset folder (``images/`` beside ``depth/``) gives its ``images/``; files under a
    ground-truth folder (:data:`NOT_CAMERA_FOLDERS`) are skipped.
    """
    source = os.fspath(source)
    if os.path.isfile(source):
        return [source]
    if not os.path.isdir(source):
        raise BackendUnavailable(f'int8 calibration: no such folder or image: {source}')
    if os.path.isdir(os.path.join(source, 'images')):
        source = os.path.join(source, 'images')
    paths = sorted(p for p in glob.glob(os.path.join(source, '**', '*'), recursive=True)
                   if p.lower().endswith(IMAGE_EXTENSIONS)
                   and not NOT_CAMERA_FOLDERS & set(os.path.relpath(p, source).split(os.sep)))
    if not paths:
        raise BackendUnavailable(f'int8 calibration: no images in {source}')
    return paths


def calibration_inputs(source, height, width, count=DEFAULT_CALIBRATION_FRAMES):
    """Network inputs of up to ``count`` frames of ``source``, evenly spaced over it.

    Returns a list of ``[1, 3, height, width]`` uint8 arrays: the grey levels of the inference
    pre-processing (:func:`network_input_levels`; the network input is ``levels / 255``, see
    :func:`as_network_input`), kept as uint8 because an int8 engine holds them for its refits
    (12 instead of 47 MB for 32 frames at 640x192). Grey images are replicated to RGB, as the
    predictor's callers do.
    """
    import cv2
    import torch

    from fmdepth_ros.runtime.inference import network_input_levels

    paths = calibration_image_paths(source)
    if len(paths) > count:
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, int(count))]
    inputs = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)      # grey files come back as 3 equal channels
        if bgr is None:
            raise BackendUnavailable(f'int8 calibration: cannot read image {path}')
        rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1]))
        inputs.append(network_input_levels(rgb, int(height), int(width)).numpy())
    return inputs


def as_network_input(levels):
    """[1, 3, h, w] uint8 grey levels -> the float32 network input ``levels / 255``.

    Anything but uint8 is a ValueError: float frames already in [0, 1] would be divided again.
    """
    levels = _check_levels(levels)
    return levels.astype(np.float32) / np.float32(255.0)


def _check_levels(levels):
    levels = np.asarray(levels)
    if levels.dtype != np.uint8:
        raise ValueError('int8 calibration frames must be the uint8 grey levels that '
                         f'calibration_inputs() returns, got {levels.dtype}')
    return levels


class _Reader:
    """onnxruntime CalibrationDataReader over calibration frames (converted one at a time)."""

    def __init__(self, name, frames):
        self._name, self._items = name, iter(frames)

    def get_next(self):
        levels = next(self._items, None)
        return None if levels is None else {self._name: as_network_input(levels)}


def quantize_depth_graph(model_proto, inputs):
    """Return the int8 QDQ ``onnx.ModelProto`` of the float depth graph ``model_proto``.

    ``inputs``: calibration frames, uint8 grey levels (:func:`calibration_inputs`). Raises
    ``BackendUnavailable`` when onnxruntime's quantisation is missing or fails.
    """
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, quantize_static,
                                              QuantType)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise BackendUnavailable('int8 needs onnxruntime (its quantization tools); '
                                 'scripts/setup_env.sh installs it') from None
    if not inputs:
        raise BackendUnavailable('int8 calibration: no calibration frames')
    for levels in inputs:
        _check_levels(levels)
    initializers = {i.name for i in model_proto.graph.initializer}
    name = [i.name for i in model_proto.graph.input if i.name not in initializers][0]
    with tempfile.TemporaryDirectory(prefix='fmdepth-int8-') as tmp:
        float_path = os.path.join(tmp, 'float.onnx')
        prepared = os.path.join(tmp, 'prepared.onnx')
        quantized = os.path.join(tmp, 'int8.onnx')
        try:
            from onnxscript import optimizer
            # fold the exporter's Constant / Expand / CastLike bias and BatchNorm nodes into
            # initializers: the quantiser only quantises a convolution whose weights and bias
            # are initializers (else it warns per layer and leaves them float). On a copy:
            # the optimiser rewrites its argument in place.
            work = onnx.ModelProto()
            work.CopyFrom(model_proto)
            onnx.save(optimizer.optimize(work), float_path)
            # the symbolic shape pass fails on the exporter's constants; ONNX's own shape
            # inference and onnxruntime's graph optimisation still run
            quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
            quantize_static(prepared, quantized, _Reader(name, inputs),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:  # noqa: BLE001 - the tools raise many exception types
            text = str(exc).strip().splitlines()
            raise BackendUnavailable(f'int8 quantisation failed: {type(exc).__name__}: '
                                     f'{text[0] if text else ""}') from None
        return onnx.load(quantized)


def quantization_key(model_proto, inputs):
    """Hex digest of the float graph, the calibration inputs and the onnxruntime version."""
    import onnxruntime
    digest = hashlib.sha256(model_proto.SerializeToString())
    for array in inputs:
        digest.update(np.ascontiguousarray(as_network_input(array)).tobytes())
    digest.update(f'|onnxruntime {onnxruntime.__version__}|qdq-u8s8-minmax'.encode())
    return digest.hexdigest()


def cached_quantized_graph(model_proto, inputs, cache_dir=None, stem='depth'):
    """``(int8 ModelProto, cache path or None, cached)``: read from / written to ``cache_dir``.

    The file is ``<cache_dir>/<stem>-int8-<key>.onnx`` (key: :func:`quantization_key`), written
    atomically; without ``cache_dir`` the graph is quantised in memory every time.
    """
    import onnx

    from fmdepth_ros.atomic_io import open_atomic

    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f'{stem}-int8-{quantization_key(model_proto, inputs)[:16]}'
                                       '.onnx')
        if os.path.isfile(path):
            try:
                return onnx.load(path), path, True
            except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt
                pass
    proto = quantize_depth_graph(model_proto, inputs)
    if path:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with open_atomic(path) as f:
                f.write(proto.SerializeToString())
        except OSError:        # a read-only weights folder: run from memory
            path = None
    return proto, path, False


__all__ = ['calibration_image_paths', 'calibration_inputs', 'as_network_input',
           'quantize_depth_graph', 'quantization_key', 'cached_quantized_graph',
           'DEFAULT_CALIBRATION_FRAMES']

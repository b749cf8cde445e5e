"""TensorRT engine: built from the ONNX graph once per size and precision, cached on disk.

The serialized engine is cached as ``<cache_dir>/<stem>-<key>.engine``, where ``key`` hashes
the graph bytes (so the weights), the TensorRT version, the precision and the GPU name: a new
model, a new TensorRT or another GPU builds a new engine, an unchanged one loads in seconds.
``cache_dir`` is the folder of the weights file when there is one (the backend factory passes
it), else the user cache folder. Refits (online refinement) build in memory and are not cached.

Inputs and outputs stay on the GPU: the engine reads the torch tensors' memory and writes into
preallocated torch outputs on the current CUDA stream (no host round trip).
"""

import hashlib
import os

from fmdepth_ros.atomic_io import open_atomic
from fmdepth_ros.errors import BackendUnavailable
from fmdepth_ros.runtime.backends.engine import Engine
import torch

WORKSPACE_BYTES = 2 << 30


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable('tensorrt is not installed (pip install tensorrt; only '
                                 'where CUDA is present)') from None
    return tensorrt


class TensorRtEngine(Engine):
    """A TensorRT engine of the graph (options: ``cache_dir``, ``stem``, ``persist``)."""

    backend = 'tensorrt'
    precisions = ('fp32', 'fp16')

    def _build(self, data):
        if self.device.type != 'cuda':
            raise BackendUnavailable(f'TensorRT needs a CUDA device, not {self.device}')
        trt = _import_tensorrt()
        self._logger = trt.Logger(trt.Logger.WARNING)
        gpu = torch.cuda.get_device_name(self.device)
        key = hashlib.sha256(data + f'|{trt.__version__}|{self.precision}|{gpu}'.encode())
        cache_dir = self.options.get('cache_dir')
        stem = self.options.get('stem', 'depth')
        self.cache_path = (os.path.join(cache_dir, f'{stem}-{key.hexdigest()[:16]}.engine')
                           if cache_dir and self.options.get('persist', True) else None)
        serialized = None
        if self.cache_path and os.path.isfile(self.cache_path):
            with open(self.cache_path, 'rb') as f:
                serialized = f.read()
        self.cached = serialized is not None
        if serialized is None:
            serialized = self._build_serialized(trt, data)
            if self.cache_path:
                os.makedirs(cache_dir, exist_ok=True)
                with open_atomic(self.cache_path) as f:
                    f.write(serialized)
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise BackendUnavailable('TensorRT could not load the engine (stale cache file '
                                     f'{self.cache_path}?)')
        self.context = self.engine.create_execution_context()
        self._outputs = {}
        self.version = trt.__version__

    def _build_serialized(self, trt, data):
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(data):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BackendUnavailable(f'TensorRT cannot parse the graph: '
                                     f'{errors[0] if errors else "unknown error"}')
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self.precision == 'fp16':
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailable('TensorRT engine build failed (see the TensorRT log)')
        return bytes(serialized)

    def __call__(self, *inputs):
        """Run on CUDA tensors (float32); returns the output tensor(s), reused buffers."""
        keep = []
        for name, tensor in zip(self.input_names, inputs):
            tensor = tensor.to(self.device, torch.float32).contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = self._outputs.get(name)
            if out is None or tuple(out.shape) != shape:
                out = self._outputs[name] = torch.empty(shape, device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError('TensorRT execution failed')
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

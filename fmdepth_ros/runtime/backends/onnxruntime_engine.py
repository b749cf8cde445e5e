"""ONNX Runtime engine: the CPU execution provider, and CUDA / TensorRT EPs where installed."""

from fmdepth_ros.errors import BackendUnavailable
from fmdepth_ros.runtime.backends.engine import Engine

CPU_EP = 'CPUExecutionProvider'
CUDA_EP = 'CUDAExecutionProvider'
TENSORRT_EP = 'TensorrtExecutionProvider'


def default_providers(device):
    """Return the execution providers for a torch ``device``: CUDA (+ CPU) or CPU."""
    return [CUDA_EP, CPU_EP] if device.type == 'cuda' else [CPU_EP]


class OnnxRuntimeEngine(Engine):
    """An ``onnxruntime.InferenceSession`` of the graph (all graph optimisations on).

    Options: ``providers`` (list of EP names, default :func:`default_providers`); a missing EP
    raises ``BackendUnavailable`` rather than silently running on another one. fp16 runs
    only through the TensorRT EP (its ``trt_fp16_enable``); int8 runs the QDQ graph
    (:mod:`runtime.quantize`) on the CPU EP's int8 kernels.
    """

    backend = 'onnxruntime'
    precisions = ('fp32', 'fp16', 'int8')

    def _build(self, data):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable('onnxruntime is not installed (scripts/setup_env.sh '
                                     'installs it)') from None
        providers = list(self.options.get('providers') or default_providers(self.device))
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailable(f'onnxruntime {ort.__version__} has no {missing[0]} '
                                     f'(available: {", ".join(available)})')
        if self.precision == 'fp16' and TENSORRT_EP not in providers:
            raise BackendUnavailable('onnxruntime runs fp16 only through the TensorRT EP')
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        provider_options = [{'trt_fp16_enable': self.precision == 'fp16'}
                            if p == TENSORRT_EP else {} for p in providers]
        try:
            self.session = ort.InferenceSession(data, options, providers=providers,
                                                provider_options=provider_options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            text = str(exc).strip().splitlines()
            raise BackendUnavailable(f'onnxruntime cannot load the graph: '
                                     f'{type(exc).__name__}: {text[0] if text else ""}') from None
        self.providers = self.session.get_providers()

    def _run(self, arrays):
        return self.session.run(self.output_names, dict(zip(self.input_names, arrays)))

    def describe(self):
        """One line: backend, precision, execution providers."""
        return f'onnxruntime {self.precision} ({", ".join(self.providers)})'

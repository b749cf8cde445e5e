"""OpenVINO engine on the CPU (fp32, bf16 where the CPU computes it natively, int8 QDQ graphs)."""

from fmdepth_ros.errors import BackendUnavailable
from fmdepth_ros.runtime.backends.engine import Engine
import numpy as np

#: our precision names -> OpenVINO's INFERENCE_PRECISION_HINT (int8: the QDQ graph's quantised
#: convolutions run in int8, whatever is left in f32)
PRECISION_HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16', 'int8': 'f32'}
#: our precision names -> the CPU plugin's OPTIMIZATION_CAPABILITIES entry
CAPABILITIES = {'fp32': 'FP32', 'bf16': 'BF16', 'fp16': 'FP16', 'int8': 'INT8'}


class OpenVinoEngine(Engine):
    """A graph compiled by OpenVINO for its CPU plugin, latency mode, one stream.

    The inference precision is set explicitly (OpenVINO's CPU default is bf16 on CPUs with
    AVX512-BF16 / AMX, which would make 'fp32' silently lossy).
    """

    backend = 'openvino'
    precisions = ('fp32', 'bf16', 'fp16', 'int8')

    def _check_available(self):
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailable('openvino is not installed (scripts/setup_env.sh '
                                     'installs it)') from None
        if self.device.type != 'cpu':
            raise BackendUnavailable(f'the OpenVINO backend runs on the CPU, not {self.device}')
        self._core = ov.Core()
        capabilities = self._core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
        if CAPABILITIES[self.precision] not in capabilities:
            raise BackendUnavailable(f'this CPU has no native {self.precision} in OpenVINO '
                                     f'(capabilities: {", ".join(capabilities)})')

    def _build(self, data):
        import openvino as ov

        core = self._core
        config = {'INFERENCE_PRECISION_HINT': PRECISION_HINTS[self.precision],
                  'INFERENCE_NUM_THREADS': self.threads, 'PERFORMANCE_HINT': 'LATENCY',
                  'NUM_STREAMS': 1}
        try:
            model = core.read_model(data, ov.Tensor(np.empty(0, np.uint8)))
            self.compiled = core.compile_model(model, 'CPU', config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and others
            text = str(exc).strip().splitlines()
            raise BackendUnavailable(f'OpenVINO cannot compile the graph: '
                                     f'{type(exc).__name__}: {text[0] if text else ""}') from None
        self.request = self.compiled.create_infer_request()
        self.version = ov.get_version()

    def _run(self, arrays):
        self.request.infer(dict(zip(self.input_names, arrays)))
        count = len(self.output_names)
        return [self.request.get_output_tensor(i).data.copy() for i in range(count)]

"""The common part of the ONNX-based inference engines (onnxruntime, OpenVINO, TensorRT).

An engine runs one exported graph (:mod:`fmdepth_ros.runtime.onnx_export`) on torch tensors:
``engine(*inputs) -> output`` (one tensor) or a tuple of them, float32 in and out, on
``engine.device``. For the depth graph: ``image [1, 3, H, W]`` RGB in ``[0, 1]`` ->
``disp [1, 1, H/2, W/2]`` scale-0 sigmoid disparity. :class:`runtime.inference.DepthPredictor`
takes an engine in place of the torch network, keeping its pre/post-processing.

:meth:`Engine.refit` gives a new engine with other weights (written into the graph by name,
no new trace): online refinement calls it in its own thread and swaps the result in.
"""

from fmdepth_ros.runtime.onnx_export import with_weights
import numpy as np
import torch


class Engine:
    """Base of the ONNX engines; subclasses implement ``_build(data)`` and ``_run(arrays)``.

    Args:
        model_proto: the ``onnx.ModelProto`` to run.
        device: torch device of the tensors given and returned.
        precision: 'fp32', 'fp16', 'bf16' or 'int8' (a QDQ graph quantised here from the float
            one, :meth:`_int8_graph`): the runtime's compute precision.
        threads: CPU threads of the runtime (default: torch's intra-op thread count).
        options: backend-specific settings (see each subclass).

    ``_check_available`` (run first, before an int8 graph is quantised) and ``_build`` raise
    :class:`fmdepth_ros.errors.BackendUnavailable` when the runtime is not installed, lacks
    the provider or precision, or cannot build the graph.
    """

    backend = ''
    precisions = ('fp32',)
    #: device types the engine runs int8 on (when 'int8' is one of its precisions)
    int8_devices = ('cpu',)

    def __init__(self, model_proto, device='cpu', precision='fp32', threads=None, **options):
        """Build the runtime's executable graph (see the class doc)."""
        from fmdepth_ros.errors import BackendUnavailable
        if precision not in self.precisions:
            raise BackendUnavailable(f'{self.backend} does not run {precision} here '
                                     f'(supported: {", ".join(self.precisions)})')
        if precision == 'int8' and torch.device(device).type not in self.int8_devices:
            raise BackendUnavailable(f'{self.backend} runs int8 on the CPU only here')
        self.model_proto = model_proto          # the float graph: refit writes into it
        self.device = torch.device(device)
        self.precision = precision
        self.threads = int(threads or torch.get_num_threads())
        self.options = dict(options)
        initializers = {i.name for i in model_proto.graph.initializer}
        self.input_names = [i.name for i in model_proto.graph.input if i.name not in initializers]
        self.output_names = [o.name for o in model_proto.graph.output]
        self.quantized_path, self.quantized_cached = None, False
        self._check_available()      # before the (seconds-long) int8 quantisation
        graph = self._int8_graph() if precision == 'int8' else model_proto
        self._build(graph.SerializeToString())

    def _check_available(self):
        """Raise ``BackendUnavailable`` when this runtime cannot run here (default: it can)."""

    def _int8_graph(self):
        """Return the QDQ int8 graph of ``model_proto`` (options ``calibration``, ``cache_dir``).

        ``calibration``: a list of calibration frames, uint8 grey levels
        (:func:`runtime.quantize.calibration_inputs`); without it int8 is unavailable. The
        graph is cached in ``cache_dir`` (beside the weights; ``stem`` names the file) unless
        ``persist`` is False (refits).
        """
        from fmdepth_ros.errors import BackendUnavailable
        from fmdepth_ros.runtime.quantize import cached_quantized_graph
        calibration = self.options.get('calibration')
        if not calibration:
            raise BackendUnavailable("int8 needs calibration frames (the node's "
                                     'int8_calibration / --calibration: a folder of camera '
                                     'images)')
        cache_dir = self.options.get('cache_dir') if self.options.get('persist', True) else None
        proto, self.quantized_path, self.quantized_cached = cached_quantized_graph(
            self.model_proto, calibration, cache_dir, self.options.get('stem', 'depth'))
        return proto

    def _build(self, data):
        raise NotImplementedError

    def _run(self, arrays):
        """Run the graph on float32 numpy ``arrays`` (input order); returns numpy outputs."""
        raise NotImplementedError

    def __call__(self, *inputs):
        """Run on torch tensors; returns a tensor (one output) or a tuple, on ``self.device``."""
        arrays = [t.detach().to('cpu', torch.float32).contiguous().numpy() for t in inputs]
        outputs = tuple(torch.from_numpy(np.asarray(o)).to(self.device)
                        for o in self._run(arrays))
        return outputs[0] if len(outputs) == 1 else outputs

    def refit(self, state_dict):
        """Return a new engine of the same settings with ``state_dict``'s weights (by name).

        An int8 engine is quantised again with the same calibration frames, in memory (refined
        weights are not written to the cache).
        """
        options = dict(self.options, persist=False)
        return type(self)(with_weights(self.model_proto, state_dict), self.device,
                          self.precision, self.threads, **options)

    def describe(self):
        """One line: backend, precision, where it runs."""
        return f'{self.backend} {self.precision} on {self.device}'

"""ONNX export of the DepthNet (scale-0 disparity) and the PoseNet, and weight refits.

The graphs are exported with torch's dynamo-based exporter (``torch.onnx.export(...,
dynamo=True)``, which needs the ``onnx`` and ``onnxscript`` packages) at opset
:data:`OPSET`, without the exporter's graph optimiser (``optimize=False``): every initializer
then keeps the name of its parameter / buffer in the module's ``state_dict`` (BatchNorm stays a
node; the runtimes fuse it when they load the graph), so refined weights can be written into an
exported graph by name (:func:`with_weights`) without tracing the network again. The
TorchScript-based exporter (``dynamo=False``) also works offline but traced the FeatDepth
decoder with up to 7e-4 relative disparity error at 640x192; the dynamo export matches eager
torch to about 1e-7.

Graph inputs and outputs (all float32):

* DepthNet: ``image`` ``[1, 3, H, W]`` RGB in ``[0, 1]`` (normalised inside the graph) ->
  ``disp`` ``[1, 1, H/2, W/2]`` (FeatDepth decoder; ``[1, 1, H, W]`` for the Monodepth2 one),
  the sigmoid disparity of scale 0.
* PoseNet: ``frame_a``, ``frame_b`` ``[1, 3, h, w]`` (earlier, later) -> ``axisangle``
  ``[1, 3]`` radians, ``translation`` ``[1, 3]`` (x0.01 scaled, as :class:`PoseNet`).

``dynamic=True`` leaves H and W symbolic (any multiple of 32; the pose graph resizes its inputs
to the PoseNet size inside, so its H and W may be anything).
"""

import contextlib
import io
import logging
import time
import warnings

from fmdepth_ros.errors import ExportError
import numpy as np
import torch
from torch import nn

#: ONNX opset of every exported graph (the dynamo exporter's default in torch 2.13)
OPSET = 18

DEPTH_INPUTS = ('image',)
DEPTH_OUTPUTS = ('disp',)
POSE_INPUTS = ('frame_a', 'frame_b')
POSE_OUTPUTS = ('axisangle', 'translation')


class DisparityGraph(nn.Module):
    """A DepthNet reduced to its scale-0 disparity: ``image [B,3,H,W] -> disp [B,1,h,w]``."""

    def __init__(self, depth_net):
        """Wrap ``depth_net`` (its parameters keep their names under ``net.``)."""
        super().__init__()
        self.net = depth_net

    def forward(self, image):
        """Scale-0 sigmoid disparity of ``image`` (RGB in [0, 1])."""
        return self.net(image)[0]


class PoseGraph(nn.Module):
    """A PoseNet with named inputs: ``(frame_a, frame_b) -> (axisangle, translation)``."""

    def __init__(self, pose_net):
        """Wrap ``pose_net`` (its parameters keep their names under ``net.``)."""
        super().__init__()
        self.net = pose_net

    def forward(self, frame_a, frame_b):
        """Motion parameters of the earlier ``frame_a`` to the later ``frame_b``."""
        return self.net(frame_a, frame_b)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress lines, INFO logs and deprecation warnings."""
    loggers = [logging.getLogger(name) for name in ('torch.onnx', 'onnx_ir', 'onnxscript')]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export(module, example, input_names, output_names, dynamic, opset):
    """Export ``module`` on ``example`` inputs; returns the ``onnx.ModelProto``."""
    try:
        import onnx  # noqa: F401 - the exporter needs it; a clear message when missing
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f'ONNX export needs the onnx and onnxscript packages '
                          f'({exc}); run scripts/setup_env.sh') from None
    dynamic_shapes = None
    if dynamic:
        height = torch.export.Dim('height_32', min=2, max=256)
        width = torch.export.Dim('width_32', min=2, max=256)
        dynamic_shapes = {name: {2: 32 * height, 3: 32 * width} for name in input_names}
    module = module.eval()
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                module, tuple(example), None, input_names=list(input_names),
                output_names=list(output_names), opset_version=int(opset), dynamo=True,
                optimize=False, verbose=False, dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
        text = str(exc).strip().splitlines()
        raise ExportError(f'ONNX export failed: {type(exc).__name__}: '
                          f'{text[0] if text else ""}') from None
    return program.model_proto


def _float_copy(module):
    """Float32 CPU eval copy of ``module`` (exports never touch the caller's module)."""
    import copy
    return copy.deepcopy(module).float().cpu().eval()


def export_depth(depth_net, height, width, dynamic=False, opset=OPSET):
    """ONNX ``ModelProto`` of ``depth_net``'s scale-0 disparity at ``height x width``."""
    graph = DisparityGraph(_float_copy(getattr(depth_net, 'depth_net', depth_net)))
    example = (torch.rand(1, 3, int(height), int(width)),)
    return _export(graph, example, DEPTH_INPUTS, DEPTH_OUTPUTS, dynamic, opset)


def export_pose(pose_net, height, width, dynamic=False, opset=OPSET):
    """ONNX ``ModelProto`` of ``pose_net`` on two ``height x width`` frames."""
    graph = PoseGraph(_float_copy(getattr(pose_net, 'pose_net', pose_net)))
    height, width = int(height), int(width)
    if dynamic and (height, width) == tuple(graph.net.input_size):
        # PoseNet skips its resize at its own input size: tracing there would fix the size
        height, width = height + 32, width + 32
    example = (torch.rand(1, 3, height, width), torch.rand(1, 3, height, width))
    return _export(graph, example, POSE_INPUTS, POSE_OUTPUTS, dynamic, opset)


def with_weights(model_proto, state_dict, prefix='net.'):
    """Copy of ``model_proto`` whose initializers take the values of ``state_dict``.

    ``state_dict``: the module's ``{name: tensor}`` (as ``state_dict()`` returns it). Every
    initializer named ``prefix + name`` is replaced (same shape required); the graph itself
    is not traced again. Raises ``ExportError`` when no initializer matches or a shape differs.
    """
    import onnx
    from onnx import numpy_helper

    updated = onnx.ModelProto()
    updated.CopyFrom(model_proto)
    replaced = 0
    for init in updated.graph.initializer:
        name = init.name[len(prefix):] if init.name.startswith(prefix) else None
        if name is None or name not in state_dict:
            continue
        value = state_dict[name].detach().cpu().float().numpy()
        if tuple(init.dims) != value.shape:
            raise ExportError(f'refit: {name} has shape {value.shape}, the graph expects '
                              f'{tuple(init.dims)}')
        init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
        replaced += 1
    if not replaced:
        raise ExportError('refit: no initializer of the graph matches the weights')
    return updated


def save_model(model_proto, path):
    """Write ``model_proto`` to ``path`` atomically."""
    from fmdepth_ros.atomic_io import open_atomic
    with open_atomic(path) as f:
        f.write(model_proto.SerializeToString())


def load_model(path):
    """Read an ONNX file; raises ``ExportError`` naming the file when it is not one."""
    import onnx
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have many types
        raise ExportError(f'{path}: not an ONNX file ({type(exc).__name__})') from None


def _onnxruntime_outputs(model_proto, feeds):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(model_proto.SerializeToString(), options,
                                   providers=['CPUExecutionProvider'])
    return session.run(None, feeds)


def check_against_torch(model_proto, module, inputs, names):
    """Max relative difference of the graph (onnxruntime, CPU) against ``module`` in torch.

    ``module``: the wrapped network (:class:`DisparityGraph` / :class:`PoseGraph` semantics),
    ``inputs``: the example tensors, ``names``: the graph's input names. Returns
    ``{'max_rel_diff': float, 'max_abs_diff': float, 'onnxruntime_ms': float}``.
    """
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    start = time.perf_counter()
    got = _onnxruntime_outputs(model_proto, {n: t.numpy() for n, t in zip(names, inputs)})
    elapsed = (time.perf_counter() - start) * 1e3
    rel = absolute = 0.0
    for e, g in zip(expected, got):
        e = e.double().numpy()
        diff = np.abs(g.astype(np.float64) - e)
        absolute = max(absolute, float(diff.max()))
        rel = max(rel, float((diff / np.maximum(np.abs(e), 1e-6)).max()))
    return {'max_rel_diff': rel, 'max_abs_diff': absolute, 'onnxruntime_ms': elapsed}


def export_checkpoint_onnx(src, dst, width=0, height=0, dynamic=False, opset=OPSET,
                           pose=True, check=True):
    """``fmdepth export --onnx``: DepthNet (and PoseNet) of a checkpoint as ONNX files.

    Writes ``dst`` (the depth graph) and, with ``pose``, ``<dst stem>_pose.onnx``; with
    ``check`` both are run by onnxruntime against torch on the same random inputs (and on a
    second size when ``dynamic``). Returns a summary dict of paths, sizes and differences.
    """
    import os

    from fmdepth_ros.checkpoint import load_checkpoint
    from fmdepth_ros.networks.depth_net import check_input_size
    model, cfg, _ = load_checkpoint(src, map_location='cpu')
    width = int(width or cfg.model.width)
    height = int(height or cfg.model.height)
    try:
        check_input_size(height, width)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    summary = {'opset': int(opset), 'dynamic': bool(dynamic), 'size': [width, height],
               'exporter': f'torch.onnx dynamo (torch {torch.__version__})', 'files': {}}
    stem, _ = os.path.splitext(str(dst))
    jobs = [('depth', str(dst), export_depth, DisparityGraph(model.depth_net.eval()),
             DEPTH_INPUTS, 1)]
    if pose:
        jobs.append(('pose', stem + '_pose.onnx', export_pose, PoseGraph(model.pose_net.eval()),
                     POSE_INPUTS, 2))
    for name, path, exporter, module, inputs, count in jobs:
        proto = exporter(module.net, height, width, dynamic=dynamic, opset=opset)
        save_model(proto, path)
        entry = {'path': path, 'bytes': os.path.getsize(path),
                 'inputs': [i.name for i in proto.graph.input],
                 'outputs': [o.name for o in proto.graph.output]}
        if check:
            torch.manual_seed(0)
            sizes = [(height, width)] + ([(height + 64, width - 64 if width > 128 else width)]
                                         if dynamic else [])
            entry['check'] = []
            for h, w in sizes:
                example = [torch.rand(1, 3, h, w) for _ in range(count)]
                result = check_against_torch(proto, module, example, inputs)
                result['size'] = [w, h]
                entry['check'].append(result)
        summary['files'][name] = entry
    return summary


__all__ = ['OPSET', 'ExportError', 'DisparityGraph', 'PoseGraph', 'export_depth',
           'export_pose', 'with_weights', 'save_model', 'load_model', 'check_against_torch',
           'export_checkpoint_onnx', 'DEPTH_INPUTS', 'DEPTH_OUTPUTS',
           'POSE_INPUTS', 'POSE_OUTPUTS']

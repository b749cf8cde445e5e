"""Optimised inference path: depth and ego-motion from numpy images, with reused buffers.

Used by the ROS node, ``fmdepth predict`` and ``fmdepth bench``. ROS-free.

Per frame, :class:`DepthPredictor` does:

1. copy the ``[H, W, 3]`` uint8 RGB numpy image into a preallocated host buffer (pinned on CUDA),
   then with one (non-blocking) copy into a preallocated device buffer;
2. on the device: uint8 HWC -> float NCHW in ``[0, 1]`` and a bilinear (antialiased when
   shrinking) resize to the network size, written into a static network-input tensor;
3. the DepthNet forward (optionally under fp16/bf16 autocast, channels_last, ``torch.compile``,
   and on CUDA inside a captured CUDA graph);
4. on the device: the scale-0 disparity is resized back to the input resolution and turned
   into depth (``scaled_disparity``, then 1/x, in the static buffers); one copy brings the
   ``[H, W]`` depth back to the host (on the CPU the depth buffer is the host buffer: no copy).

With a :class:`runtime.stage_timer.StageTimer` attached (``stage_timer``, by ``fmdepth bench``)
the pre-processing, network and post-processing are timed separately.

Buffers are allocated once per input size (re-allocated only when the size changes), so the
steady state allocates no large tensors beyond what the network itself needs (and under CUDA
graphs not even that). There are no Python loops over pixels. On CUDA every frame runs on a
high-priority stream of its own (background refinement on the default stream does not queue in
front of it); a CUDA out-of-memory error moves inference to the CPU with a warning.
:func:`fast_options` gives the recommended optimisation settings for a device;
:meth:`DepthPredictor.load_depth_state` copies refined weights in place under a lock, so
compiled code and captured graphs stay valid.

Pose direction (:class:`PoseEstimator`): like the official FeatDepth / Monodepth2 code, PoseNet
is fed a time-ordered pair ``[I_earlier, I_later]``. Its output ``(axisangle, translation)``
composed as ``T = [t]·R`` is the transform that maps points of the *earlier* camera into the
*later* camera, ``T_later_earlier`` (the official code uses it un-inverted for source frame +1,
where earlier = target 0 and it needs ``T_src_tgt = T_1_0``; for source frame -1 it inverts it to
get ``T_-1_0``). :meth:`PoseEstimator.estimate` returns the inverse, ``T_earlier_later``
(``p_earlier = T @ p_later``), i.e. the motion of the camera from the earlier to the later frame
expressed in the earlier camera: chaining these gives ``T_world_cam`` odometry directly.
"""

import contextlib
import copy
import logging
import os
import threading
import time
from typing import Optional, Tuple

from fmdepth_ros.geometry import pose_from_axisangle
from fmdepth_ros.networks.depth_net import scaled_disparity
import numpy as np
import torch
import torch.nn.functional as F

LOGGER = logging.getLogger(__name__)

PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def usable_cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def set_cpu_threads(requested=0) -> int:
    """Set torch's intra-op thread count (process-wide); returns the count now in use.

    ``requested`` 0 means half the usable cores, at least 1: the node runs inference and
    online refinement at the same time, each with this many OpenMP threads, and more busy
    threads than cores make OpenMP threads spin waiting for descheduled peers (measured on 2
    cores: 2 threads gave 17 frames/s in ``fmdepth soak``, 1 thread 29 frames/s).
    """
    requested = int(requested)
    if requested < 0:
        raise ValueError(f'cpu_threads must be >= 0, got {requested}')
    threads = requested or max(1, usable_cpu_count() // 2)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def select_device(requested='auto') -> Tuple[str, Optional[str]]:
    """Resolve ``'auto' | 'cuda' | 'cuda:N' | 'cpu'`` to a usable device string.

    Returns ``(device, warning)``: ``warning`` is a one-line message when CUDA was asked for
    (or 'auto') but is not available and the CPU is used instead, else ``None``.
    Raises ``ValueError`` for an unknown device name.
    """
    name = str(requested or 'auto').strip().lower()
    if name == 'cpu':
        return 'cpu', None
    if name not in ('auto', 'cuda') and not name.startswith('cuda:'):
        raise ValueError(f'unknown device {requested!r} (use auto, cuda, cuda:N or cpu)')
    if torch.cuda.is_available():
        if name.startswith('cuda:'):
            index = int(name.split(':', 1)[1])
            if index >= torch.cuda.device_count():
                return 'cuda:0', (f'{name} does not exist ({torch.cuda.device_count()} GPU(s)); '
                                  'using cuda:0')
            return name, None
        return 'cuda', None
    if name == 'auto':
        return 'cpu', 'CUDA is not available; running on the CPU (slow)'
    return 'cpu', f'{name} requested but CUDA is not available; falling back to the CPU'


def cpu_has_native_bf16() -> bool:
    """Return True when this CPU has bf16 dot-product instructions (AVX512-BF16 / AMX)."""
    probe = getattr(torch.cpu, '_is_avx512_bf16_supported', None)
    amx = getattr(torch.cpu, '_is_amx_tile_supported', None)
    return bool(torch.backends.mkldnn.is_available()
                and ((probe is not None and probe()) or (amx is not None and amx())))


def fast_options(device, precision='auto') -> dict:
    """Recommended :class:`DepthPredictor` optimisation keywords for ``device``.

    CUDA: fp16 autocast, channels_last, CUDA graphs (torch.compile stays off: minutes of
    start-up). CPU: bf16 where the CPU computes bf16 natively (else fp32) with the weights
    stored in bf16 (saves the per-frame weight casts of autocast, about 10 % of a frame), and
    channels_last (much faster CRP max-pooling in the FeatDepth decoder).
    ``precision`` other than 'auto' is used as given.
    """
    cuda = torch.device(device).type == 'cuda'
    if precision == 'auto':
        precision = 'fp16' if cuda else ('bf16' if cpu_has_native_bf16() else 'fp32')
    _check_precision(precision)
    return {'precision': precision, 'channels_last': True, 'compile': False,
            'cuda_graphs': cuda, 'cast_weights': not cuda and precision != 'fp32'}


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, '
                         f'got {precision!r}')


def _unwrap_depth_net(model_or_net):
    """Accept a ``FeatDepthModel`` (uses ``.depth_net``) or a bare DepthNet."""
    return getattr(model_or_net, 'depth_net', model_or_net)


def _select_state(state_dict, name):
    """Pick the ``name`` sub-state of a refiner / whole-model state dict.

    Handles a nested ``{name: state}`` (OnlineRefiner callback), a whole-model state
    (``name.`` prefixed keys) and a plain module state (returned as is).
    """
    state_dict = dict(state_dict)
    if isinstance(state_dict.get(name), dict):
        return dict(state_dict[name])
    prefix = name + '.'
    if any(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return state_dict


def _copy_state_into(module, state_dict, lock, what):
    """Copy ``state_dict`` into ``module``'s existing tensors in place (keeps CUDA graphs valid).

    Tensors are moved to the device/dtype outside ``lock``; only the device-side ``copy_`` runs
    under it, into the module's tensors as they are then (a CPU fall-back that moved the module
    in between gets the weights all the same: ``copy_`` converts device and dtype). Raises
    ``ValueError`` naming missing / unexpected / mis-shaped keys.
    """
    own = module.state_dict(keep_vars=True)
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(f'{what} state mismatch: missing keys {missing[:3]} '
                         f'({len(missing)} in all), unexpected keys {unexpected[:3]} '
                         f'({len(unexpected)} in all)')
    staged = {}
    for key, target in own.items():
        source = state_dict[key]
        if tuple(source.shape) != tuple(target.shape):
            raise ValueError(f'{what} state: {key} has shape {tuple(source.shape)}, '
                             f'expected {tuple(target.shape)}')
        staged[key] = source.detach().to(device=target.device, dtype=target.dtype)
    with lock, torch.no_grad():
        for key, target in module.state_dict(keep_vars=True).items():
            target.copy_(staged[key])
        for device in {t.device for t in staged.values() if t.is_cuda}:
            torch.cuda.current_stream(device).synchronize()


class _ImageUploader:
    """Host -> device upload of ``[H, W, 3]`` uint8 frames through reused buffers."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.size = None
        self.host = None      # [H, W, 3] uint8 (pinned on CUDA)
        self.device_u8 = None  # [H, W, 3] uint8 on the device (same tensor as host on CPU)

    def ensure(self, height, width):
        """(Re-)allocate the buffers for ``height x width``; returns True when they changed."""
        if self.size == (height, width):
            return False
        self.size = (height, width)
        if self.device.type == 'cuda':
            self.host = torch.empty((height, width, 3), dtype=torch.uint8, pin_memory=True)
            self.device_u8 = torch.empty((height, width, 3), dtype=torch.uint8,
                                         device=self.device)
        else:
            self.host = torch.empty((height, width, 3), dtype=torch.uint8)
            self.device_u8 = self.host
        return True

    def upload(self, image):
        """Copy the numpy ``image`` into the device buffer (asynchronously on CUDA)."""
        np.copyto(self.host.numpy(), image)   # also fine for read-only (ROS buffer) arrays
        if self.device_u8 is not self.host:
            self.device_u8.copy_(self.host, non_blocking=True)


def _first_line(exc):
    """First line of an exception message (compile / capture errors can be pages long)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ''


def _check_image(image):
    """Validate a ``[H, W, 3]`` uint8 numpy image; returns a C-contiguous view/copy."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f'expected a numpy [H, W, 3] uint8 image, got {type(image).__name__}')
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'expected a [H, W, 3] uint8 RGB image, got shape {image.shape} '
                         f'dtype {image.dtype}')
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f'image too small: {image.shape[1]}x{image.shape[0]}')
    return np.ascontiguousarray(image)


def _to_network_input(image_u8, out):
    """Device-side pre-processing into the static tensor ``out`` [1, 3, h, w] (float, [0, 1]).

    ``image_u8``: [H, W, 3] uint8 on the same device. Bilinear resize, antialiased when
    shrinking. On the CPU the resize runs on the uint8 pixels (torch's channels-last uint8
    kernel, torchvision's ``Resize`` on uint8 tensors; the result is rounded to whole grey
    levels, at most 1/255 from resizing in float): 1.3 ms instead of 4.5 ms for a 1242x375
    KITTI frame to 640x192 on one thread of a 2-core Xeon. CUDA resizes in float.
    """
    out.copy_(_resized_input(image_u8, *out.shape[-2:]))
    out.div_(255.0)


def _resized_input(image_u8, height, width):
    """``image_u8`` [H, W, 3] as a [1, 3, height, width] view or resize (uint8 on the CPU)."""
    x = image_u8.permute(2, 0, 1).unsqueeze(0)          # [1, 3, H, W] view, channels-last
    if x.shape[-2:] != (height, width):
        shrink = height < x.shape[-2] or width < x.shape[-1]
        if x.device.type != 'cpu':
            x = x.float()
        x = F.interpolate(x, size=(height, width), mode='bilinear', align_corners=False,
                          antialias=shrink)
    return x


def network_input_levels(image_u8, height, width):
    """Return the CPU pre-processing's grey levels, [1, 3, height, width] uint8 (input x 255).

    ``image_u8``: [H, W, 3] uint8 CPU tensor. ``levels / 255`` (float32) is bitwise what
    :func:`_to_network_input` gives on the CPU: a quarter of the memory for stored inputs
    (int8 calibration frames).
    """
    return _resized_input(image_u8, height, width).contiguous()


def _resize_disparity(scaled, out):
    """Bilinear resize of ``scaled`` [1, 1, h', w'] to ``out``'s [1, 1, H, W]; returns the result.

    On the CPU OpenCV writes it into ``out``: its ``INTER_LINEAR`` samples at the same
    half-pixel centres as torch's ``align_corners=False`` bilinear, with the weights quantised
    to 1/2048 pixel for non-integer factors (within 1e-4 relative of torch on a smooth
    disparity; 2e-7 for the 2x of FeatDepth's half-size disparity at 640x192). 0.07 ms instead
    of torch's 0.25 ms (and a fresh tensor) at 640x192, 0.18 instead of 0.89 ms at 1242x375, on
    one thread of a 2-core Xeon. Other devices keep ``F.interpolate``.
    """
    if scaled.device.type != 'cpu':
        return F.interpolate(scaled, size=out.shape[-2:], mode='bilinear', align_corners=False)
    import cv2

    height, width = out.shape[-2:]
    cv2.resize(scaled[0, 0].numpy(), (width, height), dst=out[0, 0].numpy(),
               interpolation=cv2.INTER_LINEAR)
    return out


class DepthPredictor:
    """DepthNet on numpy frames: ``predict(image) -> depth [H, W]`` float32 metres (up to scale).

    Args:
        depth_net: a DepthNet (``forward(image [B,3,h,w] in [0,1]) -> {0: disp [B,1,h',w'], ...}``)
            or a model with a ``.depth_net``. It is deep-copied: the caller's module is untouched.
        cfg: :class:`fmdepth_ros.config.Config` (network size, min/max depth).
        device: 'cpu', 'cuda', 'cuda:N' (resolve 'auto' with :func:`select_device` first).
        precision: 'fp32' | 'fp16' | 'bf16': autocast, the weights stay fp32 ...
        cast_weights: ... unless this is True: then the weights (and the network input) are
            stored in the low precision and no autocast runs (``load_depth_state`` still takes
            fp32 weights and casts them while copying).
        channels_last: NHWC memory format for the network and its input.
        compile: wrap the network in ``torch.compile``; on any failure, warn and run eager.
        cuda_graphs: capture the whole per-frame device pipeline in a CUDA graph (CUDA only;
            re-captured when the input size changes; warns and runs without on failure).
        engine: an ONNX engine (:mod:`fmdepth_ros.runtime.backends`) that runs the network
            instead of torch: ``engine(image [1,3,h,w]) -> disp [1,1,h',w']`` on
            ``engine.device``. The torch-side steps then run in fp32 and the torch copy of the
            network is only kept for weight swaps (``load_depth_state`` refits the engine).
    """

    def __init__(self, depth_net, cfg, device='cpu', precision='fp32', channels_last=False,
                 compile=False, cuda_graphs=False,  # noqa: A002 - public keyword
                 cast_weights=False, engine=None):
        """Copy the network to ``device`` and set up the optimisations (see class doc)."""
        _check_precision(precision)
        self.engine = engine
        self.backend = engine.backend if engine is not None else 'torch'
        self.swap_seconds = []   # weight swap durations (refit + swap for an engine)
        if engine is not None:
            device, precision, cast_weights = engine.device, 'fp32', False
            channels_last = compile = cuda_graphs = False  # noqa: A001 - the keyword
        self.cfg = cfg
        self.device = torch.device(device)
        self.precision = precision
        self.cast_weights = bool(cast_weights) and precision != 'fp32'
        self.channels_last = bool(channels_last)
        self.compile = bool(compile)
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == 'cuda'
        self.notes = []          # one-line warnings emitted so far (compile/graph/OOM fallbacks)
        if cuda_graphs and not self.cuda_graphs:
            self._warn('CUDA graphs need a CUDA device; running without them')
        self.net_size = (int(cfg.model.height), int(cfg.model.width))
        self._min_depth = float(cfg.model.min_depth)
        self._max_depth = float(cfg.model.max_depth)
        self._min_disp = 1.0 / self._max_depth
        self._lock = threading.RLock()
        self._swap_lock = threading.RLock()
        #: optional :class:`runtime.stage_timer.StageTimer` (``fmdepth bench``): None = untimed
        self.stage_timer = None
        self.net = copy.deepcopy(_unwrap_depth_net(depth_net)).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._setup_device()

    # ------------------------------------------------------------------ setup
    def _warn(self, message):
        self.notes.append(message)
        LOGGER.warning(message)

    def _setup_device(self):
        """Move the network to the device and reset every buffer / graph / compiled wrapper."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        dtype = PRECISIONS[self.precision] if self.cast_weights else torch.float32
        self.net.to(device=self.device, dtype=dtype, memory_format=fmt)
        self._forward = self.net if self.engine is None else self.engine
        self._compiled = False
        if self.compile:
            try:
                self._forward = torch.compile(self.net, dynamic=False)
                self._compiled = True
            except Exception as exc:  # noqa: BLE001 - any backend failure means eager
                self._warn(f'torch.compile unavailable ({type(exc).__name__}: {exc}); '
                           'running eager')
        # CUDA: a high-priority stream of its own, so background refinement kernels on the
        # default stream do not queue in front of a frame.
        self._stream = (torch.cuda.Stream(self.device, priority=-1)
                        if self.device.type == 'cuda' else None)
        self._uploader = _ImageUploader(self.device)
        h, w = self.net_size
        self._net_in = torch.empty((1, 3, h, w), device=self.device,
                                   dtype=dtype).contiguous(memory_format=fmt)
        self._disp = None        # [1, 1, h', w'] float32, scale-0 disparity
        self._scaled = None      # [1, 1, h', w'] float32 1/m, its scaled disparity
        self._depth = None       # [1, 1, H, W] float32 metres at the input size
        self._depth_host = None  # [H, W] float32 (pinned on CUDA)
        self._disp_host = None   # [h', w'] float32 (pinned on CUDA)
        self._graph = None
        self._graph_failed = False

    def _stream_context(self):
        if self._stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self._stream)

    def _synchronize(self):
        if self._stream is not None:
            self._stream.synchronize()

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        # no weight-cast cache: required inside CUDA graph capture, and weights change in place
        return torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None and not self.cast_weights,
                              cache_enabled=False)

    def _mark(self, stage):
        """Close ``stage`` of the attached stage timer (waits for the device first)."""
        timer = self.stage_timer
        if timer is None:
            return
        self._synchronize()
        timer.mark(stage)

    def _network_disp(self):
        """Forward on the static input; returns the scale-0 disparity (the network's dtype)."""
        with self._autocast():
            outputs = self._forward(self._net_in)
        return outputs[0] if isinstance(outputs, dict) else outputs

    def _pipeline(self):
        """Every device-side step of one frame, reading/writing only the static buffers."""
        _to_network_input(self._uploader.device_u8, self._net_in)
        self._mark('preprocess')
        disp = self._network_disp()
        self._mark('network')
        if self._disp is None:
            self._disp = torch.empty(disp.shape, dtype=torch.float32, device=disp.device)
            self._scaled = torch.empty_like(self._disp)
        # NaN disparity (a diverged network) stays NaN down to the depth: replacing it would
        # turn it into a valid-looking max_depth pixel. Every step below writes into the
        # static buffers (no per-frame temporaries unless the camera size differs).
        self._disp.copy_(disp)                  # float32, contiguous
        height, width = self._uploader.size
        same_size = tuple(self._disp.shape[-2:]) == (height, width)
        scaled = scaled_disparity(self._disp, self._min_depth, self._max_depth,
                                  out=self._depth if same_size else self._scaled)
        if not same_size:
            scaled = _resize_disparity(scaled, self._depth)
        # into the static buffer, no temporary: bitwise what ``1.0 / x`` gives (torch computes
        # ``x.reciprocal() * 1.0``)
        torch.reciprocal(scaled.clamp_(min=self._min_disp), out=self._depth)

    def _ensure_buffers(self, height, width):
        if not self._uploader.ensure(height, width):
            return
        pin = self.device.type == 'cuda'
        self._depth_host = torch.empty((height, width), pin_memory=pin)
        # on the CPU the depth buffer is the host buffer itself (no device -> host copy)
        self._depth = (torch.empty((1, 1, height, width), device=self.device) if pin
                       else self._depth_host.view(1, 1, height, width))
        self._graph = None

    def _capture_graph(self):
        """Warm up on a side stream, then capture ``_pipeline`` into a CUDA graph."""
        timer, self.stage_timer = self.stage_timer, None   # no synchronize while capturing
        try:
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._pipeline()
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                self._pipeline()
            current.wait_stream(side)
            self._graph = graph
        except torch.cuda.OutOfMemoryError:
            self._graph = None
            raise
        except Exception as exc:  # noqa: BLE001 - fall back to the eager pipeline
            self._graph = None
            self._graph_failed = True
            torch.cuda.synchronize(self.device)
            self._warn(f'CUDA graph capture failed ({type(exc).__name__}: '
                       f'{_first_line(exc)}); running without graphs')
        finally:
            self.stage_timer = timer

    def _run_device(self):
        if self.cuda_graphs and not self._graph_failed:
            if self._graph is None:
                self._capture_graph()
            if self._graph is not None:
                self._graph.replay()
                self._mark('graph')     # pre-processing, network, post-processing in one
                return
        self._pipeline()

    def _run(self, image, want_disparity):
        """Upload ``image``, run the pipeline and fetch the results into the host buffers."""
        height, width = image.shape[:2]
        with torch.no_grad(), self._stream_context():
            self._ensure_buffers(height, width)
            self._uploader.upload(image)
            try:
                self._run_device()
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - compile errors surface at the first call
                if not self._compiled:
                    raise
                self._warn(f'torch.compile failed at run time ({type(exc).__name__}: '
                           f'{_first_line(exc)}); running eager')
                self.compile = False
                self._setup_device()
                self._run(image, want_disparity)
                return
            if self._depth.data_ptr() != self._depth_host.data_ptr():
                self._depth_host.copy_(self._depth[0, 0], non_blocking=True)
            if want_disparity:
                if self._disp_host is None or self._disp_host.shape != self._disp.shape[-2:]:
                    self._disp_host = torch.empty(tuple(self._disp.shape[-2:]),
                                                  pin_memory=self.device.type == 'cuda')
                self._disp_host.copy_(self._disp[0, 0], non_blocking=True)
            self._synchronize()

    def _run_with_fallback(self, image, want_disparity=False):
        try:
            self._run(image, want_disparity)
        except torch.cuda.OutOfMemoryError:
            if self.device.type != 'cuda':
                raise
            self.fall_back_to_cpu('CUDA out of memory during inference')
            self._run(image, want_disparity)

    def fall_back_to_cpu(self, reason):
        """Move inference to the CPU (fp32, eager) after ``reason``, with a warning."""
        with self._lock:
            self._warn(f'{reason}; falling back to the CPU (fp32, eager)')
            self._graph = None
            self.engine, self.backend = None, 'torch'
            was_cuda = self.device.type == 'cuda'
            self.device = torch.device('cpu')
            self.precision = 'fp32'
            self.cast_weights = False
            self.compile = False
            self.cuda_graphs = False
            self._setup_device()
            if was_cuda:
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ public API
    def predict(self, image, out=None) -> np.ndarray:
        """Depth of one frame.

        Args:
            image: ``[H, W, 3]`` uint8 RGB numpy array, any size.
            out: optional ``[H, W]`` float32 array to write into (avoids a host allocation).

        Returns:
            ``[H, W]`` float32 depth in metres (up to scale), at the input resolution, within
            ``[min_depth, max_depth]``; NaN where the network's disparity is NaN (and the
            pixels the bilinear upsampling mixes with it).
        """
        image = _check_image(image)
        with self._lock:
            self._run_with_fallback(image)
            if out is not None:
                np.copyto(out, self._depth_host.numpy())
            else:
                out = self._depth_host.numpy().copy()
            self._mark('postprocess')
            return out

    def predict_disparity(self, image) -> np.ndarray:
        """Scale-0 sigmoid disparity ``[h', w']`` float32 in (0, 1) at the network output size.

        NaN where the network produced NaN.
        """
        image = _check_image(image)
        with self._lock:
            self._run_with_fallback(image, want_disparity=True)
            return self._disp_host.numpy().copy()

    def load_depth_state(self, state_dict) -> None:
        """Copy new DepthNet weights in place, thread-safely (refinement weight swap).

        Accepts a DepthNet state dict, a whole-model one (``depth_net.`` keys are used) or the
        ``{'depth_net': state, ...}`` dict that ``OnlineRefiner`` hands to ``on_weights``.
        The tensors keep their storage, so compiled code and captured CUDA graphs stay valid.
        With an engine, the new weights are written into the exported graph and a new engine
        is built in the calling thread (frames keep running on the old one meanwhile), then
        swapped in under the frame lock. ``swap_seconds`` records each swap's duration.
        """
        start = time.perf_counter()
        state = _select_state(state_dict, 'depth_net')
        engine = self.engine
        if engine is None:
            _copy_state_into(self.net, state, self._lock, 'DepthNet')
        else:
            # The torch copy is not used for inference: update it outside the frame lock,
            # build the refitted engine in the caller's (refiner) thread, swap it under it.
            with self._swap_lock:
                _copy_state_into(self.net, state, self._swap_lock, 'DepthNet')
                refitted = engine.refit(self.net.state_dict())
                with self._lock:
                    if self.engine is engine:
                        self.engine = self._forward = refitted
        self.swap_seconds.append(time.perf_counter() - start)
        del self.swap_seconds[:-100]

    def describe(self) -> dict:
        """Live settings: backend, precision, memory format, where it runs (diagnostics)."""
        if self.engine is not None:
            return {'backend': self.backend, 'precision': self.engine.precision,
                    'engine': self.engine.describe(), 'device': str(self.device)}
        return {'backend': 'torch', 'precision': self.precision,
                'weights': 'cast' if self.cast_weights else 'fp32',
                'channels_last': self.channels_last, 'cuda_graphs': self.cuda_graphs,
                'compile': self.compile, 'device': str(self.device)}

    def state_dict(self):
        """Return the inference copy's DepthNet weights (on the inference device)."""
        return self.net.state_dict()


class PoseEstimator:
    """PoseNet on two numpy frames: ``estimate(earlier, later) -> T_earlier_later [4, 4]``.

    Both frames are resized on the device to ``cfg.model.pose_height x pose_width``.
    See the module docstring for the direction convention.
    """

    def __init__(self, pose_net, cfg, device='cpu', precision='fp32', cast_weights=False):
        """Copy ``pose_net`` (or ``model.pose_net``) to ``device``; allocate input buffers.

        ``precision`` 'fp16'/'bf16' runs autocast over float32 weights, unless
        ``cast_weights``: then the weights and inputs are stored in that precision and no
        autocast runs (as :class:`DepthPredictor`; saves the per-frame weight casts on the CPU).
        """
        _check_precision(precision)
        self.cfg = cfg
        self.device = torch.device(device)
        self.precision = precision
        self.cast_weights = bool(cast_weights) and precision != 'fp32'
        self.notes = []
        self.net = copy.deepcopy(getattr(pose_net, 'pose_net', pose_net)).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        dtype = PRECISIONS[precision] if self.cast_weights else torch.float32
        self._lock = threading.RLock()
        self._place(dtype)

    def _place(self, dtype):
        """Move the network to ``self.device`` / ``dtype`` and allocate the input buffers."""
        self.net.to(device=self.device, dtype=dtype)
        size = (1, 3, int(self.cfg.model.pose_height), int(self.cfg.model.pose_width))
        self._inputs = (torch.empty(size, device=self.device, dtype=dtype),
                        torch.empty(size, device=self.device, dtype=dtype))
        self._uploaders = (_ImageUploader(self.device), _ImageUploader(self.device))

    def fall_back_to_cpu(self, reason):
        """Move pose estimation to the CPU (fp32) after ``reason``, in place, under the lock.

        The same object keeps serving: a refinement weight swap (:meth:`load_pose_state`)
        holds the same lock, so it lands either before the move (and is moved with the
        network) or after it (and is copied into the CPU weights); it is never lost.
        """
        with self._lock:
            self.notes.append(f'{reason}; pose estimation falls back to the CPU (fp32)')
            was_cuda = self.device.type == 'cuda'
            self.device = torch.device('cpu')
            self.precision = 'fp32'
            self.cast_weights = False
            self._place(torch.float32)
            if was_cuda:
                torch.cuda.empty_cache()

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None and not self.cast_weights)

    def estimate_axisangle(self, earlier, later) -> Tuple[np.ndarray, np.ndarray]:
        """Raw PoseNet output on ``[earlier, later]``: (axisangle [3], translation [3]).

        These compose (``T = [t]·R``) to ``T_later_earlier`` (official convention).
        """
        images = (_check_image(earlier), _check_image(later))
        with self._lock, torch.no_grad():
            for image, uploader, net_in in zip(images, self._uploaders, self._inputs):
                uploader.ensure(*image.shape[:2])
                uploader.upload(image)
                _to_network_input(uploader.device_u8, net_in)
            with self._autocast():
                axisangle, translation = self.net(*self._inputs)
            return (axisangle.float().reshape(-1, 3)[0].cpu().numpy().astype(np.float64),
                    translation.float().reshape(-1, 3)[0].cpu().numpy().astype(np.float64))

    def estimate(self, earlier, later) -> np.ndarray:
        """``T_earlier_later`` [4, 4] float64: ``p_earlier = T @ p_later`` (camera optical frames).

        ``earlier``/``later``: ``[H, W, 3]`` uint8 RGB frames in time order.
        """
        axisangle, translation = self.estimate_axisangle(earlier, later)
        T = pose_from_axisangle(torch.from_numpy(axisangle)[None],
                                torch.from_numpy(translation)[None], invert=True)
        return T[0].double().numpy()

    def load_pose_state(self, state_dict) -> None:
        """Copy new PoseNet weights in place, thread-safely (``pose_net.`` keys accepted)."""
        state = _select_state(state_dict, 'pose_net')
        _copy_state_into(self.net, state, self._lock, 'PoseNet')


__all__ = ['DepthPredictor', 'PoseEstimator', 'select_device', 'fast_options',
           'set_cpu_threads', 'usable_cpu_count',
           'cpu_has_native_bf16', 'PRECISIONS']

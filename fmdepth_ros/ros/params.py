"""Parameters of the ``fmdepth`` node: one table with defaults, descriptions, ranges, read-only.

Read-only parameters are fixed at start-up (they shape the model, topics or QoS); the others
take effect on the next frame when changed with ``ros2 param set`` / ``set_parameters``.
Range violations are rejected by the descriptors (rclpy), other invalid values (enum strings,
``min_depth >= max_depth``...) by :func:`validate` with a one-line reason.
"""

from dataclasses import dataclass
import math
from typing import Any, Optional, Tuple

from fmdepth_ros.ros.model_setup import MIN_INPUT_SIZE
from fmdepth_ros.runtime.backends import INT8_BACKENDS
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

DEFAULT_BASE_TO_CAMERA = [0.0, 0.0, 0.0, -math.pi / 2, 0.0, -math.pi / 2]


@dataclass(frozen=True)
class Param:
    """One parameter: name, default, description, numeric range, read-only flag, choices."""

    name: str
    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None  # noqa: A003 - keyword field, shadows nothing
    read_only: bool = False
    choices: Optional[Tuple[str, ...]] = None
    step: float = 0


#: backend values that may run precision int8
INT8_CHOICES = ('auto',) + INT8_BACKENDS

PARAMS = (
    # model and device (fixed at start-up)
    Param('autostart', True, 'configure and activate the lifecycle node at start (as a plain '
          'node); false: it waits unconfigured for a lifecycle manager', read_only=True),
    Param('weights', '', 'checkpoint file (fmdepth train / convert); empty = random '
          'initialisation (depth is meaningless until online refinement has learned)',
          read_only=True),
    Param('config_file', '', 'YAML model config used when weights is empty; empty = the small '
          'CPU config (ResNet-18, 64x192)', read_only=True),
    Param('device', 'auto', 'inference/refinement device: auto, cuda, cuda:N or cpu '
          '(falls back to the CPU with a warning)', read_only=True),
    Param('precision', 'auto', 'inference precision: auto (fp16 on CUDA, bf16 on CPUs with '
          'native bf16, else fp32), fp32, fp16, bf16, or int8 (DepthNet on the onnxruntime / '
          'openvino backend, calibrated on int8_calibration; PoseNet keeps auto); refinement '
          'always trains in fp32', read_only=True,
          choices=('auto', 'fp32', 'fp16', 'bf16', 'int8')),
    Param('int8_calibration', '', 'folder of camera images (searched recursively) whose '
          'frames calibrate the int8 DepthNet (up to 32, evenly spaced; the quantised graph '
          'is cached beside the weights); used only with precision int8', read_only=True),
    Param('cpu_threads', 0, 'torch intra-op CPU threads, process-wide (each of the inference '
          'and refinement threads uses this many): 0 = half the usable cores, at least 1 '
          '(both run at once; more threads than cores makes OpenMP threads wait for each other)',
          range=(0, 256), read_only=True),
    Param('channels_last', True, 'channels_last (NHWC) memory format for inference (faster '
          'on CPU and CUDA)', read_only=True),
    Param('cuda_graphs', True, 'capture per-frame depth inference in a CUDA graph (CUDA only; '
          'ignored on the CPU)', read_only=True),
    Param('compile', False, 'torch.compile the DepthNet for inference (minutes of start-up; '
          'falls back to eager with a warning)', read_only=True),
    Param('backend', 'torch', 'inference backend of the DepthNet: torch, onnxruntime, '
          'openvino, tensorrt (one that cannot run here falls back to the next with a '
          'warning), or auto: time each backend x precision x memory format at start-up and '
          'take the fastest (cached per hardware and input size)', read_only=True,
          choices=('auto', 'torch', 'onnxruntime', 'openvino', 'tensorrt')),
    Param('backend_cache', '', 'JSON file caching the auto backend choice; empty = '
          '$FMDEPTH_CACHE_DIR or ~/.cache/fmdepth_ros/backend_choice.json', read_only=True),
    Param('width', 0, f'network input width in pixels (multiple of 32, at least '
          f'{MIN_INPUT_SIZE}); 0 = from the checkpoint',
          range=(0, 4096), read_only=True, step=32),
    Param('height', 0, f'network input height in pixels (multiple of 32, at least '
          f'{MIN_INPUT_SIZE}); 0 = from the checkpoint',
          range=(0, 4096), read_only=True, step=32),
    Param('frame_ids', [0, -1, 1], 'frame ids of a refinement window (target first); '
          'the sliding window holds max-min+1 frames', read_only=True),
    Param('queue_size', 5, 'history depth of the input subscriptions and length of the frame '
          'queue in front of inference (full: the oldest frame is dropped, with a warning)',
          range=(1, 100),
          read_only=True),
    Param('use_compressed', False, 'subscribe to image/compressed (CompressedImage) instead of '
          'image', read_only=True),
    Param('output_reliability', 'reliable', 'QoS reliability of the outputs: reliable '
          '(depth_image_proc) or best_effort', read_only=True,
          choices=('reliable', 'best_effort')),
    Param('output_depth', 5, 'QoS history depth of the outputs', range=(1, 100), read_only=True),
    # outputs
    Param('min_depth', 0.1, 'depth below this (metres, after scaling) is published as NaN',
          range=(0.0, 1000.0)),
    Param('max_depth', 100.0, 'depth above this (metres, after scaling) is published as NaN',
          range=(0.001, 10000.0)),
    Param('publish_colored', True, 'publish depth/colored (rgb8 turbo colour map of inverse '
          'depth) when someone subscribes'),
    Param('points_stride', 1, 'depth/points keeps every N-th pixel in both directions '
          '(decimation)', range=(1, 64)),
    Param('points_min_range', 0.1, 'depth/points drops points closer to the camera centre '
          'than this (metres, Euclidean)', range=(0.0, 1000.0)),
    Param('points_max_range', 20.0, 'depth/points drops points farther from the camera '
          'centre than this (metres, Euclidean)', range=(0.001, 10000.0)),
    Param('points_organized', False, 'depth/points as an organised HxW cloud with NaN for '
          'invalid points (is_dense false); false = unorganised, invalid points dropped'),
    Param('points_rgb', False, 'add a packed rgb field (from the input image) to '
          'depth/points'),
    Param('skip_without_subscribers', True, 'skip inference while no output has a subscriber'),
    # scale
    Param('scale_mode', 'none', 'none: network depth as is (up to scale); fixed: multiply by '
          'scale_factor; camera_height: RANSAC ground-plane fit against camera_height',
          choices=('none', 'fixed', 'camera_height')),
    Param('scale_factor', 1.0, 'depth/translation factor for scale_mode fixed',
          range=(1e-6, 1e6)),
    Param('camera_height', 1.65, 'camera height above the ground in metres (scale_mode '
          'camera_height)', range=(0.01, 100.0)),
    # odometry / TF
    Param('publish_odom', True, 'publish nav_msgs/Odometry on odom'),
    Param('publish_tf', True, 'broadcast odom_frame -> base_frame on /tf (turn off when '
          'robot_localization owns that transform)'),
    Param('odom_frame', 'odom', 'odometry frame (REP-105)'),
    Param('base_frame', 'base_link', 'robot body frame (REP-105)'),
    Param('camera_frame', '', 'camera optical frame; empty = the image header frame_id'),
    Param('base_to_camera', DEFAULT_BASE_TO_CAMERA, 'base_frame -> camera optical frame as '
          '[x, y, z, roll, pitch, yaw] (m, rad), used unless /tf_static provides it; default '
          'is the standard optical rotation at the base origin'),
    Param('use_tf_static', True, 'take base_frame -> camera frame from /tf_static when present'),
    Param('translation_variance', 0.01, 'odometry position variance added per frame (m^2, '
          'after scaling)', range=(0.0, 1e6)),
    Param('rotation_variance', 0.001, 'odometry orientation variance added per frame (rad^2)',
          range=(0.0, 1e6)),
    # input checks
    Param('camera_info_timeout', 5.0, 'warn when images arrive without a valid camera_info for '
          'this long (s)', range=(0.1, 3600.0)),
    Param('camera_info_wait', 0.05, 'seconds an image (the first one too) waits for the '
          'camera_info with its exact stamp before the latest valid one is used; no waiting '
          'once none has come for camera_info_timeout', range=(0.0, 1.0)),
    Param('max_frame_gap', 1.0, 'a forward stamp jump larger than this (s) resets the window',
          range=(0.001, 3600.0)),
    Param('warning_period', 5.0, 'minimum seconds between two warnings of the same kind',
          range=(0.0, 3600.0)),
    # online refinement
    Param('refine', False, 'online refinement in a background thread (self-supervised '
          'photometric + feature-metric losses)'),
    # 5 steps on every 2nd window: measured to lower AbsRel pass after pass on a real drive
    # (docs/training.md, "Online refinement on a real drive"); the paper refines 20 per sample
    Param('refine_iterations', 5, 'Adam steps per refinement window', range=(1, 1000)),
    Param('refine_lr', 1e-4, 'refinement learning rate', range=(1e-8, 1e-1)),
    Param('refine_target', 'decoder', 'what is refined: decoder (depth decoder) or all '
          '(DepthNet + PoseNet)', choices=('decoder', 'all')),
    Param('refine_guard', True, "revert a window's refinement when its loss gets worse or "
          'not finite'),
    Param('refine_batchnorm', 'eval', 'BatchNorm of the refined networks during the steps: '
          "eval (running statistics) or train (the window's statistics; running statistics "
          'adapt to the camera)', choices=('eval', 'train')),
    Param('refine_every', 2, 'submit a refinement window every N frames', range=(1, 10000)),
    # measured on the end of a KITTI city drive where the car creeps to a stop (window motion
    # 0.003-0.017): refining there raises the error, at 0.01 too; 0.02 skips it and keeps every
    # window of the drive's moving part (0.02-0.05) (docs/training.md, "a camera standing still")
    Param('refine_min_motion', 0.02, 'skip a refinement window whose frames differ from its '
          'target by less than this mean absolute grey level (0-1; a camera standing still); '
          '0: refine every window', range=(0.0, 1.0)),
    Param('refine_queue_size', 2, 'refinement queue length (the oldest window is dropped)',
          range=(1, 100), read_only=True),
    Param('diagnostics_period', 1.0, 'seconds between /diagnostics messages',
          range=(0.05, 3600.0), read_only=True),
)

BY_NAME = {p.name: p for p in PARAMS}


def descriptor(param):
    """Build the ParameterDescriptor of ``param`` (range, read-only, constraints)."""
    desc = ParameterDescriptor(description=param.description, read_only=param.read_only)
    if param.choices:
        desc.additional_constraints = 'one of: ' + ', '.join(param.choices)
    if param.range is not None:
        lo, hi = param.range
        if isinstance(param.default, bool):
            pass
        elif isinstance(param.default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi),
                                               step=int(param.step))]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                            to_value=float(hi), step=0.0)]
    return desc


def declare_all(node):
    """Declare every parameter of :data:`PARAMS` on ``node``."""
    for param in PARAMS:
        node.declare_parameter(param.name, param.default, descriptor(param))


def validate(values):
    """Return a one-line reason why the parameter dict ``values`` is invalid, or None.

    ``values`` maps names to new values merged over the current ones (cross-parameter checks
    such as ``min_depth < max_depth`` need both).
    """
    for name, value in values.items():
        param = BY_NAME.get(name)
        if param is None:
            continue
        if param.choices and value not in param.choices:
            return f'{name} must be one of {", ".join(param.choices)}, got {value!r}'
        if name == 'base_to_camera':
            if len(value) != 6 or not all(math.isfinite(v) for v in value):
                return 'base_to_camera must be 6 finite numbers [x, y, z, roll, pitch, yaw]'
        if name == 'frame_ids':
            ids = list(value)
            if not ids or ids[0] != 0 or len(set(ids)) != len(ids) or len(ids) < 2:
                return 'frame_ids must start with 0 and list distinct source ids, e.g. [0, -1, 1]'
        if name in ('width', 'height') and 0 < value < MIN_INPUT_SIZE:
            return (f'{name} must be 0 (from the checkpoint) or at least {MIN_INPUT_SIZE} '
                    f'pixels, got {value}')
        if name in ('odom_frame', 'base_frame') and not str(value).strip():
            return f'{name} must not be empty'
    if values.get('precision') == 'int8' and values.get('backend') not in INT8_CHOICES:
        return (f'precision int8 runs on the {" or ".join(INT8_BACKENDS)} backend (or auto), '
                f'not {values["backend"]}')
    if values.get('min_depth', 0.0) >= values.get('max_depth', math.inf):
        return (f'min_depth ({values["min_depth"]}) must be smaller than '
                f'max_depth ({values["max_depth"]})')
    if values.get('points_min_range', 0.0) >= values.get('points_max_range', math.inf):
        return (f'points_min_range ({values["points_min_range"]}) must be smaller than '
                f'points_max_range ({values["points_max_range"]})')
    if values.get('odom_frame') is not None and values.get('odom_frame') == values.get(
            'base_frame'):
        return 'odom_frame and base_frame must differ'
    return None


YAML_HEADER = """\
# Parameters of the fmdepth node (fmdepth_ros/ros/depth_node.py).
# "read-only" parameters are fixed at start-up; the others can be changed at run time
# (ros2 param set / set_parameters) and take effect on the next frame.
# Out-of-range values are rejected with a reason (ParameterDescriptor ranges).
# Generated from fmdepth_ros/ros/params.py: python -m fmdepth_ros.ros.params > config/depth.yaml
/**:
  ros__parameters:
"""


def _yaml_value(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


def _comment(param):
    extras = []
    if param.range is not None and not isinstance(param.default, bool):
        extras.append(f'range [{param.range[0]:g}, {param.range[1]:g}]'
                      + (f' step {param.step:g}' if param.step else ''))
    if param.choices:
        extras.append('one of ' + ', '.join(param.choices))
    if param.read_only:
        extras.append('read-only')
    return param.description + '.' + (' ' + '; '.join(extras) + '.' if extras else '')


def yaml_text():
    """Return ``config/depth.yaml``: every parameter with its default and a wrapped comment."""
    import textwrap
    lines = [YAML_HEADER.rstrip('\n')]
    for param in PARAMS:
        lines += textwrap.wrap(_comment(param), width=98, break_on_hyphens=False,
                               initial_indent='    # ', subsequent_indent='    # ')
        lines.append(f'    {param.name}: {_yaml_value(param.default)}')
    return '\n'.join(lines) + '\n'


def markdown_table():
    """Return README's parameter table (markdown): name, default, range/choices, runtime."""
    lines = ['| parameter | default | range / choices | runtime | meaning |',
             '|---|---|---|---|---|']
    for param in PARAMS:
        default = repr(param.default) if isinstance(param.default, str) else param.default
        if param.choices:
            limits = ', '.join(param.choices)
        elif param.range is not None and not isinstance(param.default, bool):
            limits = f'{param.range[0]:g} … {param.range[1]:g}'
        else:
            limits = ''
        lines.append(f'| `{param.name}` | `{default}` | {limits} | '
                     f'{"no" if param.read_only else "yes"} | {param.description} |')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    import sys
    print(markdown_table() if '--markdown' in sys.argv[1:] else yaml_text(), end='')

"""Start-up of the node's networks: weights or random init, device, inference copies.

Every expected failure raises :class:`StartupError` with a one-line message naming the file, so
``main()`` can print it and exit non-zero without a traceback.
"""

import os

from fmdepth_ros.config import load_config, small_cpu_config
from fmdepth_ros.errors import StartupError

# Smallest network input side: the depth and feature decoders reflection-pad their 1/32-scale
# features by 1 pixel, which needs at least 2 pixels there (32 px inputs fail at every frame).
MIN_INPUT_SIZE = 64


def load_model(weights, config_file='', width=0, height=0):
    """Return ``(model, cfg, warning)`` from a checkpoint or a random initialisation.

    ``width``/``height`` > 0 override the network input size (the DepthNet is fully
    convolutional). ``warning`` is a one-line message for random initialisation, else None.
    """
    from fmdepth_ros.checkpoint import CheckpointError, build_model, load_checkpoint
    warning = None
    if weights:
        if not os.path.isfile(weights):
            raise StartupError(f'weights file not found: {weights}')
        try:
            model, cfg, _ = load_checkpoint(weights, map_location='cpu')
        except CheckpointError as exc:
            raise StartupError(f'cannot load weights {weights}: {exc}') from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a start-up error
            raise StartupError(f'cannot load weights {weights}: '
                               f'{type(exc).__name__}: {exc}') from None
    else:
        try:
            cfg = load_config(config_file) if config_file else small_cpu_config()
        except (OSError, ValueError) as exc:
            raise StartupError(f'cannot read config_file {config_file}: {exc}') from None
        model = build_model(cfg)
        warning = ('no weights given: the networks are randomly initialised, depth and '
                   'odometry are meaningless until online refinement has learned')
    if width or height:
        if width % 32 or height % 32 or width <= 0 or height <= 0:
            raise StartupError(f'width and height must both be positive multiples of 32, '
                               f'got {width}x{height}')
        cfg.model.width, cfg.model.height = int(width), int(height)
    if min(cfg.model.width, cfg.model.height) < MIN_INPUT_SIZE:
        raise StartupError(f'network input {cfg.model.width}x{cfg.model.height} is too small: '
                           f'width and height must be at least {MIN_INPUT_SIZE} pixels')
    model.eval()
    return model, cfg, warning


def inference_options(device, precision='auto', channels_last=True, cuda_graphs=True,
                      compile=False):  # noqa: A002 - the node's compile parameter
    """:class:`~fmdepth_ros.runtime.inference.DepthPredictor` keywords for the node's parameters.

    ``precision`` 'auto' takes :func:`~runtime.inference.fast_options`'s recommendation for
    ``device`` (weights stored in bf16 on the CPU); CUDA graphs are only asked for on CUDA, so a
    CPU run (or a CUDA request that fell back to the CPU) logs no extra warning.
    """
    from fmdepth_ros.runtime.inference import fast_options
    options = fast_options(device, precision)
    options['channels_last'] = bool(channels_last)
    options['compile'] = bool(compile)
    options['cuda_graphs'] = bool(cuda_graphs) and options['cuda_graphs']
    return options

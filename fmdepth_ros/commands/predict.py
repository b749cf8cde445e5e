"""``fmdepth predict``: run a checkpoint on an image or a folder of images.

For every input image ``<stem>.<ext>`` it writes, atomically:

* ``OUT/<stem>.npy``: float32 depth ``[H, W]`` in metres (up to scale) at the input resolution,
  or with ``--disparity`` the scale-0 sigmoid disparity ``[h', w']`` exactly as the network
  outputs it (at the network's output resolution);
* ``OUT/<stem>.png``: a colour map of the (inverse) depth, magma by default, at the size of
  the saved array (brighter = closer; 95th-percentile normalisation like Monodepth2's
  pictures).

Inference goes through :class:`runtime.inference.DepthPredictor` (the same path as the ROS
node), so any input size is accepted. ``--backend`` runs the network with torch, onnxruntime,
OpenVINO or TensorRT (:mod:`fmdepth_ros.runtime.backends`); the pre/post-processing is the same,
so ``--disparity`` writes the same arrays (within 1e-3 relative in fp32) whatever the backend.
"""

import os
import sys

from fmdepth_ros.atomic_io import open_atomic
from fmdepth_ros.errors import CliError
import numpy as np

HELP = 'run a checkpoint on an image or a folder'


def configure_parser(parser):
    """Add the ``fmdepth predict`` arguments."""
    parser.add_argument('--checkpoint', required=True, help='checkpoint file (fmdepth format)')
    parser.add_argument('input', metavar='INPUT', help='an image file or a folder of images')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--disparity', action='store_true',
                        help='save the raw scale-0 sigmoid disparity instead of depth')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--colormap', default='magma', help='matplotlib colormap name')
    parser.add_argument('--precision', choices=('auto', 'fp32', 'fp16', 'bf16', 'int8'),
                        default='fp32',
                        help="inference precision (default fp32; auto: the backend's choice; "
                             'int8: onnxruntime / openvino, needs --calibration)')
    parser.add_argument('--calibration', default=None, metavar='DIR',
                        help='int8: folder of camera images calibrating the quantised graph '
                             '(up to 32 frames, evenly spaced; cached beside the checkpoint)')
    parser.add_argument('--backend', default='torch',
                        choices=('auto', 'torch', 'onnxruntime', 'openvino', 'tensorrt'),
                        help='inference backend (default torch; one that cannot run here '
                             'falls back to the next with a warning; auto times them)')


def colorize(values, colormap='magma', percentile=95.0):
    """[H, W, 3] uint8 colour picture of ``values`` [H, W] (larger = brighter).

    Values are normalised from their minimum to their ``percentile`` (clipped above), so a
    few very near pixels do not wash the picture out. Non-finite values are drawn as 0.
    """
    import matplotlib

    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0,
                           neginf=0.0)
    lo = float(values.min())
    hi = float(np.percentile(values, percentile))
    norm = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(f'unknown colormap {colormap!r}') from None
    return (cmap(norm)[..., :3] * 255.0 + 0.5).astype(np.uint8)


def save_npy_atomic(path, array):
    """Write ``array`` as ``.npy`` atomically."""
    with open_atomic(path) as f:
        np.save(f, array)


def save_png_atomic(path, rgb):
    """Write an [H, W, 3] uint8 image as PNG atomically."""
    from PIL import Image

    with open_atomic(path) as f:
        Image.fromarray(rgb).save(f, format='PNG')


def list_inputs(path):
    """Image files of ``path``: the file itself, or the images of a folder sorted by name."""
    from fmdepth_ros.data.folder import IMAGE_EXTENSIONS, list_images

    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in list_images(path)]
        if not files:
            raise CliError(f'{path}: no images ({", ".join(IMAGE_EXTENSIONS)}) in the folder')
        return files
    if os.path.isfile(path):
        return [path]
    raise CliError(f'{path}: no such file or directory')


def predict_file(predictor, path, out_dir, disparity=False, colormap='magma'):
    """Predict one image file; returns the written (npy path, png path)."""
    from fmdepth_ros.data.triplets import load_rgb

    image = load_rgb(path)
    if disparity:
        array = predictor.predict_disparity(image).astype(np.float32)
        picture = colorize(array, colormap)
    else:
        array = predictor.predict(image).astype(np.float32)
        picture = colorize(1.0 / np.maximum(array, 1e-6), colormap)
    stem = os.path.splitext(os.path.basename(path))[0]
    npy_path = os.path.join(out_dir, stem + '.npy')
    png_path = os.path.join(out_dir, stem + '.png')
    save_npy_atomic(npy_path, array)
    save_png_atomic(png_path, picture)
    return npy_path, png_path


def int8_calibration(directory, cfg):
    """Calibration network inputs of ``--calibration DIR`` for ``--precision int8``.

    Shared by ``predict`` and ``evaluate``; a missing option or a folder without readable
    images is a one-line CliError.
    """
    if not directory:
        raise CliError('--precision int8 needs --calibration DIR (camera images)')
    from fmdepth_ros.errors import BackendUnavailable
    from fmdepth_ros.runtime.quantize import calibration_inputs
    try:
        return calibration_inputs(directory, cfg.model.height, cfg.model.width)
    except BackendUnavailable as exc:
        raise CliError(f'--calibration: {exc}') from None


def run(args):
    """Predict depth (or disparity) for every input image; returns the exit code."""
    from tqdm import tqdm

    from fmdepth_ros.checkpoint import CheckpointError, load_checkpoint
    from fmdepth_ros.runtime.backends import (create_depth_predictor, engine_options,
                                              INT8_BACKENDS)
    from fmdepth_ros.runtime.inference import select_device

    inputs = list_inputs(args.input)
    if not os.path.isfile(args.checkpoint):
        raise CliError(f'--checkpoint: no such file: {args.checkpoint}')
    try:
        colorize(np.zeros((1, 1)), args.colormap)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CliError(f'--out {args.out} exists and is not a directory')
    try:
        device, warning = select_device(args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if warning:
        print(f'fmdepth predict: warning: {warning}', file=sys.stderr)
    try:
        model, cfg, _ = load_checkpoint(args.checkpoint, map_location='cpu')
    except CheckpointError as exc:
        raise CliError(str(exc)) from None
    calibration = None
    if args.precision == 'int8':
        if args.backend not in ('auto',) + INT8_BACKENDS:
            raise CliError(f'--precision int8 runs on --backend {" or ".join(INT8_BACKENDS)}, '
                           f'not {args.backend}')
        calibration = int8_calibration(args.calibration, cfg)
    predictor = create_depth_predictor(model.depth_net, cfg, args.backend, device=device,
                                       precision=args.precision,
                                       torch_options={'channels_last': False,
                                                      'cast_weights': False,
                                                      'cuda_graphs': False},
                                       engine_options=engine_options(args.checkpoint,
                                                                     calibration))
    print(f'fmdepth predict: backend {predictor.backend} '
          f'({predictor.describe()["precision"]})', file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    failed = []
    single = len(inputs) == 1 and not os.path.isdir(args.input)
    for path in tqdm(inputs, desc='predict', unit='img', disable=single, file=sys.stderr):
        try:
            predict_file(predictor, path, args.out, args.disparity, args.colormap)
        except (OSError, ValueError) as exc:   # unreadable / corrupt image
            if single:
                raise CliError(f'{path}: cannot read image ({exc})') from None
            failed.append(path)
            tqdm.write(f'fmdepth predict: warning: skipping {path}: '
                       f'{str(exc).splitlines()[0]}', file=sys.stderr)
    done = len(inputs) - len(failed)
    what = 'disparity' if args.disparity else 'depth'
    print(f'wrote {what} .npy + colour .png for {done} image(s) to {args.out}')
    return 1 if failed else 0

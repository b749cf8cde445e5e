"""Our checkpoint format: atomic save, validated load with one-line errors naming the file.

A checkpoint is a ``torch.save``d dict::

    {'format': 'fmdepth_ros', 'version': 1,
     'config': Config.to_dict(),             # everything needed to rebuild the model
     'state_dict': FeatDepthModel.state_dict(),  # depth_net.*, pose_net.*, feature_net.*
     'step': int, 'optimizer': state dict or None, 'extra': dict (plain values / tensors)}

It is read with ``torch.load(weights_only=True)``, so only tensors and plain Python values may
be stored in it (no arbitrary pickled objects). Official FeatDepth and Monodepth2 weights are
imported with ``fmdepth convert`` (see ``convert.py``).
"""

import os
from typing import Callable, Optional, Tuple

import torch

from .atomic_io import open_atomic
from .config import Config
from .encoder_weights import without_encoder_weights
from .errors import CheckpointError

FORMAT_NAME = 'fmdepth_ros'
CHECKPOINT_VERSION = 1


def build_model(cfg: Config):
    """Build an untrained ``FeatDepthModel`` for ``cfg``."""
    from .model import FeatDepthModel
    return FeatDepthModel(cfg)


def _unwrap(model):
    """Return the bare module of a (Distributed)DataParallel wrapper."""
    return getattr(model, 'module', model)


def _one_line(exc: BaseException, limit=160) -> str:
    text = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {text[0][:limit] if text else ""}'.rstrip(': ')


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the target directory, fsync, then ``os.replace``.

    A crash or kill at any point leaves either the previous file or the new one, never a torn
    file. The temporary file is removed when saving raises.
    """
    with open_atomic(path, 'wb') as f:
        torch.save(obj, f)


def save_checkpoint(path, model, cfg: Config, step=0, optimizer=None, extra=None) -> None:
    """Save ``model`` (a FeatDepthModel, possibly DDP-wrapped) and ``cfg`` atomically.

    Args:
        path: destination file (its directory is created if needed).
        model: module whose ``state_dict()`` is stored.
        cfg: the configuration the model was built from.
        step: global training step.
        optimizer: optional ``torch.optim.Optimizer`` (its state dict is stored).
        extra: optional dict of plain values / tensors (scheduler, RNG states, ...).
    """
    payload = {
        'format': FORMAT_NAME,
        'version': CHECKPOINT_VERSION,
        'config': cfg.to_dict(),
        'state_dict': _unwrap(model).state_dict(),
        'step': int(step),
        'optimizer': optimizer.state_dict() if optimizer is not None else None,
        'extra': dict(extra) if extra else {},
    }
    atomic_torch_save(payload, path)


def torch_load_file(path, map_location='cpu', weights_only=True, error=CheckpointError):
    """``torch.load`` a file, turning every failure into ``error('<path>: <why>')`` (one line)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise error(f'{path}: no such file')
    if os.path.isdir(path):
        raise error(f'{path}: is a directory, expected a checkpoint file')
    if os.path.getsize(path) == 0:
        raise error(f'{path}: empty file (truncated checkpoint?)')
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - any failure here means "unreadable file"
        msg = str(exc)
        if 'central directory' in msg or 'EOF' in msg or isinstance(exc, EOFError):
            why = 'truncated or incomplete file'
        elif 'Unsupported global' in msg:
            found = [ln.strip() for ln in msg.splitlines() if 'Unsupported global' in ln]
            why = ('holds pickled objects other than tensors/plain values, refused by '
                   f'torch.load(weights_only=True): {found[0][:120]}')
            raise error(f'{path}: {why}') from None
        else:
            why = 'not a readable torch file (corrupt?)'
        raise error(f'{path}: {why} ({_one_line(exc, 100)})') from None


def _describe_foreign(obj) -> str:
    """Hint for files that are not ours but that ``fmdepth convert`` may import."""
    if isinstance(obj, dict):
        sd = obj.get('state_dict') if isinstance(obj.get('state_dict'), dict) else obj
        keys = [k for k in sd if isinstance(k, str)]
        if any(k.startswith(('DepthEncoder.', 'DepthDecoder.', 'Encoder.')) for k in keys):
            return '; it looks like an official FeatDepth file: import it with `fmdepth convert`'
        if any(k.startswith(('encoder.', 'decoder.', 'net.')) for k in keys):
            return '; it looks like a Monodepth2 file: import it with `fmdepth convert`'
    return ''


def read_checkpoint(path, map_location='cpu') -> dict:
    """Load and validate the raw checkpoint dict (no model is built)."""
    path = os.fspath(path)
    ckpt = torch_load_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get('format') != FORMAT_NAME:
        raise CheckpointError(f'{path}: not an fmdepth_ros checkpoint{_describe_foreign(ckpt)}')
    version = ckpt.get('version')
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f'{path}: checkpoint version {version!r} is not supported '
                              f'(this fmdepth_ros reads up to {CHECKPOINT_VERSION})')
    for key, kind in (('config', dict), ('state_dict', dict)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f'{path}: checkpoint has no valid {key!r} entry')
    return ckpt


def config_of(ckpt: dict, path='checkpoint') -> Config:
    """Return the ``Config`` stored in a raw checkpoint dict (``CheckpointError`` if invalid)."""
    try:
        return Config.from_dict(ckpt['config'])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f'{path}: invalid config in checkpoint ({exc})') from None


def load_state_strict(module, state_dict, path='checkpoint') -> None:
    """``load_state_dict(strict=True)`` with a one-line ``CheckpointError`` naming a few keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
             for k, v in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        for name, items in (('missing', missing), ('unexpected', unexpected),
                            ('wrong shape', wrong)):
            if items:
                parts.append(f'{len(items)} {name} (e.g. {", ".join(items[:3])})')
        raise CheckpointError(f'{path}: weights do not match the model: {"; ".join(parts)}')
    module.load_state_dict(state_dict, strict=True)


def load_checkpoint(path, map_location='cpu',
                    model_factory: Optional[Callable[[Config], torch.nn.Module]] = None
                    ) -> Tuple[torch.nn.Module, Config, dict]:
    """Load a checkpoint written by ``save_checkpoint``.

    Args:
        path: checkpoint file.
        map_location: device for the tensors and the returned model.
        model_factory: builds the model from the config (default ``build_model``).

    Returns:
        (model in eval mode on ``map_location``, cfg, info) with info = {'step', 'optimizer',
        'extra', 'version'}.

    Raises:
        CheckpointError: missing, truncated, corrupt, foreign or mismatching file (one line).
    """
    path = os.fspath(path)
    ckpt = read_checkpoint(path, map_location)
    cfg = config_of(ckpt, path)
    # the stored weights replace any ImageNet init: do not read cfg's (maybe gone) weights file
    model = (model_factory or build_model)(without_encoder_weights(cfg))
    load_state_strict(model, ckpt['state_dict'], path)
    if map_location is not None and not callable(map_location) \
            and not isinstance(map_location, dict):
        model.to(map_location)
    model.eval()
    info = {'step': int(ckpt.get('step') or 0), 'optimizer': ckpt.get('optimizer'),
            'extra': ckpt.get('extra') or {}, 'version': ckpt['version']}
    return model, cfg, info


def export_checkpoint(src, dst, half=False) -> dict:
    """Write ``dst``: the model weights and config of checkpoint ``src``, no optimizer state.

    Args:
        src: checkpoint written by ``save_checkpoint`` (``fmdepth train`` / ``convert``).
        dst: output file, written atomically (a failed export leaves no partial file).
        half: store floating-point *parameters* as float16 (buffers stay as they are).

    Returns:
        dict: ``src_bytes``, ``dst_bytes``, ``step``, ``parameters`` (count), ``half``.

    Raises:
        CheckpointError: ``src`` is missing, corrupt or not an fmdepth_ros checkpoint.
    """
    if os.path.abspath(os.fspath(src)) == os.path.abspath(os.fspath(dst)):
        raise CheckpointError(f'{dst}: export would overwrite its source; choose another file')
    model, cfg, info = load_checkpoint(src, map_location='cpu')
    extra = {'exported_from': os.path.basename(os.fspath(src)),
             'exported_precision': 'fp16' if half else 'fp32'}
    if half:   # parameters only: BatchNorm statistics keep float32
        for param in model.parameters():
            if param.is_floating_point():
                param.data = param.data.half()
    save_checkpoint(dst, model, cfg, step=info['step'], optimizer=None, extra=extra)
    return {'src_bytes': os.path.getsize(src), 'dst_bytes': os.path.getsize(dst),
            'step': info['step'], 'half': bool(half),
            'parameters': sum(p.numel() for p in model.parameters())}


__all__ = ['CheckpointError', 'save_checkpoint', 'load_checkpoint', 'build_model',
           'read_checkpoint', 'config_of', 'load_state_strict', 'atomic_torch_save',
           'torch_load_file', 'export_checkpoint', 'FORMAT_NAME', 'CHECKPOINT_VERSION']

"""Read torchvision-layout ResNet weight files (e.g. ImageNet ``resnet50-*.pth``) from disk.

The networks take the loaded state dict (``encoder_weights=``) and read no files themselves;
this is the one place that does. Nothing is downloaded.

Each encoder has its own setting in ``cfg.model`` (the official code initialises all three
from ImageNet, each at its own ResNet depth): ``encoder_weights`` (DepthNet),
``pose_encoder_weights`` (PoseNet; its 6-channel ``conv1`` is the file's 3-channel one
repeated for both frames and halved) and ``feature_encoder_weights`` (FeatureNet).
"""

import os
from typing import Dict, Optional

import torch

from .errors import WeightsError

#: ``cfg.model`` setting of each network's encoder file: {network attribute: setting}
ENCODER_WEIGHT_SETTINGS = {'depth_net': 'encoder_weights',
                           'pose_net': 'pose_encoder_weights',
                           'feature_net': 'feature_encoder_weights'}


def read_encoder_weights(path) -> Dict[str, torch.Tensor]:
    """Return the ResNet state dict stored in the LOCAL file ``path`` (CPU tensors).

    Accepts a bare state dict or a dict with a ``state_dict`` entry. Raises ``WeightsError``
    naming the file when it is missing, not a torch file, or holds no state dict; whether it
    matches an encoder is checked when it is loaded (``networks.resnet.load_encoder_weights``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f'encoder weights file not found: {path}')
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not usable"
        raise WeightsError(f'cannot read encoder weights {path}: '
                           f'{type(exc).__name__}: {str(exc).splitlines()[0][:120]}') from None
    if isinstance(loaded, dict) and isinstance(loaded.get('state_dict'), dict):
        loaded = loaded['state_dict']
    if not isinstance(loaded, dict):
        raise WeightsError(f'encoder weights {path}: expected a state dict, '
                           f'got {type(loaded).__name__}')
    return loaded


def encoder_state_dicts(model_cfg) -> Dict[str, Optional[Dict[str, torch.Tensor]]]:
    """Return {network attribute: state dict or None} for the encoder files of ``model_cfg``.

    A file named by several settings is read once. The dicts are not checked here: each
    network checks its own (``networks.resnet.load_encoder_weights``: every layer or an error).
    """
    read = {}
    out = {}
    for net, setting in ENCODER_WEIGHT_SETTINGS.items():
        path = getattr(model_cfg, setting)
        if not path:
            out[net] = None
            continue
        key = os.path.abspath(os.fspath(path))
        if key not in read:
            read[key] = read_encoder_weights(path)
        out[net] = read[key]
    return out


def without_encoder_weights(cfg):
    """Return a copy of ``cfg`` whose encoder weight settings are all None (no file is read)."""
    return cfg.merged({'model': dict.fromkeys(ENCODER_WEIGHT_SETTINGS.values())})


__all__ = ['read_encoder_weights', 'encoder_state_dicts', 'without_encoder_weights',
           'ENCODER_WEIGHT_SETTINGS']

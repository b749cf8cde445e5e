"""Read torchvision-layout ResNet weight files (e.g. ImageNet ``resnet50-*.pth``) from disk.

The networks take the loaded state dict (``encoder_weights=``) and read no files themselves;
this is the one place that does. Nothing is downloaded.
"""

import os
from typing import Dict

import torch

from .errors import WeightsError


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

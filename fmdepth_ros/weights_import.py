"""Import official FeatDepth or Monodepth2 weights into our checkpoint (``fmdepth convert``).

Sources:

* **FeatDepth** (``--format featdepth``): the mmcv-style ``.pth`` of the official code, a dict
  whose ``state_dict`` holds ``DepthEncoder.*``, ``DepthDecoder.*``, ``PoseEncoder.*``,
  ``PoseDecoder.*`` and ``extractor.*`` (``mono_fm``) or ``Encoder.*``/``Decoder.*``
  (``mono_fm_joint``), plus optionally the separate autoencoder file (``--autoencoder``,
  ``Encoder.*``/``Decoder.*``) for the FeatureNet decoder. Released models run at 320x1024
  (the default here); PoseNet input is 192x640 as in the official code.
* **Monodepth2** (``--format monodepth2``): a folder (or its ``encoder.pth``) with
  ``encoder.pth`` (weights + ``height``/``width``/``use_stereo``), ``depth.pth`` and optionally
  ``pose_encoder.pth``/``pose.pth``. The pose decoder's first transform (of the 2 it
  predicts) is kept; PoseNet input is the model's own size, as in Monodepth2.

The module trees of ``fmdepth_ros.networks`` mirror both layouts, so conversion is a prefix
rename (and dropping the unused ImageNet classifier ``fc.*``); anything else is an error that
lists a few of the offending keys. Networks absent from the source keep their random
initialisation, which the command reports.
"""

import os
from typing import Dict, List, Optional, Tuple

from .checkpoint import build_model, load_state_strict, save_checkpoint, torch_load_file
from .config import Config
from .errors import ConversionError
from .networks.depth_net import check_input_size

#: (official prefix, our network, our prefix); the first matching prefix wins
FEATDEPTH_PREFIXES = (
    ('DepthEncoder.encoder.', 'depth_net', 'encoder.'),
    ('DepthDecoder.', 'depth_net', 'decoder.'),
    ('PoseEncoder.encoder.', 'pose_net', 'encoder.'),
    ('PoseDecoder.', 'pose_net', 'decoder.'),
    ('extractor.encoder.', 'feature_net', 'encoder.'),
    ('Encoder.encoder.', 'feature_net', 'encoder.'),
    ('Decoder.', 'feature_net', 'decoder.'),
)
#: Monodepth2 pose.pth ``net.<i>`` -> our PoseDecoder attribute
MONODEPTH2_POSE = {'net.0.': 'decoder.reduce.', 'net.1.': 'decoder.conv1.',
                   'net.2.': 'decoder.conv2.', 'net.3.': 'decoder.conv3.'}
FEATDEPTH_SIZE = (320, 1024)   # resolution of the released FeatDepth models
FEATDEPTH_POSE_SIZE = (192, 640)
MONODEPTH2_FILES = ('encoder.pth', 'depth.pth', 'pose_encoder.pth', 'pose.pth')


Parts = Dict[str, Dict]   # network name -> state dict in our key names


def _few(keys, n=4) -> str:
    keys = list(keys)
    more = f' and {len(keys) - n} more' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def strip_module_prefix(sd: dict) -> dict:
    """Drop a DataParallel ``module.`` prefix carried by every key."""
    if sd and all(isinstance(k, str) and k.startswith('module.') for k in sd):
        return {k[len('module.'):]: v for k, v in sd.items()}
    return sd


def resnet_depth(sd: dict, prefix: str, source: str) -> int:
    """Infer the ResNet depth (18/34/50) from the keys under ``prefix``."""
    if f'{prefix}conv1.weight' not in sd:
        raise ConversionError(f'{source}: no ResNet found under {prefix!r}')
    blocks = {int(k[len(prefix) + len('layer3.'):].split('.')[0])
              for k in sd if k.startswith(f'{prefix}layer3.')}
    bottleneck = f'{prefix}layer1.0.conv3.weight' in sd
    depth = {(True, 6): 50, (False, 2): 18, (False, 6): 34}.get((bottleneck, len(blocks)))
    if depth is None:
        raise ConversionError(f'{source}: unsupported ResNet under {prefix!r} '
                              f'({len(blocks)} blocks in layer3; 18, 34 and 50 are supported)')
    return depth


def _drop_classifier(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not k.startswith('encoder.fc.')}


def split_featdepth(sd: dict, source: str) -> Parts:
    """Rename an official FeatDepth state dict into {network: state dict with our keys}."""
    parts: Parts = {}
    unknown = []
    for key, value in strip_module_prefix(sd).items():
        for theirs, net, ours in FEATDEPTH_PREFIXES:
            if key.startswith(theirs):
                parts.setdefault(net, {})[ours + key[len(theirs):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f'{source}: {len(unknown)} keys of no known FeatDepth module: '
                              f'{_few(unknown)}')
    return {net: _drop_classifier(p) for net, p in parts.items()}


def _state_dict_of(obj, source: str) -> dict:
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f'{source}: no state dict found')
    return obj


def _load(path: str, trust_pickle: bool):
    try:
        return torch_load_file(path, 'cpu', weights_only=not trust_pickle,
                               error=ConversionError)
    except ConversionError as exc:
        if 'weights_only' in str(exc):
            raise ConversionError(f'{exc}; if you trust this file, rerun with '
                                  f'--trust-pickle') from None
        raise


def read_featdepth(src: str, autoencoder: Optional[str] = None,
                   trust_pickle: bool = False, loaded=None) -> Tuple[Parts, List[str]]:
    """Read the official checkpoint (+ autoencoder file) -> (parts, notes).

    ``loaded``: the already ``torch.load``-ed ``src`` (to avoid reading it twice).
    """
    sd = _state_dict_of(_load(src, trust_pickle) if loaded is None else loaded, src)
    parts = split_featdepth(sd, src)
    if 'depth_net' not in parts:
        if 'feature_net' in parts:
            raise ConversionError(f'{src}: this is an autoencoder (FeatureNet) file; pass the '
                                  f'depth checkpoint as SRC and this file with --autoencoder')
        raise ConversionError(f'{src}: no DepthEncoder/DepthDecoder keys: not a FeatDepth '
                              f'checkpoint')
    notes = []
    if autoencoder:
        ae = split_featdepth(_state_dict_of(_load(autoencoder, trust_pickle), autoencoder),
                             autoencoder)
        if set(ae) != {'feature_net'}:
            raise ConversionError(f'{autoencoder}: expected only Encoder.*/Decoder.* keys of '
                                  f'the FeatDepth autoencoder')
        if 'feature_net' in parts:
            notes.append("FeatureNet taken from the autoencoder file (the checkpoint's "
                         'extractor is ignored)')
        parts['feature_net'] = ae['feature_net']
    return parts, notes


def _monodepth2_paths(src: str) -> Dict[str, str]:
    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    paths = {name: os.path.join(folder, name) for name in MONODEPTH2_FILES}
    for name in ('encoder.pth', 'depth.pth'):
        if not os.path.isfile(paths[name]):
            raise ConversionError(f'{paths[name]}: missing (a Monodepth2 model folder holds '
                                  f'{", ".join(MONODEPTH2_FILES)})')
    return paths


def read_monodepth2(src: str, trust_pickle: bool = False
                    ) -> Tuple[Parts, List[str], Tuple[int, int]]:
    """Read a Monodepth2 model folder -> (parts, notes, (height, width) it was trained at)."""
    paths = _monodepth2_paths(src)
    enc = _state_dict_of(_load(paths['encoder.pth'], trust_pickle), paths['encoder.pth'])
    height, width = enc.get('height'), enc.get('width')
    notes = []
    if enc.get('use_stereo'):
        notes.append('Monodepth2 model trained with stereo: multiply its depth by 5.4 for '
                     'metres (KITTI baseline 0.54 m / 0.1)')
    enc = {k: v for k, v in strip_module_prefix(enc).items()
           if k not in ('height', 'width', 'use_stereo')}
    dec = strip_module_prefix(_state_dict_of(_load(paths['depth.pth'], trust_pickle),
                                             paths['depth.pth']))
    bad = [k for k in enc if not k.startswith('encoder.')]
    bad += [k for k in dec if not k.startswith('decoder.')]
    if bad:
        raise ConversionError(f'{os.path.dirname(paths["encoder.pth"])}: unexpected keys in '
                              f'encoder.pth/depth.pth: {_few(bad)}')
    parts: Parts = {'depth_net': _drop_classifier(dict(enc))}
    parts['depth_net'].update({'decoder.' + k: v for k, v in dec.items()})
    have_pose = [os.path.isfile(paths[n]) for n in ('pose_encoder.pth', 'pose.pth')]
    if all(have_pose):
        parts['pose_net'] = _monodepth2_pose(paths, trust_pickle)
    else:
        notes.append('no pose_encoder.pth/pose.pth: PoseNet keeps its random initialisation')
    if not isinstance(height, int) or not isinstance(width, int):
        height = width = None
    return parts, notes, (height, width)


def _monodepth2_pose(paths, trust_pickle) -> dict:
    penc = strip_module_prefix(_state_dict_of(_load(paths['pose_encoder.pth'], trust_pickle),
                                              paths['pose_encoder.pth']))
    pdec = strip_module_prefix(_state_dict_of(_load(paths['pose.pth'], trust_pickle),
                                              paths['pose.pth']))
    bad = [k for k in penc if not k.startswith('encoder.')]
    out = _drop_classifier(dict(penc))
    for key, value in pdec.items():
        prefix = next((p for p in MONODEPTH2_POSE if key.startswith(p)), None)
        if prefix is None:
            bad.append(key)
            continue
        if prefix == 'net.3.':
            if value.shape[0] % 6:
                bad.append(f'{key} {tuple(value.shape)}')
                continue
            value = value[:6].clone()   # first of the predicted transforms
        out[MONODEPTH2_POSE[prefix] + key[len(prefix):]] = value
    if bad:
        raise ConversionError(f'{paths["pose.pth"]}: unsupported Monodepth2 pose network '
                              f'(only "separate_resnet" is): {_few(bad)}')
    conv1 = out.get('encoder.conv1.weight')
    if conv1 is not None and conv1.shape[1] != 6:
        raise ConversionError(f'{paths["pose_encoder.pth"]}: pose encoder takes '
                              f'{conv1.shape[1]} channels, expected 6 (2 frames)')
    return out


def detect_format(src: str, trust_pickle: bool = False):
    """Return (``'featdepth'`` or ``'monodepth2'``, the loaded file or None) for a path."""
    if os.path.isdir(src) or os.path.basename(src) in MONODEPTH2_FILES:
        return 'monodepth2', None
    obj = _load(src, trust_pickle)
    if isinstance(obj, dict) and 'height' in obj and 'encoder.conv1.weight' in obj:
        return 'monodepth2', None
    return 'featdepth', obj


def _fill_bn_counters(net, sd: dict) -> dict:
    """Add BatchNorm ``num_batches_tracked`` counters that old checkpoints lack."""
    own = net.state_dict()
    sd = dict(sd)
    for k, v in own.items():
        if k.endswith('num_batches_tracked') and k not in sd:
            sd[k] = v.clone()
    return sd


def build_converted_config(fmt: str, parts: Parts, size, base: Optional[Config] = None,
                           source: str = 'source') -> Config:
    """Config whose networks match the converted weights (other settings from ``base``)."""
    cfg = Config.from_dict((base or Config()).to_dict())
    m = cfg.model
    m.height, m.width = int(size[0]), int(size[1])
    m.depth_layers = resnet_depth(parts['depth_net'], 'encoder.', source)
    m.depth_decoder = fmt
    if 'pose_net' in parts:
        m.pose_layers = resnet_depth(parts['pose_net'], 'encoder.', source)
    if 'feature_net' in parts:
        m.feature_layers = resnet_depth(parts['feature_net'], 'encoder.', source)
    if fmt == 'featdepth':
        m.pose_height, m.pose_width = FEATDEPTH_POSE_SIZE
    else:
        m.pose_height, m.pose_width = m.height, m.width
    m.encoder_weights = m.pose_encoder_weights = m.feature_encoder_weights = None
    return cfg


def convert(src: str, dst: str, autoencoder: Optional[str] = None, fmt: str = 'auto',
            height: Optional[int] = None, width: Optional[int] = None,
            base_config: Optional[Config] = None, trust_pickle: bool = False,
            model_factory=None) -> dict:
    """Convert ``src`` into our checkpoint ``dst``; return a summary dict (format, cfg, notes).

    Raises:
        ConversionError / CheckpointError: one-line message naming the offending file.
    """
    src = os.fspath(src)
    if not os.path.exists(src):
        raise ConversionError(f'{src}: no such file or folder')
    loaded = None
    if fmt == 'auto':
        fmt, loaded = detect_format(src, trust_pickle)
    if fmt == 'featdepth':
        if os.path.isdir(src):
            raise ConversionError(f'{src}: is a folder; a FeatDepth checkpoint is one .pth file')
        parts, notes = read_featdepth(src, autoencoder, trust_pickle, loaded)
        size = FEATDEPTH_SIZE
    elif fmt == 'monodepth2':
        if autoencoder:
            raise ConversionError('--autoencoder applies to FeatDepth checkpoints only')
        parts, notes, size = read_monodepth2(src, trust_pickle)
        if size[0] is None:
            size = (192, 640)
            notes.append('encoder.pth has no height/width: assuming 192x640')
    else:
        raise ConversionError(f'unknown format {fmt!r} (auto, featdepth, monodepth2)')
    size = (height or size[0], width or size[1])
    try:
        check_input_size(*size)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None
    cfg = build_converted_config(fmt, parts, size, base_config, src)
    model = (model_factory or build_model)(cfg)
    for name in ('depth_net', 'pose_net', 'feature_net'):
        net = getattr(model, name)
        sd = parts.get(name)
        if sd is None:
            notes.append(f'{name}: not in the source, random initialisation')
            continue
        if name == 'feature_net' and not any(k.startswith('decoder.') for k in sd):
            notes.append('feature_net: encoder only (no autoencoder file): its reconstruction '
                         'decoder keeps its random initialisation')
            net = net.encoder
            sd = {k[len('encoder.'):]: v for k, v in sd.items()}
        load_state_strict(net, _fill_bn_counters(net, sd), f'{src} ({name})')
    extra = {'converted_from': {'format': fmt, 'source': os.path.abspath(src),
                                'autoencoder': os.path.abspath(autoencoder) if autoencoder
                                else None, 'notes': list(notes)}}
    save_checkpoint(dst, model, cfg, step=0, extra=extra)
    return {'format': fmt, 'config': cfg, 'notes': notes, 'networks': sorted(parts)}


__all__ = ['convert', 'ConversionError', 'split_featdepth',
           'read_featdepth', 'read_monodepth2', 'detect_format', 'resnet_depth',
           'build_converted_config']

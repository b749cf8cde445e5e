"""Configuration dataclasses with the paper's defaults, loadable from and savable to YAML.

Defaults follow the official FeatDepth configs (``cfg_kitti_fm``), see
``docs/architecture.md`` and the paper (Shu et al., ECCV 2020). Every weight is configurable.
"""

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Optional, Tuple

import yaml


@dataclass
class ModelConfig:
    """Network shapes. Sizes are in pixels, depths in metres (up to scale for monocular)."""

    height: int = 192                 # network input height, divisible by 32
    width: int = 640                  # network input width, divisible by 32
    depth_layers: int = 50            # ResNet depth of the DepthNet encoder (18, 34, 50)
    depth_decoder: str = 'featdepth'  # 'featdepth' (official CRP decoder) or 'monodepth2'
    pose_layers: int = 18             # ResNet depth of the PoseNet encoder
    feature_layers: int = 50          # ResNet depth of the FeatureNet autoencoder
    pose_height: int = 192            # PoseNet input is always resized to this (official code)
    pose_width: int = 640
    min_depth: float = 0.1
    max_depth: float = 100.0
    frame_ids: Tuple[int, ...] = (0, -1, 1)  # target first, then sources; 's': stereo (MS)
    num_scales: int = 4
    pose_translation_scale: float = 0.01     # PoseNet raw translation x this (official 0.01)
    # MS training (frame 's', see fmdepth_ros/stereo.py): stereo_T translation in network
    # depth units (official KITTI loader: 0.015) and the rig's true baseline in metres; depth
    # is learnt in units of stereo_baseline_m / stereo_translation metres (official: 36).
    stereo_translation: float = 0.015
    stereo_baseline_m: float = 0.54
    # DepthNet and PoseNet see the luma of their RGB input, replicated to 3 channels: for
    # models trained on grey cameras (KITTI odometry cam0), so colour input at test time is
    # what they were trained on
    grey_input: bool = False
    # Local torchvision-layout ImageNet ResNet .pth files, one per encoder (None: random init).
    encoder_weights: Optional[str] = None          # DepthNet encoder (ResNet-depth_layers)
    pose_encoder_weights: Optional[str] = None     # PoseNet encoder (ResNet-pose_layers)
    feature_encoder_weights: Optional[str] = None  # FeatureNet encoder (ResNet-feature_layers)


@dataclass
class LossConfig:
    """Loss weights; defaults are the official code's (per ``featdepth.md``)."""

    ssim_weight: float = 0.85         # photometric = a*SSIM + (1-a)*L1
    automask: bool = True             # Monodepth2 auto-mask (official MS config: off)
    feature_metric_weight: float = 1e-3
    smoothness_weight: float = 1e-3
    disp_mean_normalise: bool = True  # smoothness on d / mean(d) (official MS config: off)
    discriminative_weight: float = 1e-3
    convergent_weight: float = 1e-3
    use_feature_metric: bool = True


@dataclass
class TrainConfig:
    """Optimisation settings for both training stages."""

    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    warmup_ratio: float = 1.0 / 3.0
    lr_milestones: Tuple[int, ...] = (20, 30)   # epochs, x0.5 each
    epochs: int = 40
    feature_epochs: int = 30
    feature_steps: Optional[int] = None         # length of stage 1 (FeatureNet) in steps
    depth_steps: Optional[int] = None           # length of stage 2 in steps (None: epochs)
    precision: str = 'fp32'                     # network precision: fp32, bf16, fp16 or auto
    channels_last: bool = False                 # NHWC memory format for the networks
    frame_cache_mb: int = 0                     # decoded, resized frames kept in memory
    grad_clip: float = 35.0
    num_workers: int = 2
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_epoch_checkpoints: int = 5             # last N epoch_<k>.pt kept; 0: none written
    amp: bool = True                            # autocast on CUDA only
    seed: int = 0
    flip_prob: float = 0.5
    color_jitter_prob: float = 0.5


@dataclass
class RefineConfig:
    """Online refinement (paper: 20 iterations per test sample)."""

    iterations: int = 20
    lr: float = 1e-4
    target: str = 'all'               # 'all' (DepthNet + PoseNet, as the official code) or
    #                                   'decoder' (depth decoder only: cheaper, less effective)
    guard: bool = True                # revert when the refined loss gets worse or non-finite
    batchnorm: str = 'eval'           # BatchNorm during the steps: 'eval' or 'train' (batch)
    min_motion: float = 0.0           # skip windows whose frames differ less (0: refine all)
    queue_size: int = 2


@dataclass
class Config:
    """Top-level configuration (what a YAML config file holds)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)

    def to_dict(self):
        """Plain nested dict (tuples become lists) for YAML / checkpoints."""
        return _to_plain(asdict(self))

    @classmethod
    def from_dict(cls, data):
        """Build from a (possibly partial) nested dict; unknown keys raise ValueError."""
        return _validated(_update(cls(), data or {}, 'config'))

    def merged(self, data):
        """Return a copy with the (partial) nested dict ``data`` applied."""
        return _validated(_update(Config.from_dict(self.to_dict()), data or {}, 'config'))


def _to_plain(obj):
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _update(obj, data, where):
    if not isinstance(data, dict):
        raise ValueError(f'{where}: expected a mapping, got {type(data).__name__}')
    known = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f'{where}: unknown key {key!r} (known: {", ".join(known)})')
        current = getattr(obj, key)
        if is_dataclass(current):
            _update(current, value, f'{where}.{key}')
        elif isinstance(current, tuple) or (current is None and isinstance(value, list)):
            setattr(obj, key, tuple(value) if value is not None else None)
        else:
            setattr(obj, key, value)
    return obj


def _validated(cfg):
    """Check the values that would fail deep inside training; ``ConfigError`` (one line)."""
    from fmdepth_ros.errors import ConfigError
    from fmdepth_ros.stereo import check_frame_ids

    m = cfg.model
    try:
        m.frame_ids = check_frame_ids(m.frame_ids)
    except ValueError as exc:
        raise ConfigError(f'config.model.{exc}') from None
    for key in ('stereo_translation', 'stereo_baseline_m'):
        value = getattr(m, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f'config.model.{key} must be a number > 0, got {value!r}')
    return cfg


def load_config(path=None, overrides=None):
    """Load a YAML config (paper defaults for missing keys), then apply ``overrides`` (dict)."""
    cfg = Config()
    if path:
        with open(path, 'r', encoding='utf-8') as f:
            data = yaml.safe_load(f) or {}
        cfg = Config.from_dict(data)
    if overrides:
        cfg = cfg.merged(overrides)
    return cfg


def save_config(cfg, path):
    """Write ``cfg`` as YAML."""
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)


def small_cpu_config():
    """Return a small, fast config for CPU tests, demos and benchmarks (ResNet-18, 64x192)."""
    return Config.from_dict({
        'model': {'height': 64, 'width': 192, 'depth_layers': 18, 'feature_layers': 18,
                  'pose_height': 64, 'pose_width': 192},
        'train': {'batch_size': 2, 'num_workers': 0, 'amp': False, 'warmup_steps': 0},
    })


__all__ = ['Config', 'ModelConfig', 'LossConfig', 'TrainConfig', 'RefineConfig',
           'load_config', 'save_config', 'small_cpu_config']

"""``FeatDepthModel``: DepthNet + PoseNet + FeatureNet and the loss assembly on a batch.

Stage 1 (:meth:`FeatDepthModel.feature_losses`) trains the FeatureNet autoencoder with the
reconstruction, discriminative and convergent losses. Stage 2
(:meth:`FeatDepthModel.depth_losses`) trains DepthNet and PoseNet with the photometric,
feature-metric and smoothness losses while the FeatureNet is frozen
(:meth:`FeatDepthModel.freeze_feature_net`). The loss layout follows the official
``mono_fm`` model (see ``losses.py`` and ``shared/research/featdepth.md`` section 2).

Batch format (``docs/architecture.md``)::

    {'images':     [B, F, 3, H, W] RGB in [0, 1], order = cfg.model.frame_ids, not augmented,
     'images_aug': [B, F, 3, H, W] network inputs (optional, defaults to 'images'),
     'K':          [B, 3, 3] (or [3, 3]) pixel intrinsics at H, W,
     'stereo_T':   [B, 4, 4] (or [4, 4]) T_src_tgt of frame 's', needed when frame_ids holds
                   's' (MS training, ``fmdepth_ros/stereo.py``), depth units,
     'depth_gt':   [B, 1, H, W] optional, 0 = invalid (unused by the losses)}

Frame ``'s'`` (the other stereo camera) is warped with the fixed ``stereo_T`` instead of a
PoseNet output and joins the per-pixel minimum of the photometric and feature-metric losses
like any temporal source (official ``mono_fm``).
"""

from contextlib import nullcontext
from typing import Dict, Optional, Tuple

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from . import geometry, losses
from .config import Config
from .encoder_weights import encoder_state_dicts, ENCODER_WEIGHT_SETTINGS
from .errors import WeightsError
from .networks import DepthNet, disp_to_depth, FeatureNet, PoseNet
from .stereo import check_frame_ids, STEREO_ID

__all__ = ['FeatDepthModel']


def _to_float(value):
    """Cast the floating tensors of a network output (tensor, tuple, list, dict) to float32."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _to_float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    return value


def _upsample(x: Tensor, size) -> Tensor:
    """Bilinear resize of ``[B, C, h, w]`` to ``size`` (no-op when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)


class FeatDepthModel(nn.Module):
    """The three FeatDepth networks plus the self-supervised losses of both training stages.

    Args:
        cfg: :class:`fmdepth_ros.config.Config`. ``cfg.model.encoder_weights``,
            ``pose_encoder_weights`` and ``feature_encoder_weights`` (local torchvision-layout
            ResNet files, e.g. ImageNet) initialise the DepthNet, PoseNet and FeatureNet
            encoders, each on its own; a file must match its encoder's ResNet depth (every
            layer is loaded or ``WeightsError`` names the setting and the file).

    Attributes:
        depth_net: :class:`DepthNet`; pose_net: :class:`PoseNet`;
        feature_net: :class:`FeatureNet`; cfg: the config.
    """

    def __init__(self, cfg: Config):
        """Build the networks described by ``cfg.model``."""
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        try:
            check_frame_ids(m.frame_ids)
        except ValueError as exc:
            raise ValueError(f'cfg.model.{exc}') from None
        weights = encoder_state_dicts(m)
        builders = {
            'depth_net': lambda sd: DepthNet(m.depth_layers, m.depth_decoder, m.min_depth,
                                             m.max_depth, encoder_weights=sd,
                                             grey_input=m.grey_input),
            'pose_net': lambda sd: PoseNet(m.pose_layers, (m.pose_height, m.pose_width),
                                           encoder_weights=sd,
                                           translation_scale=m.pose_translation_scale,
                                           grey_input=m.grey_input),
            'feature_net': lambda sd: FeatureNet(m.feature_layers, encoder_weights=sd)}
        for name, build in builders.items():
            try:
                setattr(self, name, build(weights[name]))
            except WeightsError as exc:
                setting = ENCODER_WEIGHT_SETTINGS[name]
                raise WeightsError(f'model.{setting} {getattr(m, setting)}: {exc}') from None
        self.feature_net_frozen = False
        self._autocast: Optional[Tuple[str, torch.dtype]] = None

    # ------------------------------------------------------------------ precision
    def set_network_precision(self, device_type: str, dtype: Optional[torch.dtype]) -> None:
        """Run the three networks under ``torch.autocast(device_type, dtype)``; None: fp32.

        Only the networks run in reduced precision; their outputs are cast back to float32
        before any geometry or loss. Back-projection multiplies pixel coordinates (up to
        ~1000) by depth: in bf16 (8 significant bits) or fp16 they would be off by whole
        pixels, which the photometric loss cannot tolerate.
        """
        self._autocast = None if dtype is None else (str(device_type), dtype)

    def _run(self, net, *inputs):
        """Call ``net(*inputs)`` (a network or its method) under the network precision."""
        if self._autocast is None:
            return net(*inputs)
        device_type, dtype = self._autocast
        with torch.autocast(device_type=device_type, dtype=dtype):
            return _to_float(net(*inputs))

    # ------------------------------------------------------------------ set-up helpers
    def freeze_feature_net(self, frozen: bool = True) -> None:
        """Freeze (stage 2) or unfreeze (stage 1) the FeatureNet.

        Frozen: no gradients for its parameters and eval mode (fixed BatchNorm statistics, so
        the features are a fixed function of the image) that survives ``model.train()``. The
        official code keeps the frozen net in train mode; see ``trainer.set_stage_mode``.
        """
        self.feature_net_frozen = bool(frozen)
        for p in self.feature_net.parameters():
            p.requires_grad_(not frozen)
        self.feature_net.train(self.training and not frozen)

    def train(self, mode: bool = True):
        """Set train/eval mode; a frozen FeatureNet stays in eval mode."""
        super().train(mode)
        if self.feature_net_frozen:
            self.feature_net.eval()
        return self

    def _source_ids(self):
        return [(i, fid) for i, fid in enumerate(self.cfg.model.frame_ids) if fid != 0]

    def _check_images(self, images: Tensor, name: str) -> None:
        n = len(self.cfg.model.frame_ids)
        if images.dim() != 5 or images.shape[2] != 3 or images.shape[1] != n:
            raise ValueError(f"batch['{name}'] must be [B,{n},3,H,W] (frame_ids "
                             f'{tuple(self.cfg.model.frame_ids)}), got {tuple(images.shape)}')

    # ------------------------------------------------------------------ poses
    def predict_poses(self, images: Tensor) -> Dict[int, Tensor]:
        """Relative poses of the temporal source frames w.r.t. the target frame 0.

        The stereo frame ``'s'`` has no PoseNet pose (its ``stereo_T`` comes with the batch,
        :meth:`source_poses`). PoseNet sees time-ordered pairs: ``[I_fid, I_0]`` for
        ``fid < 0`` (its output, ``T_0_fid``, is inverted) and ``[I_0, I_fid]`` for
        ``fid > 0`` (output ``T_fid_0``).

        Args:
            images: ``[B, F, 3, H, W]`` in [0, 1], order ``cfg.model.frame_ids`` (augmented
                network inputs during training).

        Returns:
            ``{fid: T_src_tgt [B, 4, 4]}`` for every source ``fid``: maps target-camera points
            into camera ``fid`` (what :func:`geometry.warp` takes).
        """
        self._check_images(images, 'images_aug')
        target = images[:, 0]
        poses = {}
        for i, fid in self._source_ids():
            if fid == STEREO_ID:
                continue
            if fid < 0:
                axisangle, translation = self._run(self.pose_net, images[:, i], target)
            else:
                axisangle, translation = self._run(self.pose_net, target, images[:, i])
            poses[fid] = geometry.pose_from_axisangle(axisangle, translation, invert=fid < 0)
        return poses

    def source_poses(self, batch, images_aug: Tensor) -> Dict:
        """Return ``{fid: T_src_tgt [B, 4, 4]}``: PoseNet's, and ``batch['stereo_T']`` for 's'."""
        poses = self.predict_poses(images_aug)
        if STEREO_ID in self.cfg.model.frame_ids:
            T = batch.get('stereo_T')
            if T is None:
                raise ValueError("frame_ids holds 's' but the batch has no 'stereo_T' "
                                 '(a stereo-pair dataset provides it)')
            b = images_aug.shape[0]
            T = T.to(images_aug.dtype)
            poses[STEREO_ID] = T.expand(b, 4, 4) if T.dim() == 2 else T
        return poses

    # ------------------------------------------------------------------ stage 2
    def depth_losses(self, batch) -> Tuple[Tensor, Dict[str, float], Dict]:
        """Stage-2 loss: photometric (min reprojection + auto-mask) + feature-metric + smoothness.

        For each decoder scale s the disparity is bilinearly upsampled to the full ``H, W``
        and the (non-augmented) sources are warped with the full-resolution ``K``. The
        feature-metric term warps FeatureNet level-0 features (``H/2 x W/2``, ``K / 2``) with
        the scale-0 depth. Smoothness uses each disparity at its native decoder resolution.
        Works for both decoders (featdepth: 1/2..1/16, monodepth2: 1..1/8).

        Returns:
            ``(total [], logs {name: float}, outputs)``; outputs hold ``('disp', s)``,
            ``('depth', 0)`` [B,1,H,W] metres, ``('T', fid)`` [B,4,4] T_src_tgt,
            ``('warped', fid)`` [B,3,H,W] scale-0 warps, ``'automask'`` [B,1,H,W] (1 = kept)
            and ``'min_error'`` [B,1,H,W] (scale 0).
        """
        cfg_m, cfg_l = self.cfg.model, self.cfg.loss
        images = batch['images']
        images_aug = batch.get('images_aug', images)
        self._check_images(images, 'images')
        self._check_images(images_aug, 'images_aug')
        b, _, _, h, w = images.shape
        K = batch['K'].to(images.dtype)
        if K.dim() == 2:
            K = K.expand(b, 3, 3)
        target = images[:, 0]
        sources = {fid: images[:, i] for i, fid in self._source_ids()}

        disps = self._run(self.depth_net, images_aug[:, 0])
        poses = self.source_poses(batch, images_aug)
        scales = sorted(disps)[:cfg_m.num_scales]
        outputs = {('disp', s): disps[s] for s in scales}
        outputs.update({('T', fid): T for fid, T in poses.items()})

        identity = None
        if cfg_l.automask:
            # tie-breaking noise only while training, so eval-mode losses are deterministic
            noise = 1e-5 if self.training else 0.0
            identity = losses.identity_errors(list(sources.values()), target,
                                              cfg_l.ssim_weight, noise=noise)

        photometric, smoothness = [], []
        for s in scales:
            disp_full = _upsample(disps[s], (h, w))
            depth = disp_to_depth(disp_full, cfg_m.min_depth, cfg_m.max_depth)[1]
            errors = []
            for fid, src in sources.items():
                warped, _ = geometry.warp(src, depth, poses[fid], K)
                errors.append(losses.photometric_error(warped, target, cfg_l.ssim_weight))
                if s == scales[0]:
                    outputs[('warped', fid)] = warped
            min_error, index = losses.min_reprojection(errors, identity)
            photometric.append(min_error.mean())
            smoothness.append(losses.smoothness_loss(disps[s], target,
                                                     cfg_l.disp_mean_normalise))
            if s == scales[0]:
                outputs[('depth', 0)] = depth
                outputs['min_error'] = min_error
                n_id = len(identity) if identity is not None else 0
                outputs['automask'] = (index >= n_id).to(images.dtype)

        fm = None
        if cfg_l.use_feature_metric and cfg_l.feature_metric_weight != 0:
            fm = self._feature_metric(images, disps[scales[0]], poses, K)
        total, logs = losses.total_depth_loss(photometric, smoothness, fm, cfg_l)
        return total, logs, outputs

    def _feature_metric(self, images: Tensor, disp0: Tensor, poses: Dict,
                        K: Tensor) -> Tensor:
        """Feature-metric loss with FeatureNet level-0 features at half resolution."""
        cfg_m = self.cfg.model
        b, n, _, h, w = images.shape
        trainable = any(p.requires_grad for p in self.feature_net.parameters())
        with nullcontext() if trainable else torch.no_grad():
            feats = self._run(self.feature_net.encode, images.reshape(b * n, 3, h, w))[0]
        feats = feats.reshape(b, n, *feats.shape[1:])                  # B x F x C x h/2 x w/2
        fh, fw = feats.shape[-2:]
        disp = _upsample(disp0, (fh, fw))
        depth = disp_to_depth(disp, cfg_m.min_depth, cfg_m.max_depth)[1]
        K_feat = geometry.scale_intrinsics(K, fw / w, fh / h)
        warped = [geometry.warp(feats[:, i], depth, poses[fid], K_feat)[0]
                  for i, fid in self._source_ids()]
        return losses.feature_metric_loss(feats[:, 0], warped)

    # ------------------------------------------------------------------ stage 1
    def feature_losses(self, batch) -> Tuple[Tensor, Dict[str, float], Dict]:
        """Stage-1 loss of the FeatureNet on the target frame ``batch['images'][:, 0]``.

        Reconstruction (photometric error at 4 scales) + discriminative + convergent
        regularisers on the 5 encoder levels, weights from ``cfg.loss``.

        Returns:
            ``(total [], logs {name: float}, outputs)``; outputs hold ``('recon', s)``
            [B,3,H/2^s,W/2^s] and ``'features'`` (list of 5 levels).
        """
        images = batch['images']
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"batch['images'] must be [B,F,3,H,W], got {tuple(images.shape)}")
        image = images[:, 0]
        out = self._run(self.feature_net, image)
        recons = {key[1]: value for key, value in out.items()
                  if isinstance(key, tuple) and key[0] == 'recon'}
        total, logs = losses.feature_net_loss(image, out['features'], recons, self.cfg.loss)
        return total, logs, out

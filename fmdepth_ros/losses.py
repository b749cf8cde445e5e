"""Every loss of FeatDepth (Shu et al., ECCV 2020), as pure functions on tensors.

Formulas follow the official code (``sconlyshootery/FeatDepth`` ``mono_fm`` / ``mono_fm_joint``),
summarised in ``shared/research/featdepth.md`` section 2:

- robust L1 ``rho(a, b) = sqrt((a - b)^2 + eps^2)``, ``eps = 1e-3``;
- SSIM on 3x3 reflection-padded average pools, loss ``clamp((1 - SSIM) / 2, 0, 1)``;
- photometric error ``0.85 * SSIM + 0.15 * rho`` (channel means), per-pixel minimum over the
  source frames, Monodepth2 auto-mask (identity errors of the unwarped sources + 1e-5 noise);
- feature-metric loss: channel-mean ``rho`` between target features and warped source features,
  minimum over sources, spatial mean;
- discriminative loss ``-L1st`` (rewards large edge-aware first-order feature gradients) and
  convergent loss ``L2nd`` (penalises second-order gradients), ``e^-|dI|`` edge weights;
- edge-aware smoothness of the mean-normalised disparity, first + second order, ``e^-0.5|dI|``;
- FeatureNet reconstruction loss (photometric error of the reconstructions at 4 scales).

Images are ``[B, 3, H, W]`` in [0, 1]; error maps are ``[B, 1, H, W]``; scalar losses are 0-d.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
import torch.nn.functional as F

from .config import LossConfig

__all__ = ['robust_l1', 'ssim_loss', 'photometric_error', 'identity_errors', 'min_reprojection',
           'feature_metric_loss', 'image_gradients', 'first_order_edge_aware',
           'second_order_edge_aware', 'discriminative_loss', 'convergent_loss',
           'smoothness_loss', 'reconstruction_loss', 'feature_regularisation',
           'total_depth_loss', 'feature_net_loss']

_SSIM_C1 = 0.01 ** 2
_SSIM_C2 = 0.03 ** 2


def robust_l1(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Element-wise Charbonnier penalty ``sqrt((pred - target)^2 + eps^2)`` (same shape)."""
    return torch.sqrt((pred - target) ** 2 + eps ** 2)


def _local_mean(x: Tensor) -> Tensor:
    """3x3 mean with reflection padding; keeps ``[B, C, H, W]``."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode='reflect'), kernel_size=3, stride=1)


def ssim_loss(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel SSIM dissimilarity ``clamp((1 - SSIM(x, y)) / 2, 0, 1)``.

    Written from the SSIM definition (Wang et al. 2004) with 3x3 uniform windows and reflection
    padding, the window FeatDepth/Monodepth2 use. kornia's ``ssim_loss`` uses Gaussian windows and
    returns a mean, so it would not reproduce the paper's per-pixel map.

    Args:
        x, y: ``[B, C, H, W]`` images in [0, 1] (H, W >= 2).

    Returns:
        ``[B, C, H, W]`` in [0, 1].
    """
    mu_x, mu_y = _local_mean(x), _local_mean(y)
    var_x = _local_mean(x * x) - mu_x ** 2
    var_y = _local_mean(y * y) - mu_y ** 2
    cov_xy = _local_mean(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _SSIM_C1) * (2 * cov_xy + _SSIM_C2)
    den = (mu_x ** 2 + mu_y ** 2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return torch.clamp((1 - num / den) / 2, 0, 1)


def photometric_error(pred: Tensor, target: Tensor, ssim_weight: float = 0.85) -> Tensor:
    """Per-pixel photometric error ``a * SSIM + (1 - a) * rho``, each averaged over channels.

    Args:
        pred, target: ``[B, C, H, W]`` images in [0, 1].
        ssim_weight: ``a`` (0.85 in the paper).

    Returns:
        ``[B, 1, H, W]``.
    """
    l1 = robust_l1(pred, target).mean(1, keepdim=True)
    if ssim_weight == 0:
        return l1
    ssim = ssim_loss(pred, target).mean(1, keepdim=True)
    return ssim_weight * ssim + (1 - ssim_weight) * l1


def identity_errors(sources: Sequence[Tensor], target: Tensor, ssim_weight: float = 0.85,
                    noise: float = 1e-5) -> List[Tensor]:
    """Auto-mask candidates: photometric errors of the *unwarped* sources against the target.

    A tiny Gaussian noise (``noise`` std) breaks ties with the warped errors, as in the
    official code. When one of these wins the per-pixel minimum, the pixel is static relative
    to the camera (or textureless) and contributes almost nothing to the gradient.

    Args:
        sources: list of ``[B, 3, H, W]`` source images.
        target: ``[B, 3, H, W]``.

    Returns:
        list of ``[B, 1, H, W]``.
    """
    out = []
    for src in sources:
        err = photometric_error(src, target, ssim_weight)
        out.append(err + torch.randn_like(err) * noise)
    return out


def min_reprojection(errors: Sequence[Tensor],
                     identity: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Tensor]:
    """Per-pixel minimum over the source frames (and the auto-mask identity errors).

    Args:
        errors: list of ``[B, 1, H, W]`` photometric errors of warped sources.
        identity: optional list of ``[B, 1, H, W]`` identity errors (auto-mask).

    Returns:
        ``min_error [B, 1, H, W]`` and ``index [B, 1, H, W]`` (int64) of the winner; with
        auto-masking indices ``< len(identity)`` mean "masked" (identity won).
    """
    stack = torch.cat(list(identity or []) + list(errors), 1)
    values, index = torch.min(stack, dim=1, keepdim=True)
    return values, index


def feature_metric_loss(target_features: Tensor, warped_features: Sequence[Tensor]) -> Tensor:
    """Feature-metric loss ``mean_pixels(min_sources(mean_channels(rho(phi_t, phi_s->t))))``.

    Args:
        target_features: ``[B, C, h, w]`` features of the target image (FeatureNet level 0).
        warped_features: list of ``[B, C, h, w]`` source features warped into the target view
            with the target depth and the predicted poses (``geometry.warp``).

    Returns:
        scalar (no auto-mask, as in the official code).
    """
    errors = [robust_l1(target_features, w).mean(1, keepdim=True) for w in warped_features]
    return torch.cat(errors, 1).min(1)[0].mean()


def image_gradients(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Forward differences ``dx [B, C, H, W-1]`` and ``dy [B, C, H-1, W]``."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _resize_like(image: Tensor, x: Tensor) -> Tensor:
    if image.shape[-2:] == x.shape[-2:]:
        return image
    return F.interpolate(image, size=x.shape[-2:], mode='area')


def _edge_weighted(dx: Tensor, di: Tensor, alpha: float) -> Tensor:
    """``mean(|dx| * exp(-alpha * mean_c|di|))``; 0 for an empty map (e.g. a 2-row level)."""
    if dx.numel() == 0:
        return dx.new_zeros(())
    return (dx.abs() * torch.exp(-alpha * di.abs().mean(1, keepdim=True))).mean()


def first_order_edge_aware(x: Tensor, image: Tensor, alpha: float = 1.0) -> Tensor:
    """Edge-aware first-order magnitude ``mean|dx x| e^(-a|dx I|) + mean|dy x| e^(-a|dy I|)``.

    Args:
        x: ``[B, C, h, w]`` disparity or feature map.
        image: ``[B, 3, H, W]``; area-resized to ``h, w`` if needed.
        alpha: edge-weight sharpness (0.5 for smoothness, 1 for the feature regulariser).
    """
    image = _resize_like(image, x)
    x_dx, x_dy = image_gradients(x)
    i_dx, i_dy = image_gradients(image)
    return _edge_weighted(x_dx, i_dx, alpha) + _edge_weighted(x_dy, i_dy, alpha)


def second_order_edge_aware(x: Tensor, image: Tensor, alpha: float = 1.0) -> Tensor:
    """Sum over ``xx, xy, yx, yy`` of ``mean|d2 x| e^(-alpha mean_c|d2 I|)`` (scalar).

    Args:
        x: ``[B, C, h, w]`` disparity or feature map (h, w >= 3).
        image: ``[B, 3, H, W]``; area-resized to ``h, w`` if needed.
        alpha: edge-weight sharpness.
    """
    image = _resize_like(image, x)
    x_dx, x_dy = image_gradients(x)
    i_dx, i_dy = image_gradients(image)
    total = x.new_zeros(())
    for xd, idd in ((x_dx, i_dx), (x_dy, i_dy)):
        for x2, i2 in zip(image_gradients(xd), image_gradients(idd)):
            total = total + _edge_weighted(x2, i2, alpha)
    return total


def discriminative_loss(features: Tensor, image: Tensor) -> Tensor:
    """Paper's discriminative loss: the *negative* edge-aware first-order feature gradient.

    Minimising it makes features vary (large first-order gradients), most strongly where the
    image itself is flat, which gives the feature-metric loss a slope in textureless regions.

    Args:
        features: ``[B, C, h, w]``; image: ``[B, 3, H, W]``.

    Returns:
        scalar ``<= 0``.
    """
    return -first_order_edge_aware(features, image, alpha=1.0)


def convergent_loss(features: Tensor, image: Tensor) -> Tensor:
    """Paper's convergent loss: edge-aware second-order feature gradient magnitude (scalar >= 0).

    Minimising it keeps feature gradients consistent (a smooth, convex-ish basin) so that
    gradient descent on depth/pose converges over a wide range.
    """
    return second_order_edge_aware(features, image, alpha=1.0)


def smoothness_loss(disp: Tensor, image: Tensor, mean_normalise: bool = True) -> Tensor:
    """Edge-aware first + second order smoothness of a disparity map (official code).

    Args:
        disp: ``[B, 1, h, w]`` disparity at its native decoder resolution.
        image: ``[B, 3, H, W]`` target image; area-resized to ``h, w``.
        mean_normalise: divide ``disp`` by its per-image mean first (mono training), which
            makes the loss invariant to the disparity scale.

    Returns:
        scalar.
    """
    if mean_normalise:
        disp = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    return (first_order_edge_aware(disp, image, alpha=0.5)
            + second_order_edge_aware(disp, image, alpha=0.5))


def reconstruction_loss(recons: Mapping[int, Tensor], image: Tensor,
                        ssim_weight: float = 0.85) -> Tensor:
    """Reconstruction loss of FeatureNet: mean over scales of the mean photometric error.

    Args:
        recons: ``{scale: [B, 3, h_s, w_s]}`` reconstructions (sigmoid RGB).
        image: ``[B, 3, H, W]`` input image; bilinearly resized to each ``h_s, w_s``.

    Returns:
        scalar.
    """
    total = image.new_zeros(())
    for rec in recons.values():
        target = image
        if rec.shape[-2:] != image.shape[-2:]:
            target = F.interpolate(image, size=rec.shape[-2:], mode='bilinear',
                                   align_corners=False)
        total = total + photometric_error(rec, target, ssim_weight).mean()
    return total / max(len(recons), 1)


def feature_regularisation(features: Sequence[Tensor], image: Tensor,
                           dis_weight: float, cvt_weight: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Discriminative + convergent regulariser over the encoder levels (official weighting).

    Level ``i`` contributes ``(dis * L_dis_i + cvt * L_cvt_i) / 2**i / n_levels``.

    Returns:
        ``(total, dis_sum, cvt_sum)`` scalars; the sums are the unweighted per-level terms with
        the same ``1 / 2**i / n_levels`` factors (for logging).
    """
    n = max(len(features), 1)
    dis_sum = image.new_zeros(())
    cvt_sum = image.new_zeros(())
    for i, feat in enumerate(features):
        factor = 1.0 / (2 ** i) / n
        dis_sum = dis_sum + discriminative_loss(feat, image) * factor
        cvt_sum = cvt_sum + convergent_loss(feat, image) * factor
    return dis_weight * dis_sum + cvt_weight * cvt_sum, dis_sum, cvt_sum


def total_depth_loss(photometric: Sequence[Tensor], smoothness: Sequence[Tensor],
                     feature_metric: Optional[Tensor],
                     cfg: LossConfig) -> Tuple[Tensor, Dict[str, float]]:
    """Stage-2 total: ``sum_s [L_ph,s / S + w_sm * L_sm,s / 2**s / S] + w_fm * L_fm``.

    Args:
        photometric: per-scale scalar photometric losses (mean of the min reprojection map).
        smoothness: per-scale scalar smoothness losses (``smoothness_loss``).
        feature_metric: scalar feature-metric loss, or None to leave it out.
        cfg: weights (``smoothness_weight``, ``feature_metric_weight``, ``use_feature_metric``).

    Returns:
        ``(total, logs)``; logs hold float values of each weighted term.
    """
    if len(photometric) != len(smoothness) or not photometric:
        raise ValueError('total_depth_loss: need the same, non-zero number of photometric and '
                         'smoothness terms')
    n = len(photometric)
    ph = sum(p / n for p in photometric)
    sm = sum(cfg.smoothness_weight * s / (2 ** i) / n for i, s in enumerate(smoothness))
    total = ph + sm
    logs = {'photometric': float(ph.detach()), 'smoothness': float(sm.detach())}
    if feature_metric is not None and cfg.use_feature_metric:
        fm = cfg.feature_metric_weight * feature_metric
        total = total + fm
        logs['feature_metric'] = float(fm.detach())
    logs['total'] = float(total.detach())
    return total, logs


def feature_net_loss(image: Tensor, features: Sequence[Tensor], recons: Mapping[int, Tensor],
                     cfg: LossConfig) -> Tuple[Tensor, Dict[str, float]]:
    """Stage-1 (FeatureNet) total: reconstruction + ``-dis * L1st + cvt * L2nd`` regulariser.

    Args:
        image: ``[B, 3, H, W]`` input image in [0, 1].
        features: the encoder's feature levels (5 for a ResNet), each ``[B, C_i, h_i, w_i]``.
        recons: ``{scale: [B, 3, H / 2**scale, W / 2**scale]}`` reconstructions.
        cfg: weights (``discriminative_weight``, ``convergent_weight``, ``ssim_weight``).

    Returns:
        ``(total, logs)``.
    """
    rec = reconstruction_loss(recons, image, cfg.ssim_weight)
    reg, dis, cvt = feature_regularisation(features, image, cfg.discriminative_weight,
                                           cfg.convergent_weight)
    total = rec + reg
    logs = {'reconstruction': float(rec.detach()),
            'discriminative': float((cfg.discriminative_weight * dis).detach()),
            'convergent': float((cfg.convergent_weight * cvt).detach()),
            'total': float(total.detach())}
    return total, logs

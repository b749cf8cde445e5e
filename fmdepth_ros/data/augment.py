"""Training augmentation as in the paper: colour jitter of the network inputs and horizontal flip.

Colour jitter (FeatDepth / Monodepth2): with probability 0.5, brightness, contrast and
saturation factors in [0.8, 1.2] and a hue shift in [-0.1, 0.1] (fraction of the hue circle),
applied in a random order, with the *same* parameters for every frame of a sample. Only the
network inputs (``images_aug``) are jittered; the losses use the un-jittered ``images``.

Flip: with probability 0.5, every frame, the depth and the intrinsics are mirrored together.

Brightness / contrast / saturation are one-line blends written here with torchvision's
semantics (kornia's ``adjust_brightness`` is additive, not multiplicative); the hue rotation
uses kornia.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

BRIGHTNESS = (0.8, 1.2)
CONTRAST = (0.8, 1.2)
SATURATION = (0.8, 1.2)
HUE = (-0.1, 0.1)


@dataclass
class ColorJitterParams:
    """One draw of colour-jitter factors; ``order`` is a permutation of 0..3 (b, c, s, h)."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    order: Tuple[int, ...] = (0, 1, 2, 3)


def _uniform(low, high, generator):
    return float(low + (high - low) * torch.rand((), generator=generator))


def sample_color_jitter(generator: Optional[torch.Generator] = None) -> ColorJitterParams:
    """Draw jitter factors from the paper's ranges (torch RNG, so DataLoader workers differ)."""
    return ColorJitterParams(
        brightness=_uniform(*BRIGHTNESS, generator),
        contrast=_uniform(*CONTRAST, generator),
        saturation=_uniform(*SATURATION, generator),
        hue=_uniform(*HUE, generator),
        order=tuple(int(i) for i in torch.randperm(4, generator=generator)))


def _grayscale(images):
    """ITU-R 601 luma [..., 1, H, W] of RGB images [..., 3, H, W] (torchvision's weights)."""
    import kornia

    return kornia.color.rgb_to_grayscale(images)


def apply_color_jitter(images, params: ColorJitterParams):
    """Jitter RGB images [F, 3, H, W] (or [3, H, W]) in [0, 1] with fixed ``params``.

    Returns a new tensor of the same shape, clamped to [0, 1].
    """
    import kornia

    out = images
    for op in params.order:
        if op == 0:
            out = (out * params.brightness).clamp(0.0, 1.0)
        elif op == 1:
            mean = _grayscale(out).mean(dim=(-3, -2, -1), keepdim=True)
            out = (params.contrast * out + (1.0 - params.contrast) * mean).clamp(0.0, 1.0)
        elif op == 2:
            gray = _grayscale(out)
            out = (params.saturation * out + (1.0 - params.saturation) * gray).clamp(0.0, 1.0)
        elif op == 3 and params.hue != 0.0:
            # kornia takes the hue shift in radians; torchvision's factor is a fraction of 2*pi.
            out = kornia.enhance.adjust_hue(out, params.hue * 2.0 * torch.pi).clamp(0.0, 1.0)
    return out


def flip_intrinsics(K, width):
    """Intrinsics [..., 3, 3] of the horizontally mirrored image of ``width`` pixels.

    With pixel centres at integer coordinates, column u maps to ``width - 1 - u``, so
    ``cx' = width - 1 - cx`` (fx, fy, cy unchanged).
    """
    K = K.clone()
    K[..., 0, 2] = (width - 1) - K[..., 0, 2]
    return K


def flip_horizontal(tensor):
    """Mirror the last (width) dimension."""
    return torch.flip(tensor, dims=[-1])

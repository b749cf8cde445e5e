"""Pinhole camera geometry and differentiable view warping (FeatDepth / SfMLearner style).

Conventions (see ``docs/architecture.md``):

- Camera optical frame: x right, y down, z forward. Depth is the z coordinate, in metres
  (up to scale for monocular models).
- ``K`` is ``[B, 3, 3]`` (a ``[3, 3]`` matrix is broadcast) in pixels of the image it goes
  with. Pixel centres lie on integer coordinates: the top-left pixel centre is ``(u, v) = (0, 0)``
  and the bottom-right one is ``(W - 1, H - 1)``. Sampling therefore uses
  ``grid_sample(..., align_corners=True)``, the convention of the official FeatDepth code (which
  normalises by ``W - 1`` and ran on a PyTorch whose default was ``align_corners=True``).
- ``T_a_b`` is ``[B, 4, 4]`` and maps points in frame b to frame a: ``p_a = T_a_b @ p_b``.

Unlike Monodepth2's ``BackprojectDepth`` nothing here fixes the batch size or image size at
construction time; every function works for any ``B, H, W``.
"""

from typing import List, Tuple

from kornia.geometry.conversions import axis_angle_to_rotation_matrix
import numpy as np
import torch
from torch import Tensor
import torch.nn.functional as F

_EPS = 1e-7  # metres; smallest depth treated as in front of the camera

__all__ = ['scale_intrinsics', 'intrinsics_pyramid', 'pixel_grid', 'backproject', 'project',
           'axis_angle_to_matrix', 'pose_from_axisangle', 'invert_pose', 'warp', 'pixels_to_grid']


def _batched_K(K: Tensor, batch: int) -> Tensor:
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f'intrinsics must be [B,3,3] or [3,3], got {tuple(K.shape)}')
    return K.expand(batch, 3, 3) if K.shape[0] == 1 and batch != 1 else K


def scale_intrinsics(K, sx: float, sy: float):
    """Intrinsics of an image resized by ``sx`` horizontally and ``sy`` vertically.

    The one implementation of intrinsics scaling: training data, bag readers, the node and its
    CameraInfo output all call it. Works on torch tensors (differentiable, any device and
    dtype) and on numpy arrays or nested lists (the ROS and I/O side).

    Args:
        K: ``[..., 3, 3]`` pixel intrinsics, or a ``[..., 3, 4]`` projection matrix ``P``
            (its rows scale the same way: ``P[0] *= sx``, ``P[1] *= sy``, so the stereo
            baseline term ``-fx * B`` follows ``fx``). A ``Tensor``, ``np.ndarray`` or
            anything ``np.asarray`` accepts.
        sx, sy: resize factors (new size / old size).

    Returns:
        A new array of the same shape and kind: a ``Tensor`` (same dtype and device) for a
        ``Tensor``, else a numpy array (float64 unless ``K`` is already floating point), with
        row 0 (``fx``, skew, ``cx``) multiplied by ``sx`` and row 1 (``fy``, ``cy``) by ``sy``.
        The input is never modified.
    """
    is_tensor = isinstance(K, Tensor)
    if not is_tensor:
        K = np.asarray(K)
        if not np.issubdtype(K.dtype, np.floating):
            K = K.astype(np.float64)
    if K.ndim < 2 or K.shape[-2] != 3:
        raise ValueError(f'intrinsics must be [..., 3, 3] or [..., 3, 4], got {tuple(K.shape)}')
    if is_tensor:
        return K * K.new_tensor([sx, sy, 1.0]).view(3, 1)
    return K * np.array([sx, sy, 1.0], dtype=K.dtype)[:, None]


def intrinsics_pyramid(K: Tensor, num_scales: int) -> List[Tensor]:
    """Intrinsics for pyramid levels ``s = 0..num_scales-1`` of factor ``1 / 2**s``.

    Args:
        K: ``[..., 3, 3]`` pixels at level 0.

    Returns:
        list of ``[..., 3, 3]``; element ``s`` is ``K`` scaled by ``1 / 2**s`` in x and y.
    """
    return [scale_intrinsics(K, 0.5 ** s, 0.5 ** s) for s in range(num_scales)]


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Homogeneous pixel coordinates ``[3, H*W]`` (u, v, 1), row-major, u along the width."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing='ij')
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)


def backproject(depth: Tensor, inv_K: Tensor) -> Tensor:
    """Lift every pixel of a depth map to a homogeneous 3D point in its camera frame.

    Args:
        depth: ``[B, 1, H, W]`` metres.
        inv_K: ``[B, 3, 3]`` (or ``[3, 3]``) inverse pixel intrinsics.

    Returns:
        ``[B, 4, H*W]`` homogeneous camera points ``(X, Y, Z, 1)``, metres, row-major pixels.
    """
    b, _, h, w = depth.shape
    inv_K = _batched_K(inv_K, b).to(depth.dtype)
    rays = inv_K @ pixel_grid(h, w, depth.device, depth.dtype)          # B x 3 x HW
    points = rays * depth.reshape(b, 1, h * w)                           # B x 3 x HW
    return torch.cat([points, torch.ones_like(points[:, :1])], 1)       # B x 4 x HW


def project(points: Tensor, K: Tensor, T: Tensor) -> Tuple[Tensor, Tensor]:
    """Transform homogeneous points with ``T`` and project them with ``K``.

    Args:
        points: ``[B, 4, N]`` homogeneous points (metres) in frame b.
        K: ``[B, 3, 3]`` (or ``[3, 3]``) pixel intrinsics of camera a.
        T: ``[B, 4, 4]`` ``T_a_b``.

    Returns:
        ``pix [B, N, 2]`` pixel coordinates (u, v) in camera a and ``z [B, N]`` depth (metres)
        of the points in camera a. Points with ``z <= 0`` get meaningless (but finite) pixels;
        callers mask them with ``z > 0``.
    """
    b = points.shape[0]
    K = _batched_K(K, b).to(points.dtype)
    cam = (T @ points)[:, :3]                                           # B x 3 x N
    z = cam[:, 2]
    uvw = K @ cam                                                       # B x 3 x N
    # Clamping keeps points behind the camera finite; they are masked by the caller.
    pix = uvw[:, :2] / uvw[:, 2:3].clamp(min=_EPS)
    return pix.permute(0, 2, 1), z


def axis_angle_to_matrix(axisangle: Tensor) -> Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues), via kornia.

    Args:
        axisangle: ``[B, 3]``, direction = axis, norm = angle in radians.

    Returns:
        ``[B, 3, 3]`` rotation matrices (identity and finite gradients at zero angle).
    """
    return axis_angle_to_rotation_matrix(axisangle)


def pose_from_axisangle(axisangle: Tensor, translation: Tensor, invert: bool = False) -> Tensor:
    """Homogeneous transform from PoseNet's axis-angle + translation.

    ``T = [t] @ R`` i.e. ``[[R, t], [0, 1]]`` (rotate, then translate). With ``invert=True``
    the inverse ``[[R^T, -R^T t], [0, 1]]`` is returned (the official code's convention for the
    frame that precedes the target in time).

    Args:
        axisangle: ``[B, 3]`` radians.
        translation: ``[B, 3]`` metres (up to scale).
        invert: return the inverse transform.

    Returns:
        ``[B, 4, 4]``.
    """
    R = axis_angle_to_matrix(axisangle)
    t = translation.reshape(-1, 3, 1)
    if invert:
        R = R.transpose(1, 2)
        t = -(R @ t)
    return _compose_rt(R, t)


def _compose_rt(R: Tensor, t: Tensor) -> Tensor:
    """``[B, 3, 3]`` rotation and ``[B, 3, 1]`` translation -> ``[B, 4, 4]``."""
    top = torch.cat([R, t], 2)                                          # B x 3 x 4
    bottom = torch.zeros_like(top[:, :1])                               # B x 1 x 4
    bottom[..., 3] = 1.0
    return torch.cat([top, bottom], 1)


def invert_pose(T: Tensor) -> Tensor:
    """Inverse of rigid transforms ``[..., 4, 4]`` computed as ``[[R^T, -R^T t], [0, 1]]``."""
    shape = T.shape
    T = T.reshape(-1, 4, 4)
    R_t = T[:, :3, :3].transpose(1, 2)
    out = _compose_rt(R_t, -(R_t @ T[:, :3, 3:]))
    return out.reshape(shape)


def pixels_to_grid(pix: Tensor, height: int, width: int) -> Tensor:
    """Pixel coordinates ``[B, N, 2]`` to a ``grid_sample`` grid ``[B, H, W, 2]`` in [-1, 1].

    Uses the ``align_corners=True`` normalisation (pixel centres 0 and W-1 map to -1 and +1).
    Values are clamped to [-2, 2]: with border padding this changes neither the samples nor
    their gradients, and it keeps far-away projections finite.
    """
    scale = pix.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    grid = (pix * scale - 1.0).clamp(-2.0, 2.0)
    return grid.reshape(pix.shape[0], height, width, 2)


def warp(src: Tensor, depth: Tensor, T_src_tgt: Tensor, K: Tensor,
         padding: str = 'border') -> Tuple[Tensor, Tensor]:
    """Inverse-warp a source view into the target view using the target depth.

    Each target pixel is back-projected with its depth, moved into the source camera with
    ``T_src_tgt`` and projected; ``src`` is bilinearly sampled there (differentiable w.r.t.
    ``src``, ``depth``, ``T_src_tgt`` and ``K``).

    Args:
        src: ``[B, C, H, W]`` source-view image or feature map.
        depth: ``[B, 1, H, W]`` target depth, metres, at the same ``H, W``.
        T_src_tgt: ``[B, 4, 4]`` maps target-camera points into the source camera.
        K: ``[B, 3, 3]`` (or ``[3, 3]``) pixel intrinsics for ``H, W`` (both views).
        padding: ``grid_sample`` padding mode ('border' as in the paper, 'zeros', 'reflection').

    Returns:
        ``warped [B, C, H, W]`` (src sampled at the projections of the target pixels; float32
        when the inputs are half precision, else their dtype) and
        ``valid [B, 1, H, W]`` float 0/1: 1 where the projection lies inside the source image
        (pixel centres ``[0, W-1] x [0, H-1]``, 1e-3 px tolerance) and in front of the source
        camera (positive depth).
    """
    b, _, h, w = depth.shape
    if src.shape[0] != b or src.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f'warp: src {tuple(src.shape)} and depth {tuple(depth.shape)} '
                         'must share batch size and H, W')
    # Geometry in at least float32: half precision cannot hold pixel coordinates (~0.5 px
    # resolution at u = 1000), e.g. under CUDA autocast.
    dtype = torch.promote_types(depth.dtype, torch.float32)
    K = _batched_K(K, b).to(dtype)
    points = backproject(depth.to(dtype), torch.linalg.inv(K))
    pix, z = project(points, K, T_src_tgt.to(dtype))
    grid = pixels_to_grid(pix, h, w)
    warped = F.grid_sample(src.to(dtype), grid, mode='bilinear', padding_mode=padding,
                           align_corners=True)
    tol = 1e-3  # pixels; absorbs rounding at the image border (e.g. zero motion)
    inside = ((pix[..., 0] >= -tol) & (pix[..., 0] <= w - 1 + tol)
              & (pix[..., 1] >= -tol) & (pix[..., 1] <= h - 1 + tol) & (z > _EPS))
    valid = inside.reshape(b, 1, h, w).to(warped.dtype)
    return warped, valid

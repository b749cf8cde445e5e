"""The stereo frame ``'s'`` of MS training: its id, its fixed extrinsics and its depth unit.

FeatDepth's MS setting (official ``config/cfg_kitti_fm.py``, ``FRAME_IDS = [0, -1, 1, 's']``)
adds the other camera of a rectified stereo pair as one more source frame. Its pose is not
predicted: the loader gives a fixed ``stereo_T`` (``T_src_tgt``, target camera -> other
camera), an identity with ``stereo_T[0, 3] = side_sign * baseline_sign * b``:

* ``side_sign`` is -1 when the target is the left camera (the right camera sits at
  ``x = +B`` in the left camera's frame, so a left-camera point has ``x - B`` in the right
  one) and +1 when the target is the right camera;
* ``baseline_sign`` is -1 when the sample is mirrored horizontally (flip augmentation: the
  mirrored left image is the right camera of a mirrored rig).

Which ``b``: the official KITTI loader (``mono/datasets/mono_dataset.py``) uses the constant
``b = 0.015``, not the calibrated baseline (KITTI's is about 0.54 m) and not Monodepth2's 0.1
(its ETH3D / EuRoC loaders use 0.1). Depth is then learnt in units of ``B / b`` metres, and its
evaluation multiplies by 36 (``eval_hooks.py``: ``pred_depth *= 36``; README: "multiply it by
36"), i.e. ``0.54 / 0.015``. ``model.stereo_translation`` holds ``b`` and
``model.stereo_baseline_m`` the rig's baseline ``B`` in metres: ``b = 0.015, B = 0.54``
reproduce the official setting (:func:`stereo_depth_factor` = 36); ``b = B`` makes the
network's depth metric (factor 1).
"""

from typing import Sequence, Tuple

STEREO_ID = 's'
#: stereo_T translation of the official KITTI MS loader (network depth units)
OFFICIAL_STEREO_BASELINE = 0.015
#: the KITTI rig's baseline (m) behind the official factor 36 = 0.54 / 0.015
KITTI_BASELINE_M = 0.54
SIDES = ('l', 'r')

__all__ = ['STEREO_ID', 'OFFICIAL_STEREO_BASELINE', 'KITTI_BASELINE_M', 'check_frame_ids',
           'has_stereo', 'temporal_ids', 'stereo_T', 'stereo_depth_factor']


def check_frame_ids(frame_ids: Sequence) -> Tuple:
    """Return ``frame_ids`` as a tuple after checking it; ``ValueError`` (one line) if bad.

    Valid: target ``0`` first, distinct ids, each an integer time offset or ``'s'``.
    """
    ids = tuple(frame_ids)
    bad = [f for f in ids if f != STEREO_ID and (isinstance(f, bool) or not isinstance(f, int))]
    if bad or not ids or ids[0] != 0 or len(set(ids)) != len(ids):
        raise ValueError('frame_ids must start with 0 and list distinct integer offsets or '
                         f"'{STEREO_ID}' (the other stereo camera), got {ids}")
    return ids


def has_stereo(frame_ids: Sequence) -> bool:
    """Return True when ``frame_ids`` holds the stereo frame ``'s'``."""
    return STEREO_ID in tuple(frame_ids)


def temporal_ids(frame_ids: Sequence) -> Tuple[int, ...]:
    """Return the integer (time offset) ids of ``frame_ids``, in order, without ``'s'``."""
    return tuple(f for f in frame_ids if f != STEREO_ID)


def stereo_T(baseline: float, target_side: str, flipped: bool = False):
    """Return the fixed ``T_src_tgt`` from the target to the other camera of the pair.

    Args:
        baseline: ``b`` > 0, the translation in network depth units
            (``model.stereo_translation``).
        target_side: ``'l'`` (target is the left camera, e.g. KITTI image_02) or ``'r'``.
        flipped: the sample is mirrored horizontally (flip augmentation).

    Returns:
        ``[4, 4]`` float32: identity rotation, ``t = (side_sign * baseline_sign * b, 0, 0)``
        (module docstring), for :func:`fmdepth_ros.geometry.warp`.
    """
    import torch

    if target_side not in SIDES:
        raise ValueError(f"stereo side must be 'l' or 'r', got {target_side!r}")
    if not baseline > 0:
        raise ValueError(f'stereo baseline must be > 0, got {baseline}')
    side_sign = -1.0 if target_side == 'l' else 1.0
    baseline_sign = -1.0 if flipped else 1.0
    T = torch.eye(4, dtype=torch.float32)
    T[0, 3] = side_sign * baseline_sign * float(baseline)
    return T


def stereo_depth_factor(translation: float, baseline_m: float = KITTI_BASELINE_M) -> float:
    """Metres per network depth unit of an MS model: ``baseline_m / translation``.

    Args:
        translation: ``b``, the ``stereo_T`` translation it was trained with
            (``model.stereo_translation``).
        baseline_m: ``B``, the training rig's baseline in metres (``model.stereo_baseline_m``).

    ``fmdepth evaluate --scaling stereo`` multiplies depth by it: 36 for the official setting
    (``0.54 / 0.015``, the constant of the official evaluation), 1 when ``b = B``.
    """
    if not translation > 0 or not baseline_m > 0:
        raise ValueError(f'stereo translation and baseline must be > 0, got {translation}, '
                         f'{baseline_m}')
    return float(baseline_m) / float(translation)

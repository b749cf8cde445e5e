"""Metric scale for up-to-scale monocular depth and egomotion (the node's ``scale_mode``).

Modes:

* ``none``: publish the network's depth as is (metres only up to an unknown factor).
* ``fixed``: multiply depth and pose translations by a constant ``factor`` (e.g. 36 for
  FeatDepth models trained with stereo pairs and the official 0.015 baseline, or a factor
  measured once against a lidar).
* ``camera_height``: a camera at a known height above a flat ground (cars, wheeled robots). The
  ground plane is fitted with RANSAC to the back-projected points of the lower part of each depth
  image; its distance to the optical centre is the predicted camera height, and the scale is
  ``known_height / predicted_height``, smoothed over frames (exponential moving average of the
  log scale). Frames where no plausible plane is found keep the previous scale.

Depth arrays are [H,W] float32 metres; ``K`` is [3,3] in pixels of that depth image. Camera
optical frame: x right, y down, z forward, so the ground normal is close to -y (pointing up).
"""

import math

import numpy as np

SCALE_MODES = ('none', 'fixed', 'camera_height')


def backproject_region(depth, K, row_start, stride=1):
    """Camera-frame points [N,3] of the finite, positive pixels of rows ``row_start:``.

    ``stride`` subsamples rows and columns (every ``stride``-th pixel).
    """
    depth = np.asarray(depth, dtype=np.float64)
    h, w = depth.shape
    rows = np.arange(int(row_start), h, stride)
    cols = np.arange(0, w, stride)
    vv, uu = np.meshgrid(rows, cols, indexing='ij')
    z = depth[vv, uu]
    valid = np.isfinite(z) & (z > 0)
    z, uu, vv = z[valid], uu[valid], vv[valid]
    x = (uu - K[0, 2]) / K[0, 0] * z
    y = (vv - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], axis=1)


def fit_plane_ransac(points, threshold, iterations=100, rng=None, min_inliers=0.3):
    """RANSAC plane fit. Returns (unit normal [3], offset d, inlier ratio) or None.

    The plane is ``normal . p + d = 0`` with ``d >= 0`` (the normal points from the plane
    towards the origin side); ``threshold`` is the inlier distance in the points' units. The
    best hypothesis is refined by least squares (SVD) on its inliers.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n < 3:
        return None
    rng = np.random.default_rng(0) if rng is None else rng
    samples = rng.integers(0, n, size=(iterations, 3))
    a, b, c = points[samples[:, 0]], points[samples[:, 1]], points[samples[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    if not ok.any():
        return None
    normals = normals[ok] / norms[ok, None]
    offsets = -np.einsum('ij,ij->i', normals, a[ok])
    distances = np.abs(points @ normals.T + offsets[None, :])     # [N, hypotheses]
    counts = (distances < threshold).sum(axis=0)
    best = int(np.argmax(counts))
    inliers = distances[:, best] < threshold
    if inliers.sum() < max(3, min_inliers * n):
        return None
    centroid = points[inliers].mean(axis=0)
    _, _, vt = np.linalg.svd(points[inliers] - centroid, full_matrices=False)
    normal = vt[-1]
    d = -float(normal @ centroid)
    if d < 0:
        normal, d = -normal, -d
    return normal, d, float(inliers.mean())


def camera_height_from_depth(depth, K, lower_fraction=0.4, max_tilt_deg=30.0,
                             iterations=100, stride=2, rng=None):
    """Predicted camera height above the ground plane (depth units) or None.

    Fits a plane to the lower ``lower_fraction`` of the image; rejects planes whose normal is
    more than ``max_tilt_deg`` away from the camera's vertical axis (y).
    """
    depth = np.asarray(depth)
    row_start = int(depth.shape[0] * (1.0 - lower_fraction))
    points = backproject_region(depth, np.asarray(K, dtype=np.float64), row_start, stride)
    if len(points) < 10:
        return None
    threshold = 0.02 * float(np.median(points[:, 2]))
    fit = fit_plane_ransac(points, threshold, iterations=iterations, rng=rng)
    if fit is None:
        return None
    normal, d, _ = fit
    if abs(normal[1]) < math.cos(math.radians(max_tilt_deg)) or d <= 0:
        return None
    # The camera must be above the plane: the ground lies at +y (down) from the camera.
    return d


def scale_and_mask(depth, scale, min_depth, max_depth):
    """In place: ``depth *= scale``, then NaN outside ``[min_depth, max_depth]`` (REP-118).

    ``depth``: writable ``[H, W]`` float32 metres; NaN stays NaN. Returns ``depth``. The same
    values as ``d = depth * float32(scale); d[~((d >= lo) & (d <= hi))] = nan`` without its
    temporaries (a scale of exactly 1 skips the multiply: ``x * 1`` is ``x``).
    """
    if scale != 1.0:
        np.multiply(depth, np.float32(scale), out=depth)
    invalid = depth < min_depth
    invalid |= depth > max_depth
    np.copyto(depth, np.float32(np.nan), where=invalid)
    return depth


class DepthScaler:
    """Applies the configured ``scale_mode`` to depth maps and reports the scale in use."""

    def __init__(self, mode='none', factor=1.0, camera_height=1.0, smoothing=0.9):
        """``smoothing`` in [0,1): weight of the previous log scale in ``camera_height`` mode."""
        self.scale = 1.0
        self.last_fit_ok = False
        self._log_scale = None
        self.mode, self.factor, self.camera_height, self.smoothing = 'none', 1.0, 1.0, 0.9
        self.configure(mode=mode, factor=factor, camera_height=camera_height,
                       smoothing=smoothing)

    def configure(self, mode=None, factor=None, camera_height=None, smoothing=None):
        """Change any setting; ValueError for invalid values (settings stay unchanged)."""
        mode = self.mode if mode is None else mode
        factor = self.factor if factor is None else float(factor)
        camera_height = self.camera_height if camera_height is None else float(camera_height)
        smoothing = self.smoothing if smoothing is None else float(smoothing)
        if mode not in SCALE_MODES:
            raise ValueError(f'scale_mode must be one of {SCALE_MODES}, got {mode!r}')
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f'scale factor must be > 0, got {factor}')
        if not (math.isfinite(camera_height) and camera_height > 0):
            raise ValueError(f'camera height must be > 0, got {camera_height}')
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f'smoothing must be in [0, 1), got {smoothing}')
        changed = self.mode != mode
        self.mode, self.factor = mode, factor
        self.camera_height, self.smoothing = camera_height, smoothing
        if changed:
            self._log_scale = None
        self.scale = self._current()

    def _current(self):
        if self.mode == 'fixed':
            return self.factor
        if self.mode == 'camera_height' and self._log_scale is not None:
            return math.exp(self._log_scale)
        return 1.0

    def update(self, depth, K):
        """Update the scale from an unscaled ``depth`` [H,W] and ``K`` [3,3]; returns the scale."""
        self.last_fit_ok = False
        if self.mode == 'camera_height':
            height = camera_height_from_depth(depth, K)
            if height is not None and height > 0:
                log_scale = math.log(self.camera_height / height)
                if self._log_scale is None:
                    self._log_scale = log_scale
                else:
                    self._log_scale = (self.smoothing * self._log_scale
                                       + (1.0 - self.smoothing) * log_scale)
                self.last_fit_ok = True
        self.scale = self._current()
        return self.scale

    def apply(self, depth, K):
        """Update the scale and return ``(depth * scale, scale)``."""
        scale = self.update(depth, K)
        return np.asarray(depth, dtype=np.float32) * np.float32(scale), scale

"""Synthetic sequences with exact ground truth: a camera moving down a textured corridor.

``render_sequence`` ray-casts (vectorised numpy, no external renderer) a static scene made of
axis-aligned planes and boxes:

* a textured floor (tiles + noise) and a textured ceiling,
* one **plain, textureless** wall (left, x = -half_width) and one textured wall (right),
* textured boxes / pillars at varying distance along both walls,
* a textured end wall that bounds the depth range.

The world frame is the first camera's optical frame (x right, y down, z forward). The camera
moves mostly forward (0.2-0.5 m per frame) with a slow lateral sway and a few degrees of yaw.
Colours depend only on the surface point (Lambertian, no lighting change), so brightness
constancy holds exactly between frames: a good test bed for photometric self-supervision.

On disk (``write_sequence`` / ``read_sequence`` / ``fmdepth synth``)::

    OUT_DIR/images/000000.png     RGB uint8
    OUT_DIR/depth/000000.npy      float32 [H, W] z-depth in metres
    OUT_DIR/poses.txt             KITTI odometry format: 3x4 T_world_cam row-major, one per line
    OUT_DIR/intrinsics.txt        3x3 K in pixels
    OUT_DIR/timestamps.txt        one integer nanosecond stamp per line
    OUT_DIR/images_right/000000.png   with ``stereo_baseline``: the right camera of a
                                  rectified stereo pair (same K, centre at x = +baseline in
                                  the left camera's frame), frame 's' of MS training
    OUT_DIR/stereo.txt            with ``stereo_baseline``: "baseline_m <metres>"
"""

from dataclasses import dataclass
import os
from typing import Optional

from fmdepth_ros.atomic_io import open_atomic, write_text_atomic
from fmdepth_ros.metrics import load_poses_kitti, save_poses_kitti
import numpy as np

FRAME_PERIOD_NS = 100_000_000   # 10 Hz like KITTI
_TEXTURE_SIZE = 256             # texels per tile side
_FAR = 1e6                      # "no hit" distance in metres


@dataclass
class SyntheticSequence:
    """A rendered sequence held in memory.

    Attributes:
        images: [N, H, W, 3] uint8 RGB.
        depths: [N, H, W] float32 z-depth in metres (always valid, > 0).
        poses: [N, 4, 4] float64 T_world_cam (camera optical frame, x right, y down, z forward).
        K: [3, 3] float64 intrinsics in pixels of ``images``.
        stamps_ns: [N] int64 timestamps in nanoseconds.
        right_images: [N, H, W, 3] uint8 RGB of the right stereo camera, or None.
        baseline: stereo baseline in metres (0 without a right camera).
    """

    images: np.ndarray
    depths: np.ndarray
    poses: np.ndarray
    K: np.ndarray
    stamps_ns: np.ndarray
    right_images: Optional[np.ndarray] = None
    baseline: float = 0.0

    def __len__(self):
        """Return the number of frames."""
        return int(self.images.shape[0])


def default_intrinsics(width, height):
    """KITTI-like pinhole K [3, 3] (Monodepth2's normalised 0.58, 1.92, 0.5, 0.5) in pixels."""
    return np.array([[0.58 * width, 0.0, 0.5 * width],
                     [0.0, 1.92 * height, 0.5 * height],
                     [0.0, 0.0, 1.0]], dtype=np.float64)


def _make_texture(rng, smooth_passes=2):
    """Periodic multi-octave value noise tile [T, T] float32 in [0, 1]."""
    size = _TEXTURE_SIZE
    tex = np.zeros((size, size), np.float32)
    amplitude, total = 1.0, 0.0
    for cells in (4, 8, 16, 32, 64):
        grid = rng.random((cells, cells)).astype(np.float32)
        # Periodic bilinear upsampling of the coarse grid to the tile size.
        coords = np.arange(size, dtype=np.float32) * cells / size
        i0 = np.floor(coords).astype(int)
        f = coords - i0
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
        layer = rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]
        tex += amplitude * layer
        total += amplitude
        amplitude *= 0.7
    tex /= total
    for _ in range(smooth_passes):   # light periodic blur against aliasing
        tex = (tex + np.roll(tex, 1, 0) + np.roll(tex, -1, 0)
               + np.roll(tex, 1, 1) + np.roll(tex, -1, 1)) / 5.0
    tex -= tex.min()
    tex /= max(float(tex.max()), 1e-6)
    return tex


def _sample_texture(tex, u, v):
    """Bilinear periodic lookup of ``tex`` at texel coordinates (u, v) (flat arrays)."""
    size = tex.shape[0]
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0).astype(np.float32)
    fv = (v - v0).astype(np.float32)
    u0 = u0.astype(np.int64) % size
    v0 = v0.astype(np.int64) % size
    u1 = (u0 + 1) % size
    v1 = (v0 + 1) % size
    top = tex[v0, u0] * (1 - fu) + tex[v0, u1] * fu
    bottom = tex[v1, u0] * (1 - fu) + tex[v1, u1] * fu
    return top * (1 - fv) + bottom * fv


@dataclass
class _Surface:
    """Appearance of one scene element: colour, texture tile, texels per metre, contrast."""

    color: np.ndarray          # [3] float in [0, 1]
    texture: np.ndarray        # [T, T] or None for a plain surface
    texels_per_m: float = 64.0
    contrast: float = 0.6
    tiles_m: float = 0.0       # tile size in metres for a grout pattern (0 = none)


class _Corridor:
    """The static scene: planes and boxes, each with a surface appearance."""

    def __init__(self, rng, length, half_width=2.0, floor_y=1.0, ceiling_y=-2.0):
        self.half_width = half_width
        self.floor_y = floor_y
        self.ceiling_y = ceiling_y
        self.end_z = length
        textures = [_make_texture(rng) for _ in range(4)]
        self.floor = _Surface(np.array([0.55, 0.45, 0.35]), textures[0], 48.0, 0.7, 1.0)
        self.ceiling = _Surface(np.array([0.75, 0.75, 0.8]), textures[1], 32.0, 0.5)
        self.plain_wall = _Surface(np.array([0.62, 0.66, 0.7]), None)
        self.textured_wall = _Surface(np.array([0.7, 0.4, 0.3]), textures[2], 40.0, 0.8, 0.0)
        self.end_wall = _Surface(np.array([0.4, 0.6, 0.4]), textures[3], 24.0, 0.8)
        # Boxes: [M, 2, 3] min/max corners, alternating sides, leaving the middle free.
        boxes, box_surfaces = [], []
        z = 3.0 + rng.uniform(0.0, 2.0)
        side = 1.0
        while z < length - 3.0:
            depth = rng.uniform(0.4, 1.5)
            width = rng.uniform(0.4, 0.9)
            pillar = rng.random() < 0.35
            top = ceiling_y if pillar else floor_y - rng.uniform(0.5, 1.8)
            if side > 0:
                x0, x1 = half_width - width, half_width
            else:
                x0, x1 = -half_width, -half_width + width
            boxes.append([[x0, top, z], [x1, floor_y, z + depth]])
            color = rng.uniform(0.2, 0.9, size=3)
            box_surfaces.append(_Surface(color, textures[int(rng.integers(0, 4))],
                                         float(rng.uniform(40.0, 90.0)), 0.8))
            z += depth + rng.uniform(1.0, 4.0)
            side = -side if rng.random() < 0.7 else side
        self.boxes = np.array(boxes, dtype=np.float64).reshape(-1, 2, 3)
        self.box_surfaces = box_surfaces


def _shade(surface, a, b, normal_shade):
    """Colour [P, 3] float of points with surface coordinates (a, b) in metres."""
    n = a.shape[0]
    if surface.texture is None:
        value = np.full(n, 0.5, np.float32)
    else:
        scale = surface.texels_per_m
        value = _sample_texture(surface.texture, a * scale, b * scale)
        if surface.tiles_m > 0:   # darker grout lines every tiles_m metres
            fa = np.abs((a / surface.tiles_m) % 1.0 - 0.5)
            fb = np.abs((b / surface.tiles_m) % 1.0 - 0.5)
            grout = (np.maximum(fa, fb) > 0.47).astype(np.float32)
            value = value * (1 - 0.6 * grout)
    gain = 1.0 + surface.contrast * (value - 0.5) * 2.0
    return np.clip(surface.color[None, :] * gain[:, None] * normal_shade, 0.0, 1.0)


def _cast(scene, origin, dirs, shade=True):
    """Ray-cast rays ``origin + t * dirs`` (dirs [P, 3] world); returns t [P] and rgb [P, 3].

    With ``shade=False`` only t is computed (rgb is None).
    """
    n = dirs.shape[0]
    best_t = np.full(n, _FAR)
    best_id = np.full(n, -1, np.int64)
    # Avoid 0 * inf in the slab test: nudge zero direction components.
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    inv = 1.0 / safe                                        # [P, 3]
    planes = [  # (axis, coordinate, id)
        (1, scene.floor_y, 0), (1, scene.ceiling_y, 1),
        (0, -scene.half_width, 2), (0, scene.half_width, 3), (2, scene.end_z, 4)]
    for axis, coord, pid in planes:
        t = (coord - origin[axis]) * inv[:, axis]
        hit = (t > 1e-6) & (t < best_t)
        best_t[hit] = t[hit]
        best_id[hit] = pid
    # Boxes entirely behind the camera cannot be seen (rays always point forward in z).
    visible = np.nonzero(scene.boxes[:, 1, 2] > origin[2])[0]
    if len(visible):
        boxes = scene.boxes[visible].astype(np.float32)
        inv32 = inv.astype(np.float32)
        t_near = np.full((n, len(visible)), -np.inf, np.float32)
        t_far = np.full((n, len(visible)), np.inf, np.float32)
        for axis in range(3):   # slab test for all rays x boxes at once: [P, M]
            lo = (boxes[None, :, 0, axis] - np.float32(origin[axis])) * inv32[:, axis, None]
            hi = (boxes[None, :, 1, axis] - np.float32(origin[axis])) * inv32[:, axis, None]
            np.maximum(t_near, np.minimum(lo, hi), out=t_near)
            np.minimum(t_far, np.maximum(lo, hi), out=t_far)
        t_box = np.where((t_far >= t_near) & (t_near > 1e-6), t_near, np.float32(_FAR))
        k = np.argmin(t_box, axis=1)
        tk = t_box[np.arange(n), k].astype(np.float64)
        hit = tk < best_t
        best_t[hit] = tk[hit]
        best_id[hit] = 5 + visible[k[hit]]
    if not shade:
        return best_t, None
    points = origin[None, :] + best_t[:, None] * dirs
    rgb = np.zeros((n, 3))
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    simple = {0: (scene.floor, x, z, 0.95), 1: (scene.ceiling, x, z, 0.8),
              2: (scene.plain_wall, z, y, 0.85), 3: (scene.textured_wall, z, y, 0.9),
              4: (scene.end_wall, x, y, 1.0)}
    for pid, (surface, a, b, shade) in simple.items():
        m = best_id == pid
        if m.any():
            rgb[m] = _shade(surface, a[m], b[m], shade)
    for k, surface in enumerate(scene.box_surfaces):
        m = best_id == 5 + k
        if not m.any():
            continue
        p = points[m]
        box = scene.boxes[k]
        # Which face: the coordinate closest to a slab boundary.
        dist = np.minimum(np.abs(p - box[0][None]), np.abs(p - box[1][None]))   # [Q, 3]
        face = np.argmin(dist, axis=1)
        a = np.where(face == 0, p[:, 2], p[:, 0])
        b = np.where(face == 1, p[:, 2], p[:, 1])
        shade = np.array([0.8, 1.0, 0.65])[face]
        rgb[m] = _shade(surface, a, b, shade[:, None])
    return best_t, rgb


def _trajectory(rng, num_frames, speed_range, lateral_limit, yaw_deg):
    """Poses [N, 4, 4] T_world_cam: forward motion with sway and yaw; frame 0 = identity."""
    speeds = np.empty(num_frames)
    s = rng.uniform(*speed_range)
    for i in range(num_frames):   # smooth random walk of the speed inside the range
        s = np.clip(s + rng.normal(0.0, 0.03), *speed_range)
        speeds[i] = s
    z = np.concatenate([[0.0], np.cumsum(speeds[:-1])])
    phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.12)
    idx = np.arange(num_frames)
    x = lateral_limit * (np.sin(freq * idx + phase) - np.sin(phase))
    yaw_phase, yaw_freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.04, 0.1)
    yaw = np.deg2rad(yaw_deg) * (np.sin(yaw_freq * idx + yaw_phase) - np.sin(yaw_phase))
    poses = np.tile(np.eye(4), (num_frames, 1, 1))
    c, s_ = np.cos(yaw), np.sin(yaw)
    # Yaw about the camera y axis (down): rotation in the x-z plane.
    poses[:, 0, 0], poses[:, 0, 2] = c, s_
    poses[:, 2, 0], poses[:, 2, 2] = -s_, c
    poses[:, 0, 3], poses[:, 2, 3] = x, z
    return poses


def render_sequence(num_frames, width=192, height=64, seed=0, speed_range=(0.2, 0.5),
                    yaw_deg=4.0, supersample=2, max_depth=40.0, stereo_baseline=None):
    """Render ``num_frames`` frames of a camera moving down a textured corridor.

    Args:
        num_frames: number of frames N (>= 1).
        width, height: image size in pixels.
        seed: random seed; the same seed gives bit-identical output.
        speed_range: (min, max) forward motion per frame in metres.
        yaw_deg: yaw amplitude in degrees.
        supersample: rays per pixel side (anti-aliasing; depth is taken at the pixel centre).
        max_depth: distance of the end wall from the start in metres (it is moved further
            when the camera travels more than ``max_depth - 12`` metres).
        stereo_baseline: also render a right camera this many metres to the right (x) of
            each camera, same orientation and K (a rectified pair, e.g. KITTI's 0.54); None:
            left camera only. The left images do not depend on it.

    Returns:
        SyntheticSequence with images [N, H, W, 3] uint8, depths [N, H, W] float32 metres,
        poses [N, 4, 4] T_world_cam, K [3, 3], stamps_ns [N] and, with ``stereo_baseline``,
        right_images [N, H, W, 3] and baseline.
    """
    if num_frames < 1 or width < 8 or height < 8:
        raise ValueError('render_sequence: need num_frames >= 1 and an image of at least 8x8')
    if stereo_baseline is not None and not stereo_baseline > 0:
        raise ValueError(f'render_sequence: stereo_baseline must be > 0 m, got {stereo_baseline}')
    rng = np.random.default_rng(seed)
    poses = _trajectory(rng, num_frames, speed_range, 0.5, yaw_deg)
    scene = _Corridor(rng, length=max(float(poses[-1, 2, 3]) + 12.0, max_depth))
    K = default_intrinsics(width, height)
    inv_K = np.linalg.inv(K)
    ss = max(int(supersample), 1)
    # Pixel (u, v) has its centre at integer coordinates (OpenCV / ROS and geometry.py
    # convention). Sub-pixel sample offsets; the centre ray (for depth) is cast separately.
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    us = (np.arange(width)[None, :, None, None] + offs[None, None, None, :])
    vs = (np.arange(height)[:, None, None, None] + offs[None, None, :, None])
    us, vs = np.broadcast_arrays(us, vs)                       # [H, W, ss, ss]
    pix_ss = np.stack([us.ravel(), vs.ravel(), np.ones(us.size)], 0)
    cu, cv = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix_c = np.stack([cu.ravel(), cv.ravel(), np.ones(cu.size)], 0)
    rays_ss = (inv_K @ pix_ss).T                               # camera rays with z = 1
    rays_c = (inv_K @ pix_c).T
    images = np.empty((num_frames, height, width, 3), np.uint8)
    depths = np.empty((num_frames, height, width), np.float32)
    right = None if stereo_baseline is None else np.empty_like(images)
    for i in range(num_frames):
        R, t = poses[i, :3, :3], poses[i, :3, 3]
        # Colour from supersampled rays; t along a z=1 camera ray equals z-depth.
        images[i] = _render_rgb(scene, t, rays_ss @ R.T, (height, width, ss * ss))
        z, _ = _cast(scene, t, rays_c @ R.T, shade=False)
        depths[i] = z.reshape(height, width).astype(np.float32)
        if right is not None:   # T_world_right = T_world_left @ [I | (B, 0, 0)]
            centre = t + R @ np.array([float(stereo_baseline), 0.0, 0.0])
            right[i] = _render_rgb(scene, centre, rays_ss @ R.T, (height, width, ss * ss))
    stamps = np.arange(num_frames, dtype=np.int64) * FRAME_PERIOD_NS + 1_000_000_000
    return SyntheticSequence(images, depths, poses, K, stamps, right,
                             float(stereo_baseline or 0.0))


def _render_rgb(scene, origin, dirs, shape):
    """[H, W, 3] uint8 image of rays ``dirs`` [H*W*S, 3] from ``origin``; ``shape`` (H, W, S)."""
    _, rgb = _cast(scene, origin, dirs)
    rgb = rgb.reshape(*shape, 3).mean(axis=2)
    return np.round(rgb * 255.0).astype(np.uint8)


def write_sequence(seq, out_dir):
    """Write ``seq`` to ``out_dir`` (layout in the module docstring), each file atomically."""
    from PIL import Image

    os.makedirs(os.path.join(out_dir, 'images'), exist_ok=True)
    os.makedirs(os.path.join(out_dir, 'depth'), exist_ok=True)
    for i in range(len(seq)):
        name = f'{i:06d}'
        img_path = os.path.join(out_dir, 'images', name + '.png')
        with open_atomic(img_path) as f:
            Image.fromarray(seq.images[i]).save(f, format='PNG')
        with open_atomic(os.path.join(out_dir, 'depth', name + '.npy')) as f:
            np.save(f, seq.depths[i].astype(np.float32))
    if seq.right_images is not None:
        os.makedirs(os.path.join(out_dir, 'images_right'), exist_ok=True)
        for i in range(len(seq)):
            with open_atomic(os.path.join(out_dir, 'images_right', f'{i:06d}.png')) as f:
                Image.fromarray(seq.right_images[i]).save(f, format='PNG')
        write_text_atomic(os.path.join(out_dir, 'stereo.txt'),
                          f'baseline_m {seq.baseline:.9g}\n')
    save_poses_kitti(os.path.join(out_dir, 'poses.txt'), seq.poses)
    write_text_atomic(os.path.join(out_dir, 'intrinsics.txt'),
                      '\n'.join(' '.join(f'{v:.9g}' for v in row) for row in seq.K) + '\n')
    write_text_atomic(os.path.join(out_dir, 'timestamps.txt'),
                      '\n'.join(str(int(s)) for s in seq.stamps_ns) + '\n')


def is_synthetic_dir(path):
    """Return True when ``path`` looks like the output of ``write_sequence``."""
    return all(os.path.exists(os.path.join(path, p))
               for p in ('images', 'intrinsics.txt', 'poses.txt'))


def read_sequence(path):
    """Read a directory written by ``write_sequence`` back into a SyntheticSequence."""
    from PIL import Image

    if not is_synthetic_dir(path):
        raise FileNotFoundError(f'{path}: not a synthetic sequence (need images/, '
                                f'intrinsics.txt, poses.txt)')
    names = sorted(f for f in os.listdir(os.path.join(path, 'images')) if f.endswith('.png'))
    images = np.stack([np.asarray(Image.open(os.path.join(path, 'images', n)).convert('RGB'))
                       for n in names])
    depth_dir = os.path.join(path, 'depth')
    depths = np.stack([np.load(os.path.join(depth_dir, n[:-4] + '.npy')) for n in names]) \
        if os.path.isdir(depth_dir) else np.zeros(images.shape[:3], np.float32)
    poses = load_poses_kitti(os.path.join(path, 'poses.txt'))
    K = np.loadtxt(os.path.join(path, 'intrinsics.txt'), dtype=np.float64).reshape(3, 3)
    stamps_path = os.path.join(path, 'timestamps.txt')
    if os.path.exists(stamps_path):
        stamps = np.loadtxt(stamps_path, dtype=np.int64, ndmin=1)
    else:
        stamps = np.arange(len(names), dtype=np.int64) * FRAME_PERIOD_NS
    if not (len(poses) == len(names) == len(stamps)):
        raise ValueError(f'{path}: {len(names)} images but {len(poses)} poses and '
                         f'{len(stamps)} timestamps')
    right, baseline = read_stereo(path, names)
    return SyntheticSequence(images, depths.astype(np.float32), poses, K, stamps, right,
                             baseline)


def read_stereo(path, names):
    """(right images [N, H, W, 3] uint8 or None, baseline m) of a ``write_sequence`` folder."""
    from PIL import Image

    right_dir = os.path.join(path, 'images_right')
    stereo_path = os.path.join(path, 'stereo.txt')
    if not (os.path.isdir(right_dir) and os.path.isfile(stereo_path)):
        return None, 0.0
    with open(stereo_path, 'r', encoding='utf-8') as f:
        fields = f.read().split()
    if len(fields) != 2 or fields[0] != 'baseline_m':
        raise ValueError(f'{stereo_path}: expected "baseline_m <metres>"')
    right = np.stack([np.asarray(Image.open(os.path.join(right_dir, n)).convert('RGB'))
                      for n in names])
    return right, float(fields[1])


__all__ = ['SyntheticSequence', 'render_sequence', 'write_sequence', 'read_sequence',
           'default_intrinsics', 'is_synthetic_dir', 'load_poses_kitti', 'save_poses_kitti']

"""Scores a recording of the node's outputs against a bag's ground truth (ROS-free).

1. ``fmdepth evaluate --bag`` (:mod:`fmdepth_ros.ros.tools.evaluate`) runs the ``fmdepth`` node
   in-process on the bag (lock-step, every frame answered) and stores its depth images and
   odometry in a bag; this module reads that recording (``predictions``).
2. Depth: when the bag has ``/ground_truth/depth`` (32FC1 metres, NaN = none, in the camera's
   pixels: what ``fmdepth kitti2bag`` writes from a drive's ``proj_depth/velodyne_raw``), the
   map nearest in time to each depth image (within ``gt_tolerance_s``) is the ground truth.
   Otherwise the velodyne scan nearest in time (``/velodyne_points``) is moved into the image's
   optical frame with ``/tf_static`` and projected with the bag's camera_info (z-buffer:
   nearest point per pixel) to form a sparse ground-truth depth map. Eigen metrics per image
   (median scaling, ``max_depth`` cap, Garg crop on full-size KITTI images) averaged over
   images (:mod:`fmdepth_ros.metrics`).
3. Odometry: the node's ``odom`` poses are matched by stamp to ``/ground_truth/odom`` (OXTS or
   synthetic poses, same tolerance), both re-expressed in the node's child frame through
   ``/tf_static`` when the frames differ, and the ATE is computed with scale alignment (the
   FeatDepth protocol) and with a Sim(3) fit.

The result is printed as a table and, with ``json_path``, written atomically as JSON.
"""

from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from fmdepth_ros import metrics
from fmdepth_ros.atomic_io import write_json_atomic
from fmdepth_ros.data import bag as bagio
from fmdepth_ros.data.kitti_calib import project_points
from fmdepth_ros.errors import BagError
from fmdepth_ros.messages import image_to_depth
import numpy as np

DEPTH_TOPIC = '/fmdepth/depth/image'
ODOM_TOPIC = '/fmdepth/odom'
GT_ODOM_TOPIC = '/ground_truth/odom'
VELODYNE_TOPIC = '/velodyne_points'
GT_DEPTH_TOPIC = '/ground_truth/depth'
KITTI_MIN_WIDTH = 1000     # Garg crop (auto) only on full-resolution KITTI-like images


class _NearestStream:
    """Nearest-in-time lookup into a time-sorted stream of (stamp_ns, payload), queries sorted."""

    def __init__(self, items: Iterator[Tuple[int, object]], tolerance_ns: int):
        self.items, self.tolerance = iter(items), tolerance_ns
        self.buffer, self.done = [], False

    def lookup(self, stamp: int):
        """Return (stamp, payload) nearest to ``stamp`` within the tolerance, else None."""
        while not self.done and (not self.buffer or self.buffer[-1][0] <= stamp + self.tolerance):
            try:
                self.buffer.append(next(self.items))
            except StopIteration:
                self.done = True
        self.buffer = [b for b in self.buffer if b[0] >= stamp - self.tolerance]
        near = [b for b in self.buffer if abs(b[0] - stamp) <= self.tolerance]
        return min(near, key=lambda b: abs(b[0] - stamp)) if near else None


def _depth_messages(path, topic=DEPTH_TOPIC) -> Iterator[Tuple[int, str, np.ndarray]]:
    """(stamp ns, frame id, [H, W] float32 metres) of every depth image on ``topic``."""
    with bagio.open_bag(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise BagError(f'no {topic} in {path}: not an fmdepth record output')
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            yield bagio.stamp_to_ns(msg.header.stamp), msg.header.frame_id, image_to_depth(msg)


def _has_topic(path, topic) -> bool:
    with bagio.open_bag(path) as reader:
        return any(c.topic == topic for c in reader.connections)


def resize_to_ground_truth(pred, shape):
    """Return the node's depth [h, w] resized to the GT map's ``shape`` (H, W).

    Inverse depth is resized bilinearly, as ``fmdepth evaluate --data`` resizes the network's
    disparity to the ground truth; a map of that shape already is returned as it is.
    """
    import cv2

    if pred.shape == tuple(shape):
        return pred
    inverse = 1.0 / np.maximum(np.asarray(pred, dtype=np.float32), 1e-6)
    return 1.0 / cv2.resize(inverse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _score_depth(scores, gt, pred, garg_crop):
    """Add one predicted map, scored against a GT map, to ``scores``.

    A GT map of another size than the node's depth (LiDAR at the camera's native resolution,
    frames downscaled) is compared at the GT size (:func:`resize_to_ground_truth`) when both
    have the same aspect ratio within 2 %. ``garg_crop`` None: the Garg crop only on
    full-resolution KITTI-like ground truth.
    """
    if gt.shape != pred.shape:
        aspect_gt, aspect_pred = gt.shape[1] / gt.shape[0], pred.shape[1] / pred.shape[0]
        if abs(aspect_gt / aspect_pred - 1.0) > 0.02:
            raise BagError(f'ground-truth depth is {gt.shape[1]}x{gt.shape[0]} but the node '
                           f'published {pred.shape[1]}x{pred.shape[0]} (another aspect ratio)')
        pred = resize_to_ground_truth(pred, gt.shape)
    crop = pred.shape[1] >= KITTI_MIN_WIDTH if garg_crop is None else garg_crop
    scores.add(gt, pred, garg_crop=crop)


def _summary(scores, source) -> Dict:
    """``scores.result()`` plus the ground-truth topic."""
    return {**scores.result(), 'ground_truth': source}


def evaluate_depth_against_maps(bag, predictions, tolerance_ns, max_depth=80.0,
                                garg_crop=None) -> Optional[Dict]:
    """Eigen metrics of the recorded depth against ``/ground_truth/depth`` (None: no maps)."""
    if not _has_topic(bag, GT_DEPTH_TOPIC):
        return None
    maps = _NearestStream(((s, d) for s, _, d in _depth_messages(bag, GT_DEPTH_TOPIC)),
                          tolerance_ns)
    scores = metrics.DepthMetricAccumulator(max_depth=max_depth)
    for stamp, _, pred in _depth_messages(predictions):
        hit = maps.lookup(stamp)
        if hit is None:
            scores.skip()
        else:
            _score_depth(scores, hit[1], pred, garg_crop)
    if not scores.num_images:
        raise BagError(f'no depth image of {predictions} has a {GT_DEPTH_TOPIC} map in {bag}')
    return _summary(scores, GT_DEPTH_TOPIC)


def evaluate_depth_against_velodyne(bag, predictions, tolerance_ns, max_depth=80.0,
                                    garg_crop=None) -> Optional[Dict]:
    """Eigen metrics of the recorded depth against projected velodyne scans (None: no scans)."""
    if not _has_topic(bag, VELODYNE_TOPIC):
        return None
    transforms = bagio.read_static_transforms(bag)
    with bagio.open_bag(bag) as reader:
        _, info_topic = bagio.choose_camera_topics(reader)
        info_stamps, Ks = bagio._read_infos(reader, info_topic) if info_topic else ([], [])
    if not Ks:
        raise BagError(f'{bag}: no camera_info to project the velodyne scans with')
    clouds = _NearestStream(((s, (f, p)) for s, f, p in
                             bagio.read_point_clouds(bag, VELODYNE_TOPIC)), tolerance_ns)
    scores = metrics.DepthMetricAccumulator(max_depth=max_depth)
    for stamp, frame_id, pred in _depth_messages(predictions):
        hit = clouds.lookup(stamp)
        if hit is None:
            scores.skip()
            continue
        cloud_frame, points = hit[1]
        T_cam_cloud = transforms.lookup(frame_id, cloud_frame)
        if T_cam_cloud is None:
            raise BagError(f'{bag}: /tf_static does not connect {cloud_frame!r} to the depth '
                           f'frame {frame_id!r}')
        points_cam = points @ T_cam_cloud[:3, :3].T + T_cam_cloud[:3, 3]
        K = bagio._match_K(info_stamps, Ks, stamp)
        _score_depth(scores, project_points(points_cam, K, *pred.shape), pred, garg_crop)
    if not scores.num_images:
        raise BagError(f'no depth image of {predictions} has velodyne ground truth in {bag}')
    return _summary(scores, VELODYNE_TOPIC)


def evaluate_odometry(bag, predictions, tolerance_ns) -> Optional[Dict]:
    """ATE of the recorded odometry against the bag's ground truth (None: no ground truth)."""
    if not _has_topic(bag, GT_ODOM_TOPIC):
        return None
    gt = bagio.read_odometry(bag, GT_ODOM_TOPIC)
    pred = bagio.read_odometry(predictions, ODOM_TOPIC)
    if len(pred.stamps_ns) < 2:
        raise BagError(f'{predictions}: fewer than 2 odometry messages')
    gt_poses = gt.poses
    if pred.child_frame_id and gt.child_frame_id and pred.child_frame_id != gt.child_frame_id:
        T = bagio.read_static_transforms(bag).lookup(gt.child_frame_id, pred.child_frame_id)
        if T is not None:
            gt_poses = gt_poses @ T
    matched_gt, matched_pred = [], []
    stream = _NearestStream(zip(gt.stamps_ns.tolist(), gt_poses), tolerance_ns)
    for stamp, pose in zip(pred.stamps_ns.tolist(), pred.poses):
        hit = stream.lookup(stamp)
        if hit is not None:
            matched_gt.append(hit[1])
            matched_pred.append(pose)
    if len(matched_gt) < 2:
        raise BagError(f'fewer than 2 odometry poses match {GT_ODOM_TOPIC} stamps in {bag}')
    gt_arr, pred_arr = np.stack(matched_gt), np.stack(matched_pred)
    result = metrics.compute_ate(gt_arr, pred_arr, alignment='scale')
    sim3 = metrics.compute_ate(gt_arr, pred_arr, alignment='sim3')
    result.update(ate_sim3=sim3['ate'], scale_sim3=sim3['scale'], poses=len(matched_gt),
                  gt_length_m=float(np.linalg.norm(np.diff(gt_arr[:, :3, 3], axis=0),
                                                   axis=1).sum()))
    return result


def format_table(result: Dict) -> str:
    """Return the evaluation as a small text table."""
    lines = [f"bag {result['bag']}: {result['frames_answered']}/{result['frames_in']} frames "
             'answered by the node']
    depth = result.get('depth')
    if depth:
        names = metrics.DEPTH_METRICS
        lines.append('  '.join(f'{n:>8}' for n in names) + f"  ({depth['num_images']} frames, "
                     f"median scaling, vs {depth.get('ground_truth', VELODYNE_TOPIC)})")
        lines.append('  '.join(f'{depth[n]:8.4f}' for n in names))
    else:
        lines.append(f'depth: no {GT_DEPTH_TOPIC} or {VELODYNE_TOPIC} ground truth in the bag')
    odom = result.get('odometry')
    if odom:
        lines.append(f"ATE {odom['ate']:.4f} m (scale-aligned), {odom['ate_sim3']:.4f} m "
                     f"(Sim3) over {odom['poses']} poses, {odom['gt_length_m']:.1f} m path")
    else:
        lines.append('odometry: no /ground_truth/odom in the bag')
    return '\n'.join(lines)


def read_custom_data(path) -> Dict[str, str]:
    """``custom_data`` of a bag folder's metadata.yaml (what ``fmdepth record`` stores), or {}."""
    import yaml
    meta = Path(path) / 'metadata.yaml'
    if not meta.is_file():
        return {}
    try:
        info = yaml.safe_load(meta.read_text()) or {}
    except yaml.YAMLError:
        raise BagError(f'{meta}: not valid YAML') from None
    return dict((info.get('rosbag2_bagfile_information') or {}).get('custom_data') or {})


def evaluate_bag(checkpoint, bag, predictions, refine_steps=0, json_path=None,
                 frames_in=None, frames_answered=None, temporary_predictions=False,
                 gt_tolerance_s=0.05, max_depth=80.0, garg_crop=None, log=print) -> Dict:
    """Evaluate a recording of the node's outputs against ``bag`` (see the module docstring).

    Args:
        checkpoint: the node weights the recording was made with (reported only; None/'' =
            random initialisation).
        bag: input bag with camera, camera_info, /tf_static and ground truth.
        predictions: an ``fmdepth record`` output (depth images and odometry of the node).
        refine_steps: the node's online refinement iterations during the recording (reported).
        json_path: write the result dict there (atomically).
        frames_in, frames_answered: frame counts of the recording (default: the
            ``fmdepth.frames_in`` / ``fmdepth.frames_answered`` custom data of the recording).
        temporary_predictions: the recording is deleted afterwards (not reported as a path).
        gt_tolerance_s: maximum stamp difference for matching ground truth.
        max_depth: depth cap in metres (80 for KITTI).
        garg_crop: None = on for images at least 1000 px wide (KITTI), else as given.
        log: callable(str) for the table.

    Returns:
        dict with ``bag``, ``checkpoint``, ``frames_in``, ``frames_answered``, ``depth``
        (Eigen metrics or None) and ``odometry`` (ATE or None).
    """
    if refine_steps < 0:
        raise BagError('refine_steps must be >= 0')
    tolerance_ns = int(gt_tolerance_s * 1e9)
    if frames_in is None:
        custom = read_custom_data(predictions)
        frames_in = int(custom.get('fmdepth.frames_in', 0)) or None
        frames_answered = int(custom.get('fmdepth.frames_answered', 0)) or None
    result = {'bag': str(bag), 'checkpoint': str(checkpoint) if checkpoint else None,
              'predictions': None if temporary_predictions else str(predictions),
              'frames_in': frames_in, 'frames_answered': frames_answered,
              'refine_steps': int(refine_steps), 'max_depth': max_depth,
              'gt_tolerance_s': gt_tolerance_s}
    result['depth'] = evaluate_depth_against_maps(bag, predictions, tolerance_ns, max_depth,
                                                  garg_crop)
    if result['depth'] is None:
        result['depth'] = evaluate_depth_against_velodyne(bag, predictions, tolerance_ns,
                                                          max_depth, garg_crop)
    result['odometry'] = evaluate_odometry(bag, predictions, tolerance_ns)
    log(format_table(result))
    if json_path:
        write_json_atomic(json_path, result)
    return result

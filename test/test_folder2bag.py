"""folder2bag and bag scoring of depth smaller than its ground truth (ROS-free, rosbags only)."""

from fmdepth_ros import bag_eval
from fmdepth_ros.data import bag as bagio
from fmdepth_ros.data.folder import FolderSource
from fmdepth_ros.data.folder2bag import folder_to_bag
from fmdepth_ros.data.kitti2bag import GT_DEPTH_TOPIC, IMAGE_TOPIC, INFO_TOPIC
from fmdepth_ros.data.kitti_folder import write_depth_png
from fmdepth_ros.errors import BagError, DataError
from fmdepth_ros.messages import image_to_depth
from fmdepth_ros.metrics import DepthMetricAccumulator
import numpy as np
from PIL import Image
import pytest

GT_SIZE = (40, 120)       # (h, w) of the LiDAR-like maps
IMAGE_SIZE = (20, 60)     # frames at half size


@pytest.fixture()
def folder(tmp_path):
    """Three half-size frames with full-size sparse depth and intrinsics for the frames."""
    rng = np.random.default_rng(0)
    (tmp_path / 'clip' / 'images').mkdir(parents=True)
    (tmp_path / 'clip' / 'depth').mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, IMAGE_SIZE + (3,), dtype=np.uint8)).save(
            tmp_path / 'clip' / 'images' / f'{i:04d}.png')
        depth = np.where(rng.random(GT_SIZE) < 0.2, 5.0 + i, 0.0)
        write_depth_png(tmp_path / 'clip' / 'depth' / f'{i:04d}.png', depth)
    (tmp_path / 'clip' / 'intrinsics.txt').write_text('50 51 30 10\n')
    return tmp_path / 'clip'


def test_folder_to_bag_carries_frames_intrinsics_and_full_size_gt(folder, tmp_path):
    """Every frame, its camera_info (the folder's K) and its GT map at the GT size are in."""
    counts = folder_to_bag(folder, tmp_path / 'clip_bag')
    assert counts == {INFO_TOPIC: 3, IMAGE_TOPIC: 3, GT_DEPTH_TOPIC: 3}
    frames = list(bagio.read_bag_frames(tmp_path / 'clip_bag'))
    source = FolderSource(str(folder))
    assert len(frames) == 3
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, source.load_image(i))
        np.testing.assert_allclose(frame.K, source.K)
    assert [f.stamp_ns for f in frames] == [1_000_000_000 + i * 100_000_000 for i in range(3)]
    with bagio.open_bag(tmp_path / 'clip_bag') as reader:
        conns = [c for c in reader.connections if c.topic == GT_DEPTH_TOPIC]
        maps = [image_to_depth(reader.deserialize(raw, c.msgtype))
                for c, _, raw in reader.messages(connections=conns)]
    for i, depth in enumerate(maps):
        assert depth.shape == GT_SIZE
        expected = source.load_depth(i)
        np.testing.assert_array_equal(np.isnan(depth), expected == 0)
        np.testing.assert_allclose(depth[expected > 0], expected[expected > 0])
    with pytest.raises(DataError, match='exists'):
        folder_to_bag(folder, tmp_path / 'clip_bag')
    assert folder_to_bag(folder, tmp_path / 'two', max_frames=2)[IMAGE_TOPIC] == 2


def test_smaller_depth_is_scored_at_the_gt_size():
    """Depth at half the GT size is resized to it: a scaled copy of the GT scores ~0 AbsRel."""
    gt = np.full((60, 200), np.nan)
    gt[::3, ::2] = np.linspace(5, 40, 200)[None, ::2]          # depth grows left to right
    pred = 0.5 * np.tile(np.linspace(5, 40, 100), (30, 1))     # half size, half scale
    scores = DepthMetricAccumulator(max_depth=80.0)
    bag_eval._score_depth(scores, np.nan_to_num(gt, nan=0.0), pred, garg_crop=False)
    assert scores.result()['abs_rel'] < 0.01
    assert bag_eval.resize_to_ground_truth(pred, (30, 100)) is pred
    with pytest.raises(BagError, match='aspect ratio'):
        bag_eval._score_depth(scores, np.zeros((60, 200)), np.ones((60, 60)), garg_crop=False)

"""``depth/points`` of the fmdepth node: real rclpy, each point against depth/image and K."""

from fmdepth_ros.data.synth import render_sequence
from fmdepth_ros.messages import image_to_depth, stamp_to_ns
from fmdepth_ros.pointcloud import read_cloud, unpack_rgb
from node_helpers import (executor_for, frame_messages, make_node,  # noqa: F401
                          one_torch_thread, ros_graph, spin_until)
import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

pytestmark = pytest.mark.ros


def check_cloud(cloud_msg, depth_msg, info_msg, rgb, stride, lo, hi, organized):
    """Every point of ``cloud_msg`` is its depth pixel back-projected with info's K."""
    assert cloud_msg.header == depth_msg.header
    depth = image_to_depth(depth_msg)
    K = np.asarray(info_msg.k).reshape(3, 3)
    cloud = read_cloud(cloud_msg)
    v, u = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride]
    z = depth[v, u]
    x = (u - K[0, 2]) * z / K[0, 0]
    y = (v - K[1, 2]) * z / K[1, 1]
    with np.errstate(invalid='ignore'):
        r = np.sqrt(x * x + y * y + z * z)
        valid = np.isfinite(z) & (r >= lo) & (r <= hi)
    assert valid.any() and not valid.all(), 'the range limits should cut some points'
    if organized:
        assert cloud.shape == z.shape and not cloud_msg.is_dense
        got = cloud
        assert np.isnan(got['x'][~valid]).all() and np.isnan(got['z'][~valid]).all()
        got, ref = got[valid], (x[valid], y[valid], z[valid])
    else:
        assert cloud.shape == (1, int(valid.sum())) and cloud_msg.is_dense
        got, ref = cloud[0], (x[valid], y[valid], z[valid])
    for name, want in zip('xyz', ref):
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5)
    if rgb is not None:
        np.testing.assert_array_equal(unpack_rgb(got['rgb']), rgb[v, u][valid])
    else:
        assert [f.name for f in cloud_msg.fields] == ['x', 'y', 'z']


def test_points_follow_depth_and_K_and_only_while_subscribed():
    """Organised+rgb and unorganised clouds decode to the depth's back-projection."""
    seq = render_sequence(4, seed=4)
    with ros_graph() as context:
        fmdepth = make_node(context, points_max_range=1e4)
        probe = rclpy.create_node('points_probe', context=context)
        got = {'depth': {}, 'info': {}, 'points': {}}

        def keep(key):
            return lambda msg: got[key].__setitem__(stamp_to_ns(msg.header.stamp), msg)
        probe.create_subscription(Image, 'depth/image', keep('depth'), 10)
        probe.create_subscription(CameraInfo, 'depth/camera_info', keep('info'), 10)
        image_pub = probe.create_publisher(Image, 'image', 10)
        info_pub = probe.create_publisher(CameraInfo, 'camera_info', 10)
        executor = executor_for(context, fmdepth, probe)

        def send(index):
            image, info = frame_messages(seq, index)
            info_pub.publish(info)
            image_pub.publish(image)
            stamp = stamp_to_ns(image.header.stamp)
            assert spin_until(executor, lambda: stamp in got['depth'] and stamp in got['info']
                              and fmdepth.stats.published > index, 60.0)
            return stamp

        try:
            assert spin_until(executor, lambda: image_pub.get_subscription_count() > 0
                              and fmdepth.depth_pub.get_subscription_count() > 0, 10.0)
            send(0)                     # nobody subscribes depth/points: nothing is computed
            assert fmdepth.stats.clouds == 0
            probe.create_subscription(PointCloud2, 'depth/points', keep('points'), 10)
            assert spin_until(executor,
                              lambda: fmdepth.points_pub.get_subscription_count() > 0, 10.0)
            # range limits at the median camera distance of the first frame's points
            depth0 = image_to_depth(next(iter(got['depth'].values())))
            K = np.asarray(next(iter(got['info'].values())).k).reshape(3, 3)
            v, u = np.mgrid[0:depth0.shape[0], 0:depth0.shape[1]]
            rays = np.sqrt(((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2 + 1)
            median = float(np.nanmedian(depth0 * rays))
            runs = [{'points_organized': True, 'points_rgb': True, 'points_stride': 2,
                     'points_min_range': 0.0, 'points_max_range': median},
                    {'points_organized': False, 'points_rgb': False, 'points_stride': 1,
                     'points_min_range': median, 'points_max_range': 1e4}]
            for index, settings in enumerate(runs, start=1):
                assert fmdepth.set_runtime_parameters(**settings).successful
                stamp = send(index)
                assert spin_until(executor, lambda: stamp in got['points'], 30.0)
                check_cloud(got['points'][stamp], got['depth'][stamp], got['info'][stamp],
                            seq.images[index] if settings['points_rgb'] else None,
                            settings['points_stride'], settings['points_min_range'],
                            settings['points_max_range'], settings['points_organized'])
            assert fmdepth.stats.clouds == 2
        finally:
            executor.shutdown()
            fmdepth.destroy_node()
            probe.destroy_node()


def test_points_range_must_be_ordered():
    """points_min_range >= points_max_range is rejected with a reason."""
    with ros_graph() as context:
        fmdepth = make_node(context)
        try:
            result = fmdepth.set_runtime_parameters(points_min_range=5.0, points_max_range=2.0)
            assert not result.successful and 'points_min_range' in result.reason
        finally:
            fmdepth.destroy_node()


def test_nan_network_disparity_is_published_as_nan():
    """A network gone NaN gives an all-NaN depth/image (not max_depth) and an empty cloud."""
    import torch
    seq = render_sequence(1, seed=6)
    with ros_graph() as context:
        fmdepth = make_node(context)
        net = fmdepth.predictor.net
        fmdepth.predictor.load_depth_state(
            {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v
             for k, v in net.state_dict().items()})
        probe = rclpy.create_node('nan_probe', context=context)
        depths, clouds = [], []
        probe.create_subscription(Image, 'depth/image', depths.append, 10)
        probe.create_subscription(PointCloud2, 'depth/points', clouds.append, 10)
        image_pub = probe.create_publisher(Image, 'image', 10)
        info_pub = probe.create_publisher(CameraInfo, 'camera_info', 10)
        executor = executor_for(context, fmdepth, probe)
        try:
            assert spin_until(executor, lambda: image_pub.get_subscription_count() > 0
                              and fmdepth.points_pub.get_subscription_count() > 0, 10.0)
            image, info = frame_messages(seq, 0)
            info_pub.publish(info)
            image_pub.publish(image)
            assert spin_until(executor, lambda: depths and clouds, 60.0)
        finally:
            executor.shutdown()
            fmdepth.destroy_node()
            probe.destroy_node()
    assert np.isnan(image_to_depth(depths[0])).all()
    assert clouds[0].width == 0

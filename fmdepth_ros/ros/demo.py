"""``fmdepth demo``: the ROS node on the built-in synthetic sequence, learning online from scratch.

No weights and no dataset are needed. The demo

1. renders a synthetic corridor sequence with exact depth and poses (``data.synth``);
2. starts the ``fmdepth`` node in this process (real rclpy, its own ROS domain traffic stays on
   this host) with randomly initialised networks and online refinement on (``target='all'``:
   DepthNet and PoseNet learn from the self-supervised photometric + feature-metric losses);
3. plays the sequence to the node several times, frame by frame, like a camera driving the
   same corridor again and again, while the refinement thread learns in the background;
4. writes ``OUT/demo.png`` (input | depth | ground truth for a few frames of the first and the
   last pass) and ``OUT/trajectory.png`` (estimated vs ground-truth trajectory of the last pass,
   scale-aligned), and prints the median-scaled AbsRel of the first and the last pass and the
   scale-aligned ATE.

The network, the refinement and the losses are the real ones; only the input is synthetic.
The defaults finish in a few minutes on 2 CPU cores; ``--budget`` caps the learning time.
"""

import argparse
import os
import tempfile
import time

import numpy as np

from fmdepth_ros.cli import CliError


def configure_parser(parser):
    """Add the ``fmdepth demo`` arguments to ``parser``."""
    parser.add_argument('--frames', type=int, default=20,
                        help='frames of the synthetic sequence (default 20)')
    parser.add_argument('--out', default='demo_out', help='output directory (default demo_out/)')
    parser.add_argument('--passes', type=int, default=10,
                        help='times the sequence is played; the last one without learning '
                             '(default 10)')
    parser.add_argument('--iterations', type=int, default=4,
                        help='refinement Adam steps per window (default 4)')
    parser.add_argument('--lr', type=float, default=1e-4,
                        help='refinement learning rate (default 1e-4, the paper\'s)')
    parser.add_argument('--budget', type=float, default=360.0,
                        help='seconds of learning; then refinement stops and one final pass '
                             'is measured (default 360)')
    parser.add_argument('--seed', type=int, default=0, help='scene and network seed')
    parser.add_argument('--weights', default='',
                        help='start from this checkpoint (e.g. a short `fmdepth train` run on '
                             '`fmdepth synth` data) instead of random weights')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch threads (default: all cores)')


class _DemoGraph:
    """The fmdepth node plus a player node in one private rclpy context."""

    def __init__(self, config_path, args):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CameraInfo, Image

        from fmdepth_ros.ros.depth_node import DepthNode

        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context)
        params = {'config_file': config_path, 'weights': args.weights, 'device': 'cpu',
                  'refine': True,
                  'refine_target': 'all', 'refine_iterations': args.iterations,
                  'refine_lr': args.lr, 'refine_guard': True, 'publish_colored': False,
                  'max_frame_gap': 1.0, 'camera_info_wait': 0.2}
        self.node = DepthNode(context=self.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.player = rclpy.create_node('demo_player', context=self.context)
        self.depth, self.odom = {}, {}
        self.player.create_subscription(Image, 'depth/image', self._on_depth, 100)
        self.player.create_subscription(Odometry, 'odom', self._on_odom, 100)
        self.image_pub = self.player.create_publisher(Image, 'image', 10)
        self.info_pub = self.player.create_publisher(CameraInfo, 'camera_info', 10)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.player)

    def _on_depth(self, msg):
        from fmdepth_ros.ros.conversions import image_to_depth, stamp_to_ns
        self.depth[stamp_to_ns(msg.header.stamp)] = image_to_depth(msg)

    def _on_odom(self, msg):
        from fmdepth_ros.ros.conversions import stamp_to_ns
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        self.odom[stamp_to_ns(msg.header.stamp)] = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)

    def spin_until(self, condition, timeout):
        """Spin until ``condition()`` or ``timeout`` seconds; returns ``condition()``."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def play(self, seq, stamp_offset_ns, deadline=None):
        """Publish every frame, lock-step (its depth and odom, then an idle refiner).

        Refinement is switched off once ``time.monotonic()`` passes ``deadline``.
        """
        from std_msgs.msg import Header

        from fmdepth_ros.ros import conversions as conv
        stamps = []
        for i in range(len(seq)):
            stamp = int(seq.stamps_ns[i]) + stamp_offset_ns
            header = Header(frame_id='camera_optical', stamp=conv.stamp_from_ns(stamp))
            height, width = seq.images.shape[1:3]
            self.info_pub.publish(conv.camera_info_for(header, seq.K, width, height))
            self.image_pub.publish(conv.rgb_to_image(seq.images[i], header))
            answered = (lambda: stamp in self.depth) if i == 0 else (
                lambda: stamp in self.depth and stamp in self.odom)
            if not self.spin_until(answered, 120.0):
                raise CliError(f'the node did not answer frame {i} within 120 s')
            if deadline is not None and time.monotonic() > deadline and self.node.p['refine']:
                self.node.set_runtime_parameters(refine=False)
                print(f'learning budget used up at frame {i}: refinement off', flush=True)
            self.node.refiner.wait_idle(300.0)
            stamps.append(stamp)
        return stamps

    def close(self):
        """Stop the executor and the nodes."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.player.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def _pass_errors(graph, seq, stamps):
    from fmdepth_ros.metrics import evaluate_depth, mean_errors
    errors = [evaluate_depth(seq.depths[i], graph.depth[s], max_depth=80.0, garg_crop=False)[0]
              for i, s in enumerate(stamps)]
    return mean_errors(errors)['abs_rel']


def _pass_trajectory(graph, seq, stamps):
    """Estimated base_link positions of one pass, re-expressed relative to its first frame."""
    from scipy.spatial.transform import Rotation
    poses = []
    for s in stamps[1:]:
        x, y, z, qx, qy, qz, qw = graph.odom[s]
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat([qx, qy, qz, qw]).as_matrix()
        T[:3, 3] = (x, y, z)
        poses.append(T)
    return np.stack(poses)


def _ground_truth_base(seq):
    """GT T_odom_base of frames 1..N-1 with the node's default base -> optical rotation."""
    from fmdepth_ros.ros.conversions import xyz_rpy_to_matrix
    from fmdepth_ros.ros.params import DEFAULT_BASE_TO_CAMERA
    T_base_cam = xyz_rpy_to_matrix(DEFAULT_BASE_TO_CAMERA[:3], DEFAULT_BASE_TO_CAMERA[3:])
    T_cam_base = np.linalg.inv(T_base_cam)
    cam0_cam = np.linalg.inv(seq.poses[0])[None] @ seq.poses
    return (T_base_cam[None] @ cam0_cam @ T_cam_base[None])[1:]


def _save_figures(out, seq, graph, first, last, gt_poses, est_poses, ate):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = np.linspace(0, len(seq) - 1, 3).astype(int)
    fig, axes = plt.subplots(len(rows) * 2, 3, figsize=(12, 1.5 * 2 * len(rows) + 0.6))
    vmax = float(np.percentile(1.0 / seq.depths, 99))
    for r, i in enumerate(rows):
        for k, (label, stamps) in enumerate((('first pass', first), ('last pass', last))):
            ax = axes[2 * r + k]
            pred = graph.depth[stamps[i]]
            pred = pred * np.nanmedian(seq.depths[i]) / np.nanmedian(pred)
            ax[0].imshow(seq.images[i])
            ax[1].imshow(1.0 / pred, cmap='turbo', vmin=0, vmax=vmax)
            ax[2].imshow(1.0 / seq.depths[i], cmap='turbo', vmin=0, vmax=vmax)
            ax[0].set_ylabel(f'frame {i}\n{label}', fontsize=8)
            for a in ax:
                a.set_xticks([])
                a.set_yticks([])
    for a, title in zip(axes[0], ('input', 'depth (inverse, median-scaled)', 'ground truth')):
        a.set_title(title, fontsize=9)
    fig.tight_layout()
    _atomic_savefig(fig, os.path.join(out, 'demo.png'))
    plt.close(fig)

    gt = np.linalg.inv(gt_poses[0])[None] @ gt_poses
    est = np.linalg.inv(est_poses[0])[None] @ est_poses
    est_xyz = est[:, :3, 3] * ate['scale']
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(gt[:, 0, 3], gt[:, 1, 3], 'k-o', ms=3, label='ground truth')
    ax.plot(est_xyz[:, 0], est_xyz[:, 1], 'r-o', ms=3, label='fmdepth odom (scale-aligned)')
    ax.set_xlabel('x forward [m]')
    ax.set_ylabel('y left [m]')
    ax.set_title(f'base_link trajectory, last pass (ATE {ate["ate"]:.3f} m)')
    ax.axis('equal')
    ax.legend()
    fig.tight_layout()
    _atomic_savefig(fig, os.path.join(out, 'trajectory.png'))
    plt.close(fig)


def _atomic_savefig(fig, path):
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def run(args):
    """Run the demo; returns 0."""
    if args.frames < 4 or args.passes < 1 or args.iterations < 1:
        raise CliError('need --frames >= 4, --passes >= 1 and --iterations >= 1')
    import torch

    from fmdepth_ros.config import save_config, small_cpu_config
    from fmdepth_ros.data.synth import render_sequence
    from fmdepth_ros.metrics import compute_ate

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    start = time.monotonic()
    seq = render_sequence(args.frames, seed=args.seed)
    cfg = small_cpu_config()
    cfg.model.pose_height, cfg.model.pose_width = 32, 96
    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, 'demo_config.yaml')
        save_config(cfg, config_path)
        if args.weights and not os.path.isfile(args.weights):
            raise CliError(f'weights file not found: {args.weights}')
        try:
            graph = _DemoGraph(config_path, args)
        except Exception as exc:
            from fmdepth_ros.ros.model_setup import StartupError
            if isinstance(exc, StartupError):
                raise CliError(str(exc)) from None
            raise
        try:
            if not graph.spin_until(lambda: graph.image_pub.get_subscription_count() > 0
                                    and graph.node.depth_pub.get_subscription_count() > 0, 30):
                raise CliError('the node and the player did not discover each other')
            period = int(seq.stamps_ns[1] - seq.stamps_ns[0])
            pass_offset = (len(seq) + 20) * period        # > max_frame_gap: window reset
            passes = []
            for p in range(args.passes):
                last_pass = p == args.passes - 1 or not graph.node.p['refine']
                if last_pass:
                    graph.node.set_runtime_parameters(refine=False)
                passes.append(graph.play(seq, p * pass_offset, start + args.budget))
                stats = graph.node.refiner.stats()
                print(f'pass {p + 1}: AbsRel {_pass_errors(graph, seq, passes[-1]):.3f}, '
                      f'refined windows {stats["processed"]} (reverted {stats["reverted"]}), '
                      f'{time.monotonic() - start:.0f} s', flush=True)
                if last_pass:
                    break
            first, last = passes[0], passes[-1]
            abs_rel_first = _pass_errors(graph, seq, first)
            abs_rel_last = _pass_errors(graph, seq, last)
            gt_poses = _ground_truth_base(seq)
            est_poses = _pass_trajectory(graph, seq, last)
            ate = compute_ate(gt_poses, est_poses, alignment='scale')
            _save_figures(args.out, seq, graph, first, last, gt_poses, est_poses, ate)
        finally:
            graph.close()
    print(f'AbsRel (median-scaled) first pass {abs_rel_first:.3f} -> last pass '
          f'{abs_rel_last:.3f}; ATE (scale-aligned) {ate["ate"]:.3f} m over '
          f'{np.linalg.norm(gt_poses[-1, :3, 3] - gt_poses[0, :3, 3]):.1f} m; '
          f'{time.monotonic() - start:.0f} s')
    print(f'wrote {os.path.join(args.out, "demo.png")} and '
          f'{os.path.join(args.out, "trajectory.png")}')
    return 0


def main(argv=None):
    """Run ``fmdepth demo`` standalone."""
    parser = argparse.ArgumentParser(prog='fmdepth demo')
    configure_parser(parser)
    return run(parser.parse_args(argv))

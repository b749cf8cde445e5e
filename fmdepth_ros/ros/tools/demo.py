"""``fmdepth demo --synthetic``: train a small model, then the ROS node refines it online.

``fmdepth demo`` runs on the real KITTI clip shipped in ``data/`` (:mod:`demo_real`: training
fits in about 3 minutes on 2 cores, the whole demo in about 6.5). ``--synthetic`` runs this
module's corridor demo instead. No downloaded weights and no dataset are needed. It has two
phases:

a. **train**: renders a synthetic corridor (``data.synth``, seed ``--train-seed``) and trains a
   small model on it with the real trainer (``fmdepth train`` with ``config/synthetic_cpu.yaml``:
   ResNet-18, 96x64, Monodepth2 decoder, FeatureNet then DepthNet + PoseNet, self-supervised).
   The checkpoint is cached in ``OUT/model/``; a later run with the same settings reuses it.
b. **node**: renders a *different* corridor (``--seed``, never seen in training), starts the
   ``fmdepth`` node in this process (real rclpy, traffic stays on this host) with that
   checkpoint and online refinement on (``target='all'``: DepthNet and PoseNet learn from the
   self-supervised photometric + feature-metric losses while the node runs), and plays the
   sequence several times, frame by frame, like a camera driving the same corridor again.
   The last pass runs without refinement and is the one measured.

It prints the median-scaled AbsRel against the renderer's exact depth for every pass and the
scale-aligned ATE of the last pass, and writes ``OUT/demo.png`` (input | depth | ground truth
for three frames, first pass vs last pass) and ``OUT/trajectory.png``. The networks, the
trainer, the refinement and the losses are the real ones; only the input is synthetic.
"""

import argparse
import json
import os
import time

from fmdepth_ros.atomic_io import open_atomic, write_json_atomic
from fmdepth_ros.errors import CliError
import numpy as np

HELP = ('run the node live on the real KITTI clip shipped in data/ '
        '(--synthetic: on the built-in synthetic corridor)')


DEMO_CONFIG = 'synthetic_cpu.yaml'
HEIGHT, WIDTH = 64, 96


def configure_parser(parser):
    """Add the ``fmdepth demo`` arguments to ``parser``."""
    parser.add_argument('--out', default='demo_out', help='output directory (default demo_out/)')
    footage = parser.add_mutually_exclusive_group()
    footage.add_argument('--real', dest='real', action='store_true', default=True,
                         help='real KITTI footage, the default (data/: train '
                              'config/kitti_cpu.yaml on odometry 00, score on the city drive '
                              'against its LiDAR with the baselines, the node refining online '
                              'over it as a bag, OUT/real.png); about 3 minutes of training on '
                              '2 cores, cached')
    footage.add_argument('--synthetic', dest='real', action='store_false',
                         help='the built-in synthetic corridor instead (train on one corridor, '
                              'the node refines online on an unseen one; OUT/demo.png)')
    parser.add_argument('--train-seed', type=int, default=0,
                        help='--synthetic: seed of the training corridor (default 0)')
    parser.add_argument('--train-frames', type=int, default=40,
                        help='--synthetic: frames of the training corridor (default 40)')
    parser.add_argument('--train-steps', type=int, default=160,
                        help='--synthetic: training steps (10 FeatureNet + the rest '
                             'DepthNet/PoseNet; default 160)')
    parser.add_argument('--retrain', action='store_true',
                        help='train again even when OUT/ holds a matching checkpoint')
    parser.add_argument('--weights', default='',
                        help='skip phase a and start the node from this checkpoint')
    parser.add_argument('--seed', type=int, default=5,
                        help='--synthetic: seed of the unseen corridor the node runs on '
                             '(default 5)')
    parser.add_argument('--frames', type=int, default=12,
                        help='--synthetic: frames of the unseen corridor (default 12)')
    parser.add_argument('--passes', type=int, default=None,
                        help='passes of the city frames through the node, all learning '
                             '(default 3); --synthetic: times the corridor is played, the last '
                             'one without learning (default 4)')
    parser.add_argument('--iterations', type=int, default=None,
                        help='refinement Adam steps per window (default 5; --synthetic: 8)')
    parser.add_argument('--lr', type=float, default=None,
                        help="refinement learning rate (default: the node's, 1e-4; "
                             '--synthetic: 5e-5, as 1e-4 with fresh Adam moments on every '
                             'window makes steps that the guard often reverts when the whole '
                             'DepthNet + PoseNet learns)')
    parser.add_argument('--target', choices=('all', 'decoder'), default=None,
                        help="what the refinement updates (default: the node's, decoder; "
                             '--synthetic: all, DepthNet + PoseNet)')
    parser.add_argument('--node-frames', type=int, default=26,
                        help='first frames of the city clip played through the node '
                             '(default 26: 13 refined windows a pass; 78 = all)')
    parser.add_argument('--figure-frames', default='10,40,70',
                        help='city frames shown in OUT/real.png (default 10,40,70)')
    parser.add_argument('--budget', type=float, default=240.0,
                        help='--synthetic: seconds of online learning; then refinement stops '
                             'and one final pass is measured (default 240)')
    parser.add_argument('--threads', type=int, default=1,
                        help="torch intra-op threads (default 1: the node's inference and "
                             'refinement threads already run in parallel, and one thread each '
                             'stays fast on a busy machine)')


def package_file(*parts):
    """Path of ``parts`` (e.g. ``'config', 'x.yaml'``) in the source tree or the share folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, '..', '..', '..', *parts)]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(os.path.join(get_package_share_directory('fmdepth_ros'), *parts))
    except Exception:  # noqa: BLE001 - not installed as a ROS package: the tree copy serves
        pass
    for path in candidates:
        if os.path.exists(path):
            return os.path.normpath(path)
    raise CliError(f'cannot find {os.path.join(*parts)} (run from the source tree or install '
                   'the package)')


def _config_path():
    """``config/synthetic_cpu.yaml`` of the source tree or the installed share directory."""
    return package_file('config', DEMO_CONFIG)


def train_cached(out_dir, settings, train_argv, retrain=False, log=print, prepare=None):
    """Run ``fmdepth train`` with ``train_argv`` into ``out_dir``, or reuse its checkpoint.

    The checkpoint ``out_dir/checkpoint.pt`` is reused when ``out_dir/demo_settings.json``
    equals ``settings`` (a JSON-able dict: the parsed config and what else shapes the run) and
    ``retrain`` is false. ``prepare()`` runs before a training (e.g. to render its data).
    Returns the checkpoint path.
    """
    from fmdepth_ros import cli

    checkpoint = os.path.join(out_dir, 'checkpoint.pt')
    stamp = os.path.join(out_dir, 'demo_settings.json')
    if not retrain and os.path.isfile(checkpoint) and os.path.isfile(stamp):
        with open(stamp) as f:
            try:
                cached = json.load(f)
            except ValueError:
                cached = None
        if cached == settings:
            log(f'phase a: reusing the trained checkpoint {checkpoint} (same settings; '
                '--retrain to train again)')
            return checkpoint
    os.makedirs(out_dir, exist_ok=True)
    for stale in (stamp, checkpoint):       # fmdepth train refuses to overwrite a run
        if os.path.exists(stale):
            os.remove(stale)
    if prepare is not None:
        prepare()
    code = cli.main(['train', '--out', out_dir, '--device', 'cpu', '--no-progress']
                    + list(train_argv))
    if code != 0 or not os.path.isfile(checkpoint):
        raise CliError(f'fmdepth train failed (exit {code})')
    write_json_atomic(stamp, settings)
    return checkpoint


def given_or_trained(weights, train):
    """Phase a of both demos: checkpoint ``weights`` if given (it must exist), else ``train()``."""
    if weights:
        if not os.path.isfile(weights):
            raise CliError(f'weights file not found: {weights}')
        print(f'phase a: skipped, starting from {weights}')
        return weights
    return train()


def train_small_model(out_dir, train_seed=0, train_frames=40, steps=160, retrain=False,
                      log=print):
    """Phase a: train (or reuse) the demo model with ``fmdepth train``; its checkpoint path.

    Renders ``train_frames`` frames (96x64) of the corridor ``train_seed`` into
    ``out_dir/train_seq`` and runs the real trainer on them with ``config/synthetic_cpu.yaml``
    (10 FeatureNet steps, then DepthNet + PoseNet up to ``steps``). A checkpoint in
    ``out_dir`` trained with the same settings and config is reused unless ``retrain``.
    """
    import yaml

    from fmdepth_ros import cli

    config = _config_path()
    with open(config) as f:       # the parsed YAML: a comment edit keeps the cache valid
        settings = {'train_seed': train_seed, 'train_frames': train_frames, 'steps': steps,
                    'feature_steps': 10, 'config': yaml.safe_load(f)}
    data = os.path.join(out_dir, 'train_seq')

    def render():
        if cli.main(['synth', data, '--frames', str(train_frames), '--width', str(WIDTH),
                     '--height', str(HEIGHT), '--seed', str(train_seed)]) != 0:
            raise CliError('rendering the training corridor failed')
        log(f'phase a: training DepthNet + PoseNet on {train_frames} frames of corridor '
            f'{train_seed} for {steps} steps (fmdepth train, {os.path.basename(config)})')

    return train_cached(out_dir, settings,
                        ['--data', data, '--config', config, '--feature-steps', '10',
                         '--max-steps', str(steps), '--checkpoint-every', '0',
                         '--log-every', '40'], retrain, log, prepare=render)


class _DemoGraph:
    """The fmdepth node plus a player node in one private rclpy context."""

    def __init__(self, weights, args):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CameraInfo, Image

        from fmdepth_ros.ros.depth_node import DepthNode

        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(args=[], context=self.context)  # not sys.argv: fmdepth's options
        params = {'weights': weights, 'device': 'cpu', 'refine': True,
                  'refine_target': args.target, 'refine_iterations': args.iterations,
                  'refine_every': 1,  # every window: the corridor is short
                  'refine_lr': args.lr, 'refine_guard': True, 'publish_colored': False,
                  'max_frame_gap': 1.0, 'camera_info_wait': 0.2,
                  'cpu_threads': int(args.threads or 0)}
        self.node = DepthNode(context=self.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.player = rclpy.create_node('demo_player', context=self.context)
        self.depth, self.odom = {}, {}    # stamp ns -> depth [H, W] m / T_odom_base [4, 4]
        self.player.create_subscription(Image, 'depth/image', self._on_depth, 100)
        self.player.create_subscription(Odometry, 'odom', self._on_odom, 100)
        self.image_pub = self.player.create_publisher(Image, 'image', 10)
        self.info_pub = self.player.create_publisher(CameraInfo, 'camera_info', 10)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.player)

    def _on_depth(self, msg):
        from fmdepth_ros.messages import image_to_depth, stamp_to_ns
        self.depth[stamp_to_ns(msg.header.stamp)] = image_to_depth(msg)

    def _on_odom(self, msg):
        from fmdepth_ros.messages import pose_to_matrix, stamp_to_ns
        self.odom[stamp_to_ns(msg.header.stamp)] = pose_to_matrix(msg.pose.pose)

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
            if deadline is not None and time.monotonic() > deadline and self.node.params['refine']:
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
    """Mean AbsRel of one pass's depth images (median-scaled, no crop)."""
    from fmdepth_ros.metrics import DepthMetricAccumulator
    scores = DepthMetricAccumulator(max_depth=80.0, garg_crop=False)
    for i, s in enumerate(stamps):
        scores.add(seq.depths[i], graph.depth[s])
    return scores.result()['abs_rel']


def _pass_trajectory(graph, seq, stamps):
    """Estimated ``T_odom_base`` [N-1, 4, 4] of one pass's frames 1..N-1."""
    return np.stack([graph.odom[s] for s in stamps[1:]])


def _ground_truth_base(seq):
    """GT T_odom_base of frames 1..N-1 with the node's default base -> optical rotation."""
    from fmdepth_ros.messages import xyz_rpy_to_matrix
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
    from fmdepth_ros.metrics import evaluate_depth
    fig, axes = plt.subplots(len(rows) * 2, 3, figsize=(7.2, 1.6 * 2 * len(rows) + 0.4))
    vmax = float(np.percentile(1.0 / seq.depths, 99))
    for r, i in enumerate(rows):
        for k, (label, stamps) in enumerate((('first pass', first), ('last pass', last))):
            ax = axes[2 * r + k]
            pred = graph.depth[stamps[i]]
            pred = pred * np.nanmedian(seq.depths[i]) / np.nanmedian(pred)
            ax[0].imshow(seq.images[i])
            ax[1].imshow(1.0 / pred, cmap='turbo', vmin=0, vmax=vmax)
            ax[2].imshow(1.0 / seq.depths[i], cmap='turbo', vmin=0, vmax=vmax)
            error = evaluate_depth(seq.depths[i], graph.depth[stamps[i]], max_depth=80.0,
                                   garg_crop=False)[0]['abs_rel']
            ax[0].set_ylabel(f'frame {i}\n{label}\nAbsRel {error:.3f}', fontsize=7)
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
    with open_atomic(path) as f:
        fig.savefig(f, dpi=100, format='png')


SYNTHETIC_DEFAULTS = {'passes': 4, 'iterations': 8, 'lr': 5e-5, 'target': 'all'}


def run(args):
    """Run the demo (phase a: train or reuse, phase b: the node refining online); returns 0."""
    if args.real:
        from fmdepth_ros.ros.tools.demo_real import run_real
        return run_real(args)
    for name, value in SYNTHETIC_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.frames < 4 or args.passes < 2 or args.iterations < 1 or args.train_steps < 11:
        raise CliError('need --frames >= 4, --passes >= 2, --iterations >= 1 and '
                       '--train-steps >= 11')
    import torch

    from fmdepth_ros.data.synth import render_sequence
    from fmdepth_ros.metrics import compute_ate

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    start = time.monotonic()
    weights = given_or_trained(args.weights, lambda: train_small_model(
        os.path.join(args.out, 'model'), args.train_seed, args.train_frames, args.train_steps,
        args.retrain))
    train_seconds = time.monotonic() - start
    print(f'phase a: {train_seconds:.0f} s', flush=True)

    node_start = time.monotonic()
    torch.manual_seed(args.seed)
    seq = render_sequence(args.frames, width=WIDTH, height=HEIGHT, seed=args.seed)
    print(f'phase b: the node on the unseen corridor {args.seed} ({args.frames} frames '
          f'{WIDTH}x{HEIGHT}), online refinement on (target {args.target}, '
          f'{args.iterations} Adam steps per window, lr {args.lr:g}), {args.passes} passes',
          flush=True)
    try:
        graph = _DemoGraph(weights, args)
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
        print('(each pass restarts the stamps: the node warns about the stamp jump and resets '
              'its window and odometry, as intended)', flush=True)
        passes = []
        for p in range(args.passes):
            last_pass = p == args.passes - 1 or not graph.node.params['refine']
            if last_pass:
                graph.node.set_runtime_parameters(refine=False)
            passes.append(graph.play(seq, p * pass_offset, node_start + args.budget))
            stats = graph.node.refiner.stats()
            print(f'pass {p + 1}{" (refinement off, measured)" if last_pass else ""}: '
                  f'AbsRel {_pass_errors(graph, seq, passes[-1]):.3f}, refined windows '
                  f'{stats["processed"]} (kept {stats["processed"] - stats["reverted"]}, '
                  f'reverted {stats["reverted"]}), {time.monotonic() - node_start:.0f} s',
                  flush=True)
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
    node_seconds = time.monotonic() - node_start
    change = (abs_rel_last - abs_rel_first) / abs_rel_first
    verdict = ('online refinement lowered the depth error' if change < -0.02 else
               'online refinement did NOT lower the depth error this time')
    print(f'AbsRel vs ground truth (median-scaled) first pass {abs_rel_first:.3f} -> last '
          f'pass {abs_rel_last:.3f} ({100 * change:+.0f} %): {verdict}. ATE (scale-aligned) '
          f'{ate["ate"]:.3f} m over a {np.linalg.norm(gt_poses[-1, :3, 3]):.1f} m drive.')
    print(f'time: phase a {train_seconds:.0f} s, phase b {node_seconds:.0f} s, total '
          f'{time.monotonic() - start:.0f} s')
    print(f'wrote {os.path.join(args.out, "demo.png")} and '
          f'{os.path.join(args.out, "trajectory.png")}')
    return 0


def main(argv=None):
    """Run ``fmdepth demo`` standalone."""
    parser = argparse.ArgumentParser(prog='fmdepth demo')
    configure_parser(parser)
    return run(parser.parse_args(argv))

"""The ``fmdepth`` command-line program: one entry point, one module per subcommand.

Each subcommand module exposes ``configure_parser(parser)`` (adds its arguments) and
``run(args) -> int`` (exit code). Modules are imported lazily so ``fmdepth --help`` stays fast
and a subcommand's heavy imports (torch, rclpy) are paid only when it is used.
"""

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    'train': ('fmdepth_ros.train', 'train FeatureNet, then DepthNet+PoseNet, self-supervised'),
    'evaluate': ('fmdepth_ros.evaluate', 'KITTI Eigen depth metrics and odometry ATE'),
    'predict': ('fmdepth_ros.predict', 'run a checkpoint on an image or a folder'),
    'convert': ('fmdepth_ros.convert', 'import official FeatDepth / Monodepth2 weights'),
    'export': ('fmdepth_ros.export', 'deployable checkpoint: weights + config, no optimizer'),
    'bench': ('fmdepth_ros.bench', 'latency / throughput benchmark table'),
    'synth': ('fmdepth_ros.data.synth', 'render a synthetic sequence with ground truth'),
    'kitti2bag': ('fmdepth_ros.kitti2bag', 'convert a KITTI raw drive to a rosbag2 bag'),
    'replay': ('fmdepth_ros.ros.replay', 'play a rosbag2 bag through rclpy'),
    'record': ('fmdepth_ros.ros.record', 'run the node on a bag and store its outputs'),
    'demo': ('fmdepth_ros.ros.demo', 'run the node live on the built-in synthetic sequence'),
    'soak': ('fmdepth_ros.ros.soak', 'long-run reliability check of the node'),
}


class CliError(Exception):
    """An expected user-facing failure: printed as one line, exit code 2."""


def build_parser():
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog='fmdepth',
        description='FeatDepth self-supervised monocular depth and egomotion.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
        p.set_defaults(_module=module)
    return parser


def _build_parser_for(argv):
    """Import only the module of the requested subcommand (fast path)."""
    if argv and argv[0] in SUBCOMMANDS:
        name = argv[0]
        module_name, help_text = SUBCOMMANDS[name]
        parser = argparse.ArgumentParser(prog='fmdepth')
        sub = parser.add_subparsers(dest='command')
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(p)
        p.set_defaults(_module=module)
        return parser
    return build_parser()


def main(argv=None):
    """Entry point of ``fmdepth``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser_for(argv)
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except CliError as exc:
        print(f'fmdepth {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'fmdepth {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    # Run through the imported module so that ``CliError`` raised by subcommands (which import
    # ``fmdepth_ros.cli``) is the same class as the one caught here.
    from fmdepth_ros.cli import main as _main
    sys.exit(_main())

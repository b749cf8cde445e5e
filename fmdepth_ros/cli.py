"""The ``fmdepth`` command-line program: one entry point, one module per subcommand.

Subcommands are the ``fmdepth_ros.commands`` entry points of the installed distribution
(``setup.py``): ``name = module``, the module exposing ``HELP`` (one line),
``configure_parser(parser)`` and ``run(args) -> int``. Core commands live in
:mod:`fmdepth_ros.commands`, the ones that run the node in :mod:`fmdepth_ros.ros.tools`; this
dispatcher imports neither layer by name, only what the entry points name, and only the module
of the requested subcommand (``fmdepth --help`` imports all of them).

Any :class:`fmdepth_ros.errors.FmdepthError` raised by a subcommand is printed as one line,
exit code 2.
"""

import argparse
from importlib import import_module, metadata
import sys

from fmdepth_ros.errors import FmdepthError

ENTRY_POINT_GROUP = 'fmdepth_ros.commands'


def subcommands():
    """Return {name: module name} of the registered subcommands, sorted by name."""
    found = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if not found:
        raise SystemExit('fmdepth: no subcommands registered: install the package '
                         '(bash scripts/setup_env.sh, or colcon build)')
    return dict(sorted(found.items()))


def _add_subcommand(sub, name, module_name):
    module = import_module(module_name)
    parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
    module.configure_parser(parser)
    parser.set_defaults(_module=module)


def build_parser(argv=()):
    """Return the top-level parser; with ``argv[0]`` a subcommand, only that one is imported."""
    parser = argparse.ArgumentParser(
        prog='fmdepth',
        description='FeatDepth self-supervised monocular depth and egomotion.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    commands = subcommands()
    wanted = [argv[0]] if argv and argv[0] in commands else list(commands)
    for name in wanted:
        _add_subcommand(sub, name, commands[name])
    return parser


def main(argv=None):
    """Entry point of ``fmdepth``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except FmdepthError as exc:
        print(f'fmdepth {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'fmdepth {args.command}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    # Run through the imported module so that the error classes raised by subcommands are the
    # same ones as those caught here (``python -m`` runs this file as ``__main__``).
    from fmdepth_ros.cli import main as _main
    sys.exit(_main())

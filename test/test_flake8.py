"""flake8 over the package's Python files (ament_python's test_flake8, usable without ament).

Uses ``ament_flake8`` (PyPI ``ros-ament-flake8``, or a system ROS 2) with its ament
configuration, as ``colcon test`` does; without it, plain flake8 with the same settings.
Either runs the flake8 plugins that are installed: scripts/setup_env.sh installs ament's
(flake8-blind-except, -builtins, -class-newline, -comprehensions, -deprecated, -docstrings,
-import-order with the google style, -quotes).
Missing docstrings are test_pep257.py's job, as in ament.
"""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ament_flake8/configuration/ament_flake8.ini (Kilted), for the fallback without ament_flake8.
AMENT_IGNORE = 'B902,C816,D100,D101,D102,D103,D104,D105,D106,D107,D203,D212,D404,I202'
IMPORT_ORDER_STYLE = 'google'
MAX_LINE_LENGTH = 99


def lint_paths():
    """Return the paths to lint, relative to the repository root."""
    paths = ['fmdepth_ros', 'launch', 'test', 'setup.py']
    scripts = glob.glob(os.path.join(ROOT, 'scripts', '*.py'))
    paths += sorted(os.path.relpath(p, ROOT) for p in scripts)
    return [p for p in paths if os.path.exists(os.path.join(ROOT, p))]


ERRORS_MARK = '--- ament_flake8 errors ---'


def run_flake8(paths):
    """Run flake8 on ``paths`` from the repository root; return (exit code, report lines)."""
    if importlib.util.find_spec('ament_flake8') is not None:
        # ament's checker (what colcon test runs), in a fresh process: flake8 forks a worker
        # pool, and forking a test process that holds threads (pytest-xdist, rclpy) can crash
        code = ('import sys\nfrom ament_flake8.main import main_with_errors\n'
                'rc, errors = main_with_errors(argv=sys.argv[1:])\n'
                'print(MARK, *errors, sep="\\n")\nsys.exit(rc)').replace('MARK', repr(ERRORS_MARK))
        proc = subprocess.run([sys.executable, '-c', code, *paths], cwd=ROOT,
                              capture_output=True, text=True)
        assert 'Traceback' not in proc.stderr, proc.stderr
        report = proc.stdout.rsplit(ERRORS_MARK, 1)[-1]
        return proc.returncode, [line for line in report.splitlines() if line]
    options = [f'--max-line-length={MAX_LINE_LENGTH}', f'--extend-ignore={AMENT_IGNORE}']
    if importlib.util.find_spec('flake8_import_order') is not None:
        # flake8 rejects the option unless the plugin is installed
        options.append(f'--import-order-style={IMPORT_ORDER_STYLE}')
    proc = subprocess.run(
        [sys.executable, '-m', 'flake8', '--isolated', *options, *paths],
        cwd=ROOT, capture_output=True, text=True)
    assert 'No module named flake8' not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout.splitlines() + proc.stderr.splitlines()


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    """The package, launch files, tests and scripts are flake8 clean."""
    rc, errors = run_flake8(lint_paths())
    assert rc == 0, 'Found %d code style errors / warnings:\n' % len(errors) + '\n'.join(errors)

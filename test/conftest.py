"""Shared pytest set-up for fmdepth_ros.

Runs before any test module is imported, so the settings below reach every rclpy context and
every child process (``fmdepth ...``, ``ros2 launch ...``) that tests start:

* ``ROS_DOMAIN_ID``: one random domain per pytest session (1..100), so parallel test runs on
  one machine (CI jobs, several engineers) never see each other's topics. Set
  ``FMDEPTH_TEST_ROS_DOMAIN_ID`` to pin it (e.g. to watch a test with ``ros2 topic echo``).
  Under pytest-xdist (``-n 2``) worker ``gwK`` takes the session's domain + K: the controller
  draws the domain before the workers start and they inherit it.
* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless already set: tests stay on this host.
* ``AMENT_PREFIX_PATH`` gains the running venv (``sys.prefix``) when it holds an ament index,
  so ``ros2 launch fmdepth_ros ...`` and ``ament_index_python`` work without sourcing
  ``scripts/env.sh``.
* ``OMP_NUM_THREADS`` / ``torch.set_num_threads``: CI has 2 cores, shared by the xdist workers
  (2 threads without xdist, 1 per worker with ``-n 2``).

Markers: ``linter`` (style checks), ``slow`` (more than ~10 s), ``ros`` (needs rclpy / a ROS
graph). Deselect with e.g. ``-m 'not slow'``. Every test of a module that imports ROS at module
level (rclpy, ``*_msgs``, ``fmdepth_ros.ros``, ``node_helpers``), and every test using the
``ros_context`` fixture, is marked ``ros`` here; without rclpy those modules are not collected,
so ``-m 'not ros'`` runs where ROS 2 is not installed.

Fixture ``ros_context``: an initialised, private ``rclpy`` context for in-process tests.
"""

import ast
import functools
import os
import random
import re
import sys

import pytest

#: pytest-xdist worker index (0 without xdist) and worker count
WORKER = int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0')[2:] or 0)
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
TORCH_THREADS = max(1, 2 // WORKERS)


def _setup_process_environment():
    """Set the environment variables described in the module docstring."""
    pinned = os.environ.get('FMDEPTH_TEST_ROS_DOMAIN_ID')
    # 1..100: 0 is everyone's default domain; >101 collides with ephemeral ports on Linux.
    # The controller (or a plain session) draws the base; xdist workers inherit it.
    base = os.environ.setdefault('FMDEPTH_TEST_ROS_DOMAIN_BASE', pinned or str(
        random.SystemRandom().randint(1, 100 - 8)))
    os.environ['ROS_DOMAIN_ID'] = str(int(base) + WORKER)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('OMP_NUM_THREADS', str(TORCH_THREADS))
    index = os.path.join(sys.prefix, 'share', 'ament_index', 'resource_index')
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    if os.path.isdir(index) and sys.prefix not in prefixes:
        os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join([sys.prefix] + prefixes)


_setup_process_environment()


def pytest_configure(config):
    """Register the project's markers."""
    config.addinivalue_line('markers', 'linter: code style checks (flake8, pep257, xmllint)')
    for name in ('flake8', 'pep257', 'xmllint'):  # ament's per-linter markers
        config.addinivalue_line('markers', f'{name}: the {name} linter test')
    config.addinivalue_line('markers', 'slow: takes more than about 10 s on 2 CPU cores')
    config.addinivalue_line('markers', 'ros: needs rclpy and a ROS 2 graph')


# Top-level modules that mean "this test module needs ROS" (test/node_helpers.py imports rclpy).
_ROS_MODULE = re.compile(r'^(rclpy|launch|launch_ros|launch_testing|ament_index_python|'
                         r'tf2\w*|\w+_msgs|\w+_srvs|\w+_interfaces|node_helpers)$')


@functools.lru_cache(maxsize=None)
def imports_ros(path):
    """Return whether the test file ``path`` imports a ROS module at module level."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            if _ROS_MODULE.match(name.split('.')[0]) or name.startswith('fmdepth_ros.ros'):
                return True
    return False


@functools.lru_cache(maxsize=None)
def rclpy_importable():
    """Return whether rclpy imports (False where ROS 2 is not installed)."""
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_ignore_collect(collection_path, config):
    """Skip collecting ROS test modules when rclpy is not installed."""
    path = str(collection_path)
    if path.endswith('.py') and os.path.basename(path).startswith('test_') \
            and not rclpy_importable():
        return imports_ros(path) or None
    return None


def pytest_collection_modifyitems(config, items):
    """Mark ``ros`` every test of a ROS-importing module and every test using ros_context."""
    for item in items:
        path = str(item.fspath)
        if imports_ros(path) or 'ros_context' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.ros)


def pytest_report_header(config):
    """Show the ROS domain of this session (to reproduce a run with FMDEPTH_TEST_ROS_DOMAIN_ID)."""
    return f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}"


_torch_threads_set = False


def pytest_runtest_setup(item):
    """Limit torch to TORCH_THREADS threads once a test module has imported torch."""
    global _torch_threads_set
    torch = sys.modules.get('torch')
    if torch is not None and not _torch_threads_set:
        torch.set_num_threads(TORCH_THREADS)
        _torch_threads_set = True


@pytest.fixture
def ros_context():
    """Yield an initialised private ``rclpy.context.Context``; shut it down afterwards.

    Pass it to everything ROS the test creates, so tests never share the global context::

        def test_talk(ros_context):
            node = rclpy.create_node('probe', context=ros_context)
            executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
            executor.add_node(node)
            ...
            node.destroy_node()   # optional: shutdown destroys what is left

    The session's random ROS_DOMAIN_ID applies (nodes of one test see each other and the
    processes the test starts, nothing else).
    """
    from node_helpers import ros_graph   # the one implementation of a private context

    with ros_graph() as context:
        yield context


@pytest.fixture(scope='session')
def tiny_synth_dir(tmp_path_factory):
    """Folder of a 10-frame 96x64 synthetic sequence written by ``fmdepth synth`` (read-only)."""
    from fmdepth_ros import cli
    out = tmp_path_factory.mktemp('synth') / 'seq'
    assert cli.main(['synth', str(out), '--frames', '10', '--width', '96',
                     '--height', '64', '--seed', '3']) == 0
    return str(out)


@pytest.fixture(scope='session')
def trained_model(tmp_path_factory):
    """Train a small model once per session like ``fmdepth demo`` phase a (~2 min CPU).

    A ``trained_model.TrainedModel``: ``.checkpoint`` path (config/synthetic_cpu.yaml trained
    160 steps on the synthetic corridor seed 0) and the training's wall / CPU seconds.
    """
    from trained_model import shared_trained_model
    return shared_trained_model(tmp_path_factory)

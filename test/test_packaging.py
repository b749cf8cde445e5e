"""The installed package: ament layout, executables, CLI help, and the core/ROS split.

Run after ``bash scripts/setup_env.sh`` (or a colcon build + sourced install). The install
prefix is found the way ``ros2 launch`` finds it: through the ament index on AMENT_PREFIX_PATH
(test/conftest.py adds the running venv).
"""

import ast
import contextlib
import glob
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile

from fmdepth_ros.cli import subcommands
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'fmdepth_ros'
CORE = os.path.join(ROOT, PACKAGE)
ROS_DIR = os.path.join(CORE, 'ros')

# Modules the ROS-free core must not import (``fmdepth_ros/ros/`` may).
ROS_MODULES = {'rclpy', 'launch', 'launch_ros', 'launch_testing', 'ament_index_python',
               'cv_bridge', 'message_filters', 'rosidl_runtime_py', 'rosbag2_py', 'rosidl_parser',
               'builtin_interfaces', 'fmdepth_ros.ros'}
ROS_MODULE_PATTERN = re.compile(r'^(tf2\w*|\w+_msgs|\w+_srvs|\w+_interfaces)$')
# Modules that read or write files: the networks use none of them (weights come in as state
# dicts, read by fmdepth_ros.encoder_weights / checkpoint).
FILE_MODULES = {'os', 'pathlib', 'shutil', 'tempfile', 'fmdepth_ros.checkpoint',
                'fmdepth_ros.encoder_weights', 'fmdepth_ros.atomic_io', 'fmdepth_ros.model'}
SUBCOMMANDS = subcommands()


def install_prefix():
    """Return the install prefix of fmdepth_ros from the ament index, or fail with a hint."""
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        marker = os.path.join(prefix, 'share', 'ament_index', 'resource_index', 'packages',
                              PACKAGE)
        if prefix and os.path.isfile(marker):
            return prefix
    pytest.fail(f'{PACKAGE} is not in the ament index of AMENT_PREFIX_PATH='
                f"{os.environ.get('AMENT_PREFIX_PATH')!r}: run bash scripts/setup_env.sh")


def find_executable(prefix, name):
    """Return the path of console script ``name`` (pip: bin/, colcon: lib/fmdepth_ros/)."""
    for folder in (os.path.join(prefix, 'bin'), os.path.join(prefix, 'lib', PACKAGE)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    pytest.fail(f'no executable {name} under {prefix}/bin or {prefix}/lib/{PACKAGE}')


def read(path):
    """Return the bytes of ``path``."""
    with open(path, 'rb') as f:
        return f.read()


def test_ament_index_marker_and_share_files():
    """The marker, package.xml, launch files and configs are installed under share/."""
    prefix = install_prefix()
    share = os.path.join(prefix, 'share', PACKAGE)
    expected = ['package.xml'] + [
        os.path.relpath(p, ROOT)
        for pattern in ('launch/*.launch.py', 'config/*.yaml')
        for p in glob.glob(os.path.join(ROOT, pattern))]
    for rel in expected:
        installed = os.path.join(share, rel)
        assert os.path.isfile(installed), f'{installed} missing: re-run scripts/setup_env.sh'
        assert read(installed) == read(os.path.join(ROOT, rel)), f'{installed} is stale'


def test_depth_node_is_where_ros2_launch_looks():
    """``<prefix>/lib/fmdepth_ros/depth_node`` runs the node (this tree's code in a dev venv)."""
    prefix = install_prefix()
    path = os.path.join(prefix, 'lib', PACKAGE, 'depth_node')
    assert os.path.isfile(path) and os.access(path, os.X_OK), path
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if text.startswith('#!/bin/sh') and 'bin/depth_node' in text:  # a pip wheel's launcher
        path = os.path.join(prefix, 'bin', 'depth_node')
        with open(path, encoding='utf-8') as f:
            text = f.read()
    interpreter = text.splitlines()[0][2:].split()[0]
    assert text.startswith('#!') and os.access(interpreter, os.X_OK), f'bad shebang in {path}'
    assert 'fmdepth_ros.ros.depth_node' in text
    if not os.path.isfile(os.path.join(prefix, '.fmdepth_setup_stamp')):
        return  # not a venv of scripts/setup_env.sh: a regular install of some version
    proc = subprocess.run(
        [interpreter, '-c', 'import fmdepth_ros; print(fmdepth_ros.__file__)'],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert os.path.dirname(os.path.realpath(proc.stdout.strip())) == os.path.realpath(CORE), (
        'the venv does not run this working tree (setup_env.sh installs it in editable mode)')


@pytest.mark.ros
def test_depth_node_entry_point_exists():
    """The ``depth_node`` console script's target is importable."""
    module = importlib.import_module('fmdepth_ros.ros.depth_node')
    assert callable(module.main)


def test_ros2_pkg_lists_depth_node():
    """``ros2 pkg executables`` (the ros2cli lookup behind ros2 run/launch) finds depth_node."""
    ros2 = shutil.which('ros2', path=os.path.join(sys.prefix, 'bin') + os.pathsep
                        + os.environ.get('PATH', ''))
    if ros2 is None:
        pytest.skip('ros2cli not installed (no ../shared/wheels/ros2-launch, no system ROS 2)')
    proc = subprocess.run([ros2, 'pkg', 'executables', PACKAGE],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f'{PACKAGE} depth_node' in proc.stdout.splitlines()


def test_venv_puts_itself_on_ament_prefix_path():
    """A venv made by setup_env.sh finds its ament packages without sourcing anything."""
    if not os.path.isfile(os.path.join(sys.prefix, '.fmdepth_setup_stamp')):
        pytest.skip('not running in a venv made by scripts/setup_env.sh')
    env = {k: v for k, v in os.environ.items()
           if k not in ('AMENT_PREFIX_PATH', '_ROS_WHEELS_BOOTSTRAP_COMPLETE')}
    proc = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.environ["AMENT_PREFIX_PATH"])'],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split(os.pathsep)[0] == sys.prefix


def test_fmdepth_help_lists_every_subcommand():
    """The installed ``fmdepth --help`` runs and names every subcommand."""
    fmdepth = find_executable(install_prefix(), 'fmdepth')
    proc = subprocess.run([fmdepth, '--help'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('usage: fmdepth')
    for name in SUBCOMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize('name', sorted(SUBCOMMANDS))
def test_subcommand_help(name):
    """``fmdepth <name> --help`` prints its usage and exits 0 (in-process: fast)."""
    from fmdepth_ros import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli.main([name, '--help'])
    assert exit_info.value.code == 0
    assert out.getvalue().startswith(f'usage: fmdepth {name}')


def package_of(path):
    """Return the dotted package name of a file in this repository."""
    return os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, '.')


def imported_modules(path, package):
    """Return {module name: imported at import time?} for file ``path`` of ``package``.

    Imports inside a function body run only when it is called (``False``); everything else,
    class bodies included, runs when the module is imported (``True``).
    """
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    names = {}

    def visit(node, in_function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        found = []
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                parts = package.split('.')
                base = parts[:len(parts) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found = [module] + [f'{module}.{alias.name}' for alias in node.names]
        for name in found:
            names[name] = names.get(name, False) or not in_function
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree, False)
    return names


def is_ros_module(name):
    """Return whether module ``name`` belongs to ROS (or to this package's ROS layer)."""
    parts = name.split('.')
    prefixes = {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}
    return bool(prefixes & ROS_MODULES) or bool(ROS_MODULE_PATTERN.match(parts[0]))


def is_allowed_in_core(name):
    """Return whether the core (all but fmdepth_ros/ros/) may import ``name``: no ROS module.

    Not even lazily inside a function: the ROS layer is reached only through the entry points
    that setup.py registers (``fmdepth_ros.commands``, ``depth_node``).
    """
    return not is_ros_module(name)


def core_files():
    """Return the package's Python files outside fmdepth_ros/ros/."""
    files = glob.glob(os.path.join(CORE, '**', '*.py'), recursive=True)
    return sorted(f for f in files if not f.startswith(ROS_DIR + os.sep))


def test_core_imports_no_ros():
    """The core (all but fmdepth_ros/ros/) imports no ROS module and not fmdepth_ros.ros."""
    offenders = {}
    for path in core_files():
        imports = imported_modules(path, package_of(path))
        bad = sorted(n for n in imports if not is_allowed_in_core(n))
        if bad:
            offenders[os.path.relpath(path, ROOT)] = bad
    assert offenders == {}, 'move ROS code into fmdepth_ros/ros/'


def test_ros_import_check_can_fail(tmp_path):
    """The import scan recognises ROS imports in every spelling (so the check above can fail)."""
    assert is_ros_module('rclpy.node')
    assert is_ros_module('sensor_msgs.msg')
    assert is_ros_module('tf2_ros')
    assert is_ros_module('fmdepth_ros.ros.conversions')
    assert not is_ros_module('rosbags.typesys')
    assert not is_ros_module('fmdepth_ros.geometry')
    probe = tmp_path / 'probe.py'
    probe.write_text('from ..ros import conversions\nfrom . import geometry\n'
                     'class A:\n    from geometry_msgs.msg import Pose\n'
                     'def f():\n    import rclpy.node\n    from .ros.record import record\n')
    names = imported_modules(str(probe), 'fmdepth_ros.data')
    assert names == {
        'fmdepth_ros.ros': True, 'fmdepth_ros.ros.conversions': True,
        'fmdepth_ros.data': True, 'fmdepth_ros.data.geometry': True,
        'geometry_msgs.msg': True, 'geometry_msgs.msg.Pose': True, 'rclpy.node': False,
        'fmdepth_ros.data.ros.record': False, 'fmdepth_ros.data.ros.record.record': False}
    allowed = {n for n in names if is_allowed_in_core(n)}
    assert allowed == {'fmdepth_ros.data', 'fmdepth_ros.data.geometry',
                       'fmdepth_ros.data.ros.record', 'fmdepth_ros.data.ros.record.record'}
    assert not is_allowed_in_core('fmdepth_ros.ros.tools.record')


def test_networks_read_no_files():
    """fmdepth_ros/networks/ imports no file-reading module and calls no torch.load / open."""
    offenders = {}
    for path in sorted(glob.glob(os.path.join(CORE, 'networks', '*.py'))):
        names = imported_modules(path, package_of(path))
        bad = sorted(n for n in names
                     if any(n == m or n.startswith(m + '.') for m in FILE_MODULES))
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                    'open', 'torch.load', 'torch.save'):
                bad.append(ast.unparse(node.func))
        if bad:
            offenders[os.path.relpath(path, ROOT)] = bad
    assert offenders == {}, 'networks take state dicts; read files in encoder_weights.py'


def test_dispatcher_registers_every_command_module():
    """Every module of fmdepth_ros/commands/ is registered, and each entry point has the API."""
    modules = {os.path.splitext(os.path.basename(p))[0]
               for p in glob.glob(os.path.join(CORE, 'commands', '*.py'))} - {'__init__'}
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        setup_py = f.read()
    for name in modules:     # export_gt.py is `fmdepth export-gt`; evaluate / bench are
        entry = name.replace('_', '-')     # registered by the ROS tools that extend them
        assert f"'{entry} = " in setup_py, f'fmdepth_ros/commands/{name}.py is not in setup.py'
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        assert isinstance(module.HELP, str) and callable(module.configure_parser), name
        assert callable(module.run), name


def test_setup_and_package_xml_agree():
    """setup.py and package.xml name the same package and version; scripts go to lib/<pkg>."""
    root = ET.parse(os.path.join(ROOT, 'package.xml')).getroot()
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        setup_py = f.read()
    assert root.findtext('name') == PACKAGE
    assert f"PACKAGE = '{PACKAGE}'" in setup_py
    assert f"version='{root.findtext('version')}'" in setup_py
    with open(os.path.join(ROOT, 'setup.cfg'), encoding='utf-8') as f:
        setup_cfg = f.read()
    assert f'script_dir=$base/lib/{PACKAGE}' in setup_cfg
    assert f'install_scripts=$base/lib/{PACKAGE}' in setup_cfg


def test_package_xml_declares_runtime_and_test_dependencies():
    """package.xml lists what the code imports at run time and the ament linters."""
    root = ET.parse(os.path.join(ROOT, 'package.xml')).getroot()
    depends = {e.text.strip() for e in root if e.tag in ('depend', 'exec_depend')}
    test_depends = {e.text.strip() for e in root if e.tag in ('depend', 'test_depend')}
    assert depends >= {
        'rclpy', 'sensor_msgs', 'geometry_msgs', 'nav_msgs', 'diagnostic_msgs', 'tf2_msgs',
        'tf2_ros', 'launch_ros', 'python3-torch', 'python3-numpy', 'python3-opencv',
        'python3-yaml'}
    assert test_depends >= {'ament_flake8', 'ament_pep257', 'ament_xmllint', 'python3-pytest'}


def third_party_imports(files):
    """Return {top-level or dotted module: files} imported by ``files`` (no stdlib, no own)."""
    own = {PACKAGE} | {os.path.splitext(os.path.basename(p))[0]
                       for p in glob.glob(os.path.join(ROOT, 'test', '*.py'))}
    found = {}
    for path in files:
        for name in imported_modules(path, package_of(path)):
            top = name.split('.')[0]
            if top in sys.stdlib_module_names or top in own or name.startswith(PACKAGE):
                continue
            found.setdefault(name, set()).add(os.path.relpath(path, ROOT))
    return found


def test_package_xml_matches_the_imports_through_one_table():
    """Imports (fmdepth_ros/, launch/, test/) are in the table; package.xml lists its keys."""
    from fmdepth_ros.dependencies import DEPENDENCIES, EXEC, module_key, TEST

    files = (glob.glob(os.path.join(CORE, '**', '*.py'), recursive=True)
             + glob.glob(os.path.join(ROOT, 'launch', '*.py')))
    test_files = glob.glob(os.path.join(ROOT, 'test', '*.py'))
    missing = {}
    for name, where in {**third_party_imports(test_files), **third_party_imports(files)}.items():
        if module_key(name) is None:
            missing[name] = sorted(where)[:2]
    assert missing == {}, 'add these modules to fmdepth_ros/dependencies.py'
    runtime = {module_key(n) for n in third_party_imports(files)}
    for key in runtime:
        assert DEPENDENCIES[key][2] == EXEC, f'{key} is imported by the package: scope exec'
    root = ET.parse(os.path.join(ROOT, 'package.xml')).getroot()
    declared = {tag: {e.text.strip() for e in root if e.tag in (tag, 'depend')}
                for tag in ('exec_depend', 'test_depend')}
    want_exec = {k for k, _, scope in DEPENDENCIES.values() if scope == EXEC}
    want_test = {k for k, _, scope in DEPENDENCIES.values() if scope == TEST} - want_exec
    assert declared['exec_depend'] == want_exec
    assert declared['test_depend'] == want_test
    for key in ('rcl_interfaces', 'rosgraph_msgs', 'ament_index_python', 'lifecycle_msgs',
                'python3-kornia-pip', 'python3-pil', 'python3-matplotlib', 'python3-tqdm',
                'python3-psutil', 'python3-tensorboard-pip', 'python3-rosbags-pip'):
        assert key in want_exec, key
    assert 'python3-hypothesis' in want_test


def test_setup_env_installs_the_tables_pip_requirements():
    """scripts/setup_env.sh reads its pip list from the table (and lists none of it itself)."""
    from fmdepth_ros.dependencies import pip_requirements

    with open(os.path.join(ROOT, 'scripts', 'setup_env.sh'), encoding='utf-8') as f:
        script = f.read()
    assert '"$ROOT/$PKG/dependencies.py" --pip' in script
    proc = subprocess.run([sys.executable, os.path.join(CORE, 'dependencies.py'), '--pip'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == pip_requirements()
    assert {'kornia', 'rosbags', 'psutil', 'ros-lifecycle-msgs'} <= set(pip_requirements())


def test_ci_runs_the_readme_test_command():
    """``.ci/run`` contains README's test command verbatim."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    with open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8') as f:
        ci = f.read()
    commands = re.findall(
        r'^\s*(?:\$ |`)?(bash scripts/setup_env\.sh && \S*python -m pytest[^\n`]*)',
        readme, flags=re.MULTILINE)
    assert commands, 'README has no "bash scripts/setup_env.sh && ... -m pytest ..." line'
    assert commands[0].strip() in ci


#: the shipped KITTI split files and their licence (installed under share/fmdepth_ros/splits)
SPLIT_FILES = os.path.join('splits', '*', '*.txt')
SPLIT_LICENCE = os.path.join('splits', 'LICENSE.FeatDepth')
#: the real KITTI clip of ``fmdepth demo`` (its calibration and pose files)
REAL_CLIP_FILES = os.path.join('data', '*', '*.txt')


def copy_package_sources(dest):
    """Copy what setup.py needs into ``dest`` (builds must not litter the working tree)."""
    keep = ['package.xml', 'setup.py', 'setup.cfg', 'LICENSE', 'resource', PACKAGE, 'launch',
            'config', 'splits', 'data', os.path.join('scripts', 'pip_launcher')]
    for name in keep:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(dest, name),
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        elif os.path.exists(path):
            os.makedirs(dest, exist_ok=True)
            shutil.copy(path, os.path.join(dest, name))


def test_pip_wheel_carries_the_ament_layout(tmp_path):
    """A plain ``pip install`` (a wheel) installs share/ files and lib/fmdepth_ros/depth_node."""
    source = tmp_path / 'src'
    copy_package_sources(source)
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
         '-w', str(tmp_path / 'dist'), str(source)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = glob.glob(str(tmp_path / 'dist' / '*.whl'))
    data = f'{PACKAGE}-0.1.0.data/data/'
    with zipfile.ZipFile(wheel) as archive:
        entries = {info.filename: info for info in archive.infolist()}
        launcher = entries[data + f'lib/{PACKAGE}/depth_node']
        assert (launcher.external_attr >> 16) & 0o111, 'launcher is not executable'
        assert b'bin/depth_node' in archive.read(launcher)
    assert data + f'share/ament_index/resource_index/packages/{PACKAGE}' in entries
    assert data + f'share/{PACKAGE}/package.xml' in entries
    for pattern in ('launch/*.launch.py', 'config/*.yaml', SPLIT_FILES, SPLIT_LICENCE,
                    REAL_CLIP_FILES):
        for path in glob.glob(os.path.join(ROOT, pattern)):
            assert data + f'share/{PACKAGE}/' + os.path.relpath(path, ROOT) in entries


def test_colcon_build_installs_the_ament_layout(tmp_path):
    """``colcon build`` of a copy of the package gives a ROS user the same layout."""
    colcon = shutil.which('colcon', path=os.path.join(sys.prefix, 'bin') + os.pathsep
                          + os.environ.get('PATH', ''))
    if colcon is None:
        pytest.skip('colcon not installed (scripts/setup_env.sh installs it)')
    copy_package_sources(tmp_path / 'src' / PACKAGE)
    proc = subprocess.run(
        [colcon, '--log-base', str(tmp_path / 'log'), 'build',
         '--base-paths', str(tmp_path / 'src'), '--build-base', str(tmp_path / 'build'),
         '--install-base', str(tmp_path / 'install'),
         '--event-handlers', 'console_direct-'],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = tmp_path / 'install' / PACKAGE
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / PACKAGE).is_file()
    assert (prefix / 'share' / PACKAGE / 'package.xml').is_file()
    for pattern in ('launch/*.launch.py', 'config/*.yaml', SPLIT_FILES, SPLIT_LICENCE,
                    REAL_CLIP_FILES):
        for path in glob.glob(os.path.join(ROOT, pattern)):
            assert (prefix / 'share' / PACKAGE / os.path.relpath(path, ROOT)).is_file()
    for exe in ('depth_node', 'fmdepth'):
        assert os.access(prefix / 'lib' / PACKAGE / exe, os.X_OK), exe
    assert glob.glob(str(prefix / 'lib' / 'python3*' / 'site-packages' / PACKAGE / 'cli.py'))


@pytest.mark.ros
def test_tf2_msgs_round_trip_through_rclpy(ros_context):
    """tf2_msgs (built by setup_env.sh when no ROS 2 provides it) publishes and subscribes."""
    from geometry_msgs.msg import TransformStamped
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tf2_msgs.msg import TFMessage

    assert os.environ['ROS_DOMAIN_ID'] != '0'
    node = rclpy.create_node('packaging_probe', context=ros_context)
    received = []
    node.create_subscription(TFMessage, 'probe_tf', received.append, 10)
    publisher = node.create_publisher(TFMessage, 'probe_tf', 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    message = TFMessage(transforms=[TransformStamped(child_frame_id='camera')])
    for _ in range(100):
        publisher.publish(message)
        executor.spin_once(timeout_sec=0.05)
        if received:
            break
    assert received and received[0].transforms[0].child_frame_id == 'camera'


@pytest.mark.ros
def test_launch_ros_imports():
    """launch_ros (and the composition_interfaces it needs) import when ros2 launch exists."""
    ros2 = shutil.which('ros2', path=os.path.join(sys.prefix, 'bin') + os.pathsep
                        + os.environ.get('PATH', ''))
    if ros2 is None:
        pytest.skip('ros2cli not installed (no ../shared/wheels/ros2-launch, no system ROS 2)')
    from composition_interfaces.srv import LoadNode
    import launch_ros.actions

    assert LoadNode.Request().parameters == []
    assert hasattr(launch_ros.actions, 'Node')

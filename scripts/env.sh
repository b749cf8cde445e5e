# Source me (bash/zsh) after `bash scripts/setup_env.sh` to use the venv's ROS 2 from a shell:
#   source scripts/env.sh && ros2 launch fmdepth_ros depth.launch.py
# Activates the venv and puts it on AMENT_PREFIX_PATH (ament_index, hence `ros2 launch` /
# `ros2 pkg`, finds packages only there; the venv's python does that too, but tools started
# from a shell, e.g. a system ros2, need it). VENV=... selects another venv, as for setup_env.sh.
# With a system ROS 2 sourced, its prefixes stay on AMENT_PREFIX_PATH behind the venv.
if [ -n "${BASH_SOURCE:-}" ]; then
    _fmdepth_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
else
    _fmdepth_root="$(cd "$(dirname "$0")/.." && pwd)"  # zsh sets $0 to the sourced file
fi
_fmdepth_venv="${VENV:-$_fmdepth_root/.venv}"
if [ ! -x "$_fmdepth_venv/bin/python" ]; then
    echo "scripts/env.sh: no venv at $_fmdepth_venv: run 'bash scripts/setup_env.sh' first" >&2
else
    # shellcheck disable=SC1091
    . "$_fmdepth_venv/bin/activate"
    case ":${AMENT_PREFIX_PATH:-}:" in
        *":$_fmdepth_venv:"*) ;;
        *) export AMENT_PREFIX_PATH="$_fmdepth_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
    esac
fi
unset _fmdepth_root _fmdepth_venv

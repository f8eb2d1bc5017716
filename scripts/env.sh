# Source me: the environment every tesg_ros command runs in (plain venv, no ROS install).
# The ROS 2 Kilted wheels ship their shared libraries in <venv>/lib; DDS runs on Fast DDS.
_tesg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TESG_ROOT="$_tesg_root"
export TESG_VENV="${TESG_VENV:-$_tesg_root/.venv}"
# shellcheck disable=SC1091
. "$TESG_VENV/bin/activate"
case ":${LD_LIBRARY_PATH:-}:" in
  *":$TESG_VENV/lib:"*) ;;
  *) export LD_LIBRARY_PATH="$TESG_VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
esac
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Camera-sized frames need a larger Fast DDS shared-memory segment than the 0.5 MB default,
# otherwise they fall back to fragmented UDP and best-effort readers lose most of them.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_tesg_root/config/fastdds_large_images.xml}"
# Keep DDS traffic on this machine unless the user says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Models load from local directories only.
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
# Keep freed memory instead of returning it to the OS every frame (page faults on fresh
# large tensors cost up to half of a conv net's CPU time on small VMs).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=536870912}"
unset _tesg_root

# Sourced by the other scripts: installs what is missing and exports
#   SINKATTN_PY   the python that has torch (a cached venv outside the clone, or the system one)
#   SINKATTN_JOBS parallel build jobs
# Heavy installs live in $SINKATTN_CACHE (default ~/.cache/sinkattn) so reruns are fast; on a
# machine that already has everything (the offline GPU machine) nothing is installed.
set -euo pipefail
SINKATTN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SINKATTN_CACHE="${SINKATTN_CACHE:-$HOME/.cache/sinkattn}"
SINKATTN_JOBS="${SINKATTN_JOBS:-$(nproc)}"
export SINKATTN_ROOT SINKATTN_CACHE SINKATTN_JOBS

log() { printf '[setup] %s\n' "$*" >&2; }

# System tools: only what is missing, only where apt-get can install it.
need_pkgs=()
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v ninja >/dev/null || need_pkgs+=(ninja-build)
command -v g++ >/dev/null || need_pkgs+=(g++)
[ -f /usr/include/gtest/gtest.h ] || need_pkgs+=(libgtest-dev)
[ -f /usr/include/benchmark/benchmark.h ] || need_pkgs+=(libbenchmark-dev)
command -v clang++ >/dev/null || need_pkgs+=(clang)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing ${need_pkgs[*]}"
    # Offline (the GPU machine) this fails: carry on, and let each step say what it lacks.
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"; } \
      >/dev/null 2>&1 || log "could not install ${need_pkgs[*]} (offline?); continuing without"
  else
    log "missing ${need_pkgs[*]} and cannot apt-get them; continuing with what is here"
  fi
fi

# Python: use one that already has torch (GPU machine), else the cached venv.
if [ -n "${SINKATTN_PY:-}" ]; then
  :
elif python3 -c 'import torch, transformers' >/dev/null 2>&1; then
  SINKATTN_PY="$(command -v python3)"
else
  venv="$SINKATTN_CACHE/venv"
  stamp="$venv/.requirements.sha"
  want="$(sha256sum "$SINKATTN_ROOT/scripts/requirements.txt" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "creating the Python environment in $venv (torch is large: first run takes minutes)"
    mkdir -p "$SINKATTN_CACHE"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$SINKATTN_ROOT/scripts/requirements.txt"
    echo "$want" > "$stamp"
  fi
  SINKATTN_PY="$venv/bin/python"
fi
export SINKATTN_PY

# Whether a tool the tests need is here; outside CI a missing one skips its step with a message,
# in CI (CI=true) it is an error.
have_or_skip() {  # have_or_skip WHAT TEST-COMMAND...
  local what="$1"; shift
  "$@" >/dev/null 2>&1 && return 0
  if [ -n "${CI:-}" ]; then log "CI needs $what, which is missing"; exit 1; fi
  log "skipping the steps that need $what (not installed, and it could not be installed here)"
  return 1
}

# Build libsinkattn (and, with tests, the C++ tests) in build/<name>: build_lib NAME [cmake args]
build_lib() {
  local name="$1"; shift
  local dir="$SINKATTN_ROOT/build/$name" key tool
  # A build folder configured on another machine (copied to the GPU machine, say) names tools by
  # that machine's paths: configure afresh when one of them is missing here.
  for key in CMAKE_MAKE_PROGRAM CMAKE_CXX_COMPILER CMAKE_CUDA_COMPILER; do
    [ -f "$dir/CMakeCache.txt" ] || break
    tool=$(sed -n "s/^$key:[A-Z]*=//p" "$dir/CMakeCache.txt")
    if [ -n "$tool" ] && [ ! -x "$tool" ]; then
      log "build/$name was configured elsewhere ($key $tool is missing here): configuring afresh"
      rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"
      break
    fi
  done
  cmake -S "$SINKATTN_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  cmake --build "$dir" -j "$SINKATTN_JOBS"
}

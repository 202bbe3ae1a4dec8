#!/usr/bin/env bash
# GPU-machine side of the energy validation, run through the device tool from the checkout's
# root. Steps run in the order given:
#   stage       copy the payload chunks carried in this call (.carry/cN/part.*) to $PAYLOAD
#   info        GPU, driver, NVML facts
#   install     check and unpack the vLLM 0.23.0 payload (built by shared/gpu/build_payload.sh)
#               into /tmp/site, add the harness's missing wheels (.carry/wheels), patch vLLM
#   models      generate the dummy-weight model folders of bf16, fp8 and fp8-w8a8 (one at a time)
#   measure V   benchmarks/gpu/measure.py for variant V (bf16, fp8, fp8-w8a8) on GPU 0; results packed into $OUT
#   launch V…   one measure.py per GPU, in parallel, detached (setsid: survives the end of the call):
#               the i-th variant on GPU i; logs in $RESULTS/log-*.txt
#   wait S      wait until every launched measure.py has ended, or S seconds; show the logs' tails
#   pack NAME   pack $RESULTS into $OUT/results-NAME.tgz
#   cli ARGS…   `bench ARGS…` itself (last step: takes the remaining arguments); results packed
# The machine forgets everything 30 s after a call: make the calls back to back.
set -uo pipefail
T0=$(date +%s)
PAYLOAD=${PAYLOAD:-/tmp/vllm_payload}
SITE=/tmp/site
OUT=${OUT:-/tmp/out}
RESULTS=/tmp/gpu-results
mkdir -p "$PAYLOAD" "$OUT" "$RESULTS"
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 PYTHONUNBUFFERED=1
export VLLM_USE_FLASHINFER_SAMPLER=0   # flashinfer is not carried: PyTorch top-k/top-p sampler
export BENCH_VLLM_PYTHON=$(command -v python3) BENCH_MODELS_DIR=/tmp/models
log() { echo "[$(($(date +%s) - T0))s] $*"; }

stage() {
  for f in .carry/c*/*; do [ -f "$f" ] && cp -f "$f" "$PAYLOAD/"; done
  log "staged: $(ls "$PAYLOAD" | tr '\n' ' ')"
}

info() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv
  python3 -c 'import sys; print(sys.version)'
  python3 - <<'PY'
import pynvml as nv
nv.nvmlInit(); h = nv.nvmlDeviceGetHandleByIndex(0)
v = nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
print("energy counter mJ", nv.nvmlDeviceGetTotalEnergyConsumption(h), "| power W", nv.nvmlDeviceGetPowerUsage(h) / 1000,
      "| POWER_INSTANT ret", v.nvmlReturn, "| MIG", nv.nvmlDeviceGetMigMode(h))
PY
}

patch_humming() {
  # vLLM 0.23.0 imports every quantization method; `humming` needs a package not carried.
  # Make that import optional with a stand-in that keeps the method table's key.
  local f="$SITE/vllm/model_executor/layers/quantization/__init__.py"
  grep -q "humming-kernels not installed" "$f" && return 0
  python3 - "$f" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
old = "    from .humming import HummingConfig\n"
new = ("    try:\n        from .humming import HummingConfig\n"
       "    except ImportError:  # humming-kernels not installed\n"
       "        class HummingConfig:\n"
       "            @classmethod\n"
       "            def override_quantization_method(cls, *a, **k):\n"
       "                return None\n")
assert old in s, "pattern not found"
open(p, "w").write(s.replace(old, new, 1))
PY
}

install() {
  cat "$PAYLOAD"/part.* > /tmp/site.tar.xz
  (cd /tmp && sed "s#site.tar.xz#/tmp/site.tar.xz#" "$PAYLOAD/SHA256SUMS" | sha256sum -c -) || { log "SHA256 mismatch"; exit 1; }
  rm -rf "$SITE" && xz -d -T0 -c /tmp/site.tar.xz | tar -x -C /tmp && rm -f /tmp/site.tar.xz
  python3 -m pip install -q --no-deps --no-compile --target "$SITE" .carry/wheels/*.whl 2>&1 | grep -v -i warning
  patch_humming
  python3 -c 'import vllm, transformers, datasets, openai; print("vllm", vllm.__version__, "transformers", transformers.__version__, "datasets", datasets.__version__, "openai", openai.__version__)' 2>&1 | grep -v Warning
  log "installed"
}

measure() {
  local variant=$1 left=$((${DEADLINE:-570} - ($(date +%s) - T0)))
  log "measure $variant with ${left}s left"
  python3 benchmarks/gpu/measure.py "$variant" --out "$RESULTS" --deadline-s "$left" 2>&1 | grep -v -E "Warning|warn\(" | tail -60
  tar -czf "$OUT/results-$variant.tgz" -C "$RESULTS" .
  log "packed $(du -h "$OUT/results-$variant.tgz" | cut -f1)"
}

models() {
  for v in bf16 fp8 fp8-w8a8; do
    python3 -c "from harness.config import load_variant; from harness.progress import PlainProgress; \
from harness.runner import resolve_model_path; print(resolve_model_path(load_variant('$v'), True, PlainProgress())[0])" \
      2>&1 | grep -v -E "Warning|warn\(" | tail -2
  done
  log "models ready"
}

launch() {
  local i=0 left=$((${DEADLINE:-1500} - ($(date +%s) - T0)))
  for v in "$@"; do
    CUDA_VISIBLE_DEVICES=$i setsid nohup python3 benchmarks/gpu/measure.py "$v" --out "$RESULTS" --tag="-gpu$i" \
      --deadline-s "$left" ${LEVELS:+--levels $LEVELS} > "$RESULTS/log-$v-gpu$i.txt" 2>&1 < /dev/null &
    log "launched $v on GPU $i"
    i=$((i + 1))
  done
}

wait_plan() {
  local until=$(($(date +%s) + $1))
  while pgrep -f benchmarks/gpu/measure.py > /dev/null && [ "$(date +%s)" -lt "$until" ]; do sleep 5; done
  for f in "$RESULTS"/log-*.txt; do echo "== $f"; grep -v -E "Warning|warn\(|^\[[0-9]+/" "$f" | tail -6; done
  nvidia-smi --query-gpu=index,power.draw,temperature.gpu,memory.used --format=csv
  pgrep -f benchmarks/gpu/measure.py > /dev/null && log "still running" || log "all done"
}

pack() {
  tar -czf "$OUT/results-$1.tgz" -C "$RESULTS" --exclude='*.jsonl' --exclude='power.csv' . && log "packed $(du -h "$OUT/results-$1.tgz" | cut -f1)"
}

while [ $# -gt 0 ]; do
  case "$1" in
    stage) stage ;;
    info) info ;;
    install) install ;;
    measure) shift; measure "$1" ;;
    models) models ;;
    launch) shift; vs=(); while [ $# -gt 0 ] && [[ "$1" != -- ]]; do vs+=("$1"); shift; done; launch "${vs[@]}" ;;
    wait) shift; wait_plan "$1" ;;
    pack) shift; pack "$1" ;;
    cli) shift; python3 -m harness.cli "$@" --results-dir "$RESULTS" 2>&1 | grep -v -E "Warning|warn\(" | tail -40
         tar -czf "$OUT/results-cli.tgz" -C "$RESULTS" . ; exit 0 ;;
    *) log "unknown step $1"; exit 2 ;;
  esac
  shift
done

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
#   train GPU S N…  train the reference model on GPU `GPU` (detached, like launch): train_reference.py
#               with --stop-after-s S and the remaining arguments up to `--`; the training folder
#               (tokenizer, processor, portable config) is the one carried in .carry/refwork/folder,
#               written on the development machine by train_reference.py, so the committed model and
#               the GPU-trained weights share one tokenizer
#   refmodels S wait up to S s for the training, export the reference model (+ convert reference-fp8)
#               into $REFMODELS, and put the trained state (bf16, two files) into $OUT for the local export
#   refcopy     the committed reference models (benchmarks/models/reference, reference-fp8) into
#               $REFMODELS, for nightly-reference.yaml without training again
#   nightly CFG `bench nightly --config CFG`, detached; its results go where CFG says (under $RESULTS)
# The machine forgets everything 30 s after a call: make the calls back to back.
set -uo pipefail
T0=$(date +%s)
PAYLOAD=${PAYLOAD:-/tmp/vllm_payload}
SITE=/tmp/site
OUT=${OUT:-/tmp/out}
RESULTS=/tmp/gpu-results
REFMODELS=/tmp/refmodels
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
  echo "cores $(nproc)"; df -h /dev/shm /tmp | tail -2
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
  local busy="[b]enchmarks/gpu/measure.py|[t]rain_reference.py|[h]arness.cli nightly"
  while pgrep -f "$busy" > /dev/null && [ "$(date +%s)" -lt "$until" ]; do sleep 5; done
  for f in "$RESULTS"/log-*.txt; do echo "== $f"; grep -v -E "Warning|warn\(|^\[[0-9]+/" "$f" | tail -6; done
  nvidia-smi --query-gpu=index,power.draw,temperature.gpu,memory.used --format=csv
  pgrep -f "$busy" > /dev/null && log "still running" || log "all done"
}

train() {
  local gpu=$1 stop_s=$2; shift 2
  rm -rf /tmp/refwork && mkdir -p /tmp/refwork && cp -r .carry/refwork/folder /tmp/refwork/folder
  CUDA_VISIBLE_DEVICES=$gpu setsid nohup python3 benchmarks/models/train_reference.py --work /tmp/refwork \
    --device "${TRAIN_DEVICE:-cuda}" --stop-after-s "$stop_s" "$@" train > "$RESULTS/log-train.txt" 2>&1 < /dev/null &
  log "training on GPU $gpu: $*"
}

name_vision_rope() {
  # The payload's transformers 5.10 names the vision tower's rope "default" (the portable config
  # leaves the name out; it is said explicitly here, where only 5.10 reads these folders).
  python3 - "$REFMODELS"/reference* <<'PY'
import json, sys
for folder in sys.argv[1:]:
    path = f"{folder}/config.json"; config = json.load(open(path))
    config["vision_config"]["rope_parameters"] = {"rope_type": "default", "rope_theta": 100.0}
    json.dump(config, open(path, "w"), indent=2)
PY
}

refcopy() {
  # Into /tmp, like refmodels: the checkout is copied afresh at every call.
  rm -rf "$REFMODELS" && mkdir -p "$REFMODELS"
  cp -r benchmarks/models/reference benchmarks/models/reference-fp8 "$REFMODELS/"
  name_vision_rope
  log "committed reference models copied to $REFMODELS: $(du -sh "$REFMODELS" | cut -f1)"
}

refmodels() {
  local until=$(($(date +%s) + ${1:-600}))
  while pgrep -f "[t]rain_reference.py" > /dev/null && [ "$(date +%s)" -lt "$until" ]; do sleep 2; done
  pgrep -f "[t]rain_reference.py" > /dev/null && { log "training still running"; return 1; }
  grep -v -E "Warning|warn\(" "$RESULTS/log-train.txt" | tail -4
  # Into /tmp, not the checkout: every call copies the checkout afresh and would put the committed
  # folders back (benchmarks/gpu/nightly-reference.yaml points its variants here with `model:`).
  rm -rf "$REFMODELS" && mkdir -p "$REFMODELS"
  python3 benchmarks/models/train_reference.py --work /tmp/refwork --out "$REFMODELS/reference" \
    --sharpen "${SHARPEN:-4.0}" --softcap "${SOFTCAP:-100.0}" export 2>&1 | grep -v -E "Warning|warn\(|Writing" | tail -2
  python3 benchmarks/models/convert_fp8.py "$REFMODELS/reference" "$REFMODELS/reference-fp8" 2>&1 | tail -1
  name_vision_rope
  python3 benchmarks/models/train_reference.py --work /tmp/refwork split \
    --parts "$OUT/reference-state-a.pt" "$OUT/reference-state-b.pt" 2>&1 | grep -v -E "Warning|warn\(" | tail -1
  cp "$RESULTS/log-train.txt" "$OUT/log-train.txt"
  log "reference models ready in $REFMODELS; $(du -ch "$OUT"/reference-state-*.pt | tail -1 | cut -f1) of state in \$OUT"
}

nightly() {
  setsid nohup python3 -m harness.cli nightly --config "$1" > "$RESULTS/log-nightly-$(basename "$1" .yaml).txt" 2>&1 < /dev/null &
  log "nightly $1 started"
}

pack() {
  # Whole run folders (power traces too) where they fit the 16 MiB a returned file may be; else without them.
  tar -czf "$OUT/results-$1.tgz" -C "$RESULTS" .
  [ "$(stat -c %s "$OUT/results-$1.tgz")" -gt 16000000 ] && \
    tar -czf "$OUT/results-$1.tgz" -C "$RESULTS" --exclude='*.jsonl' --exclude='power.csv' .
  log "packed $(du -h "$OUT/results-$1.tgz" | cut -f1)"
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
    train) shift; gpu=$1 stop_s=$2; shift 2; ta=(); while [ $# -gt 0 ] && [[ "$1" != -- ]]; do ta+=("$1"); shift; done
           train "$gpu" "$stop_s" "${ta[@]}" ;;
    refmodels) shift; refmodels "$1" ;;
    refcopy) refcopy ;;
    nightly) shift; nightly "$1" ;;
    cli) shift; python3 -m harness.cli "$@" --results-dir "$RESULTS" 2>&1 | grep -v -E "Warning|warn\(" | tail -40
         tar -czf "$OUT/results-cli.tgz" -C "$RESULTS" . ; exit 0 ;;
    *) log "unknown step $1"; exit 2 ;;
  esac
  shift
done

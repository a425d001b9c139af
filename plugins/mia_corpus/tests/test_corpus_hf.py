"""Hugging Face datasets (``hf:NAME``), offline: save_to_disk folders and local data files."""

import json

import pytest

from mia_core import registry
from mia_core.errors import MiaError

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    """Keep the test's cache in tmp_path, and fail fast instead of retrying the (unreachable) hub."""
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def rows(data):
    return [(s.id, s.text, s.label) for s in data]


@pytest.fixture
def saved(tmp_path):
    train = datasets.Dataset.from_dict({"body": ["alpha", "beta", "gamma"], "key": ["a", "b", "c"],
                                        "member": [1, 0, 1]})
    test = datasets.Dataset.from_dict({"body": ["delta"], "key": ["d"], "member": [0]})
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder))
    single = tmp_path / "single"
    train.save_to_disk(str(single))
    return folder, single


def test_save_to_disk_folder(saved):
    folder, single = saved
    opts = {"text_field": "body", "id_field": "key", "label_field": "member"}
    data = registry.datasets.create(f"hf:{folder}", opts)
    assert data.length == 3
    assert rows(data) == [("a", "alpha", "member"), ("b", "beta", "nonmember"), ("c", "gamma", "member")]
    test = registry.datasets.create("hf:x", {**opts, "path": str(folder), "split": "test"})
    assert rows(test) == [("d", "delta", "nonmember")]
    plain = registry.datasets.create(f"hf:{single}", {"text_field": "body"})
    assert [s.id for s in plain] == [f"{single}/train:0", f"{single}/train:1", f"{single}/train:2"]
    # the common "member" column gives the labels without options; label_field=none ignores it
    assert [s.label for s in plain] == ["member", "nonmember", "member"]
    bare = registry.datasets.create(f"hf:{single}", {"text_field": "body", "label_field": "none"})
    assert [s.label for s in bare] == [None, None, None]
    streamed = registry.datasets.create(f"hf:{single}", {"text_field": "body", "streaming": "true"})
    assert streamed.length is None
    assert [s.text for s in streamed] == ["alpha", "beta", "gamma"]


def test_local_data_files(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"text": f"line {i}", "y": "member" if i % 2 else "nonmember"}) + "\n"
                         for i in range(20)))
    data = registry.datasets.create("hf:json", {"data_files": str(f), "label_field": "y"})
    assert data.length == 20
    samples = list(data)
    assert (samples[3].text, samples[3].label) == ("line 3", "member")
    # Format inferred from the extension when no builder is named.
    inferred = registry.datasets.create("hf:", {"data_files": str(f)})
    assert [s.text for s in inferred] == [s.text for s in samples]


def test_streaming_data_files_are_lazy(tmp_path):
    f = tmp_path / "big.csv"
    with f.open("w") as handle:
        handle.write("text\n")
        handle.writelines(f"row {i}\n" for i in range(20_000))
    data = registry.datasets.create("hf:csv", {"data_files": str(f), "streaming": "true"})
    assert data.length is None
    first = next(iter(data))
    assert first.text == "row 0"


def test_errors(saved, tmp_path):
    folder, single = saved
    with pytest.raises(MiaError, match=r"no column 'text' \(text_field\); columns present: body, key, member"):
        registry.datasets.create(f"hf:{single}", {})
    with pytest.raises(MiaError, match=r"no split 'validation'; splits present: train, test"):
        registry.datasets.create(f"hf:{folder}", {"text_field": "body", "split": "validation"})
    with pytest.raises(MiaError, match="unknown option.*text_column.*accepted: config, data_files"):
        registry.datasets.create(f"hf:{folder}", {"text_column": "body"})
    with pytest.raises(MiaError, match="expected true or false"):
        registry.datasets.create(f"hf:{folder}", {"streaming": "maybe"})
    with pytest.raises(MiaError, match="needs a name"):
        registry.datasets.create("hf:", {})
    with pytest.raises(MiaError, match="data_files: .*missing.jsonl does not exist"):
        registry.datasets.create("hf:json", {"data_files": str(tmp_path / "missing.jsonl")})
    # (datasets itself cannot reload an empty save_to_disk folder: wrap an in-memory one.)
    from mia_corpus.files import Settings
    from mia_corpus.hf import HFDataset

    empty = HFDataset("hf:empty", datasets.Dataset.from_dict({"text": []}), "empty/train", Settings({}))
    with pytest.raises(MiaError, match="dataset 'empty/train' has no samples"):
        list(empty)


def test_hub_dataset_not_available_offline():
    with pytest.raises(MiaError) as info:
        registry.datasets.create("hf:some-org/unavailable-dataset", {})
    message = str(info.value.message)
    assert "'some-org/unavailable-dataset' is not available offline" in message
    assert "save_to_disk" in message and "\n" not in message

"""The embedded corpus (dataset ``corpus``): contents, labels, ids, determinism, CLI listing."""

import json
from collections import Counter

import pytest

from mia_core import registry
from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.types import Dataset

PREAMBLE = ("We the People of the United States, in Order to form a more perfect Union, establish Justice, "
            "insure domestic Tranquility, provide for the common defence, promote the general Welfare, and "
            "secure the Blessings of Liberty to ourselves and our Posterity, do ordain and establish this "
            "Constitution for the United States of America.")


@pytest.fixture(scope="module")
def corpus():
    data = registry.datasets.create("Corpus", {})
    return data, list(data)


def test_corpus_loads_with_both_labels_balanced(corpus):
    data, samples = corpus
    assert isinstance(data, Dataset)
    assert data.length == len(samples) >= 60
    counts = Counter(s.label for s in samples)
    assert counts["member"] == counts["nonmember"] == len(samples) // 2
    # Alternating labels: any first N samples (mia prefix --size N) are balanced.
    assert [s.label for s in samples[:4]] == ["member", "nonmember", "member", "nonmember"]


def test_corpus_ids_are_unique_and_stable(corpus):
    _, samples = corpus
    ids = [s.id for s in samples]
    assert len(set(ids)) == len(ids)
    for expected in ("license/Apache-2.0/01", "license/BSD", "python/zen", "us/constitution-preamble",
                     "us/bill-of-rights", "us/gettysburg-address", "control/0001"):
        assert expected in ids
    again = [s.id for s in registry.datasets.create("corpus", {})]
    assert again == ids


def test_corpus_member_texts_are_the_real_documents(corpus):
    _, samples = corpus
    by_id = {s.id: s.text for s in samples}
    assert PREAMBLE in by_id["us/constitution-preamble"]
    assert by_id["python/zen"].startswith("The Zen of Python, by Tim Peters\n\nBeautiful is better than ugly.")
    assert "Four score and seven years ago our fathers brought forth on this continent" in by_id[
        "us/gettysburg-address"]
    assert "Congress shall make no law respecting an establishment of religion" in by_id["us/bill-of-rights"]
    assert "We hold these truths to be self-evident, that all men are created equal" in by_id[
        "us/declaration-of-independence/01"]
    # License passages are exact substrings of the shipped license, and together cover it.
    from mia_corpus.embedded import DOCUMENTS, read_document

    apache = read_document(next(d for d in DOCUMENTS if d.id == "license/Apache-2.0"))
    parts = [t for i, t in by_id.items() if i.startswith("license/Apache-2.0/")]
    assert all(p in apache for p in parts)
    assert parts[0].lstrip().startswith("Apache License")
    assert sum(len(p) for p in parts) > 0.95 * len(apache.strip())


def test_corpus_licenses_are_verbatim_copies():
    """The shipped license files equal the system's, where the system has them (Debian/Ubuntu)."""
    from pathlib import Path

    from mia_corpus.embedded import DOCUMENTS, read_document

    system = Path("/usr/share/common-licenses")
    if not system.is_dir():
        pytest.skip("no /usr/share/common-licenses on this system")
    for doc in DOCUMENTS:
        if doc.id.startswith("license/"):
            assert read_document(doc) == (system / doc.id.split("/", 1)[1]).read_text(encoding="utf-8"), doc.id


def test_corpus_zen_matches_the_stdlib():
    import codecs
    import sys
    import this  # noqa: F401

    zen = codecs.decode(sys.modules["this"].s, "rot13").strip()
    assert next(s.text for s in registry.datasets.create("corpus", {}) if s.id == "python/zen").strip() == zen


def test_corpus_passages_are_long_enough(corpus):
    _, samples = corpus
    # ~4 characters per token: 82 tokens (32 prefix + 50 suffix) need ~330 characters. Only the
    # Preamble (one famous sentence, kept whole on purpose) is shorter.
    short = [s.id for s in samples if len(s.text) < 330]
    assert short in ([], ["us/constitution-preamble"])


def test_control_split_is_deterministic_and_length_matched(corpus):
    _, samples = corpus
    members = [s for s in samples if s.label == "member"]
    controls = [s for s in samples if s.label == "nonmember"]
    assert [s.id for s in controls][:3] == ["control/0001", "control/0002", "control/0003"]
    again = list(registry.datasets.create("corpus", {"split": "nonmember"}))
    assert [(s.id, s.text) for s in again] == [(s.id, s.text) for s in controls]
    for member, ctrl in zip(members, controls, strict=True):
        assert len(member.text) <= len(ctrl.text) <= len(member.text) + 400
    assert "2026" in controls[0].text
    other_seed = list(registry.datasets.create("corpus", {"split": "nonmember", "seed": "7"}))
    assert other_seed[0].text != controls[0].text
    # The generated text shares no long passage with the members.
    member_text = "\n".join(m.text for m in members)
    for ctrl in controls[:10]:
        sentence = ctrl.text.split(". ")[1]
        assert sentence not in member_text


def test_corpus_splits(corpus):
    _, samples = corpus
    members = list(registry.datasets.create("corpus", {"split": "member"}))
    assert {s.label for s in members} == {"member"}
    assert len(members) == len(samples) // 2


def test_corpus_path_option_uses_own_files(tmp_path):
    (tmp_path / "member").mkdir()
    (tmp_path / "nonmember").mkdir()
    (tmp_path / "member" / "a.txt").write_text("seen text")
    (tmp_path / "nonmember" / "b.txt").write_text("unseen text")
    data = registry.datasets.create("corpus", {"path": str(tmp_path)})
    assert [(s.id, s.label) for s in data] == [("member/a.txt", "member"), ("nonmember/b.txt", "nonmember")]
    only = registry.datasets.create("corpus", {"path": str(tmp_path), "split": "nonmember"})
    assert [s.text for s in only] == ["unseen text"]
    with pytest.raises(MiaError, match="no sample is labelled member"):
        list(registry.datasets.create("corpus", {"path": str(tmp_path / "nonmember"), "split": "member"}))


def test_corpus_bad_options():
    with pytest.raises(MiaError, match="accepted: path, seed, split"):
        registry.datasets.create("corpus", {"spilt": "member"})
    with pytest.raises(MiaError, match="expected one of all, member, nonmember"):
        registry.datasets.create("corpus", {"split": "train"})


def test_cli_lists_the_datasets(runner):
    result = runner.invoke(cli, ["datasets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    for name in ("corpus", "files", "hf:NAME"):
        assert rows[name]["plugin"] == "corpus"
    result = runner.invoke(cli, ["datasets"])
    assert "corpus" in result.output and "Hugging Face" in result.output


@pytest.fixture
def byte_tokenizer(register_plugin):
    """The example plugin's UTF-8 byte tokenizer (``example-bytes``): exact and instant."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "plugins" / "mia_example" / "mia_example.py"
    spec = importlib.util.spec_from_file_location("mia_example_for_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    register_plugin(module, name="mia_example")


def test_cli_prefix_map_from_the_corpus(byte_tokenizer, runner, in_tmp):
    from mia_core.formats.prefixmap import PrefixMap

    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "Corpus", "--prefix_tokens",
                                 "32", "--size", "10", "--quiet"])
    assert result.exit_code == 0, result.output
    folders = list((in_tmp / "Prefixes").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("example-bytes_Corpus_32_start_")
    pmap = PrefixMap(folders[0])
    labels = list(pmap.read("sample_label"))
    assert labels == ["member", "nonmember"] * 5
    texts = {s.id: s.text for s in registry.datasets.create("corpus", {})}
    for sample_id, prefix in zip(pmap.read("sample_id"), pmap.read("prefixes"), strict=True):
        assert bytes(prefix.tolist()) == texts[sample_id].encode()[:32]


def test_cli_prefix_map_from_a_folder_and_bad_paths(byte_tokenizer, runner, in_tmp):
    (in_tmp / "mine").mkdir()
    (in_tmp / "mine" / "a.txt").write_text("a private text that is long enough for a prefix of 32 bytes")
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "mine", "--prefix_tokens",
                                 "32", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "files", "--dataset-option",
                                 "path=nothing.jsonl", "--quiet"])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "corpus", "--dataset-option",
                                 "splt=member", "--quiet"])
    assert result.exit_code == 1 and "accepted: path, seed, split" in result.output


def test_repeated_texts_come_first_each_with_its_source(corpus):
    from mia_corpus.embedded import REPEATED, read_document

    _, samples = corpus
    members = [s for s in samples if s.label == "member"]
    assert [s.id for s in members[:len(REPEATED)]] == [d.id for d in REPEATED]
    assert {"repeated/mit", "repeated/lorem-ipsum", "repeated/kjv-genesis-1", "repeated/kjv-psalm-23",
            "repeated/apache-2.0-notice", "repeated/gpl-3-notice", "repeated/declaration-paragraph-2"} <= \
        {d.id for d in REPEATED}
    for doc in REPEATED:
        assert doc.source and read_document(doc).strip()
    by_id = {s.id: s.text for s in samples}
    assert by_id["repeated/lorem-ipsum"].startswith("Lorem ipsum dolor sit amet, consectetur adipiscing elit")
    assert [len(by_id[f"repeated/kjv-{x}"].strip().splitlines()) for x in ("genesis-1", "psalm-23")] == [31, 6]


def test_per_file_notices_are_the_license_appendices_dedented():
    import textwrap

    from mia_corpus.embedded import DOCUMENTS, read_document

    docs = {d.id: read_document(d) for d in DOCUMENTS}
    for notice, license_id in (("repeated/apache-2.0-notice", "license/Apache-2.0"),
                               ("repeated/gpl-3-notice", "license/GPL-3"), ("repeated/gpl-2-notice", "license/GPL-2")):
        indented = docs[notice].strip().splitlines()
        body = docs[license_id]
        assert all(line.strip() in body for line in indented if line.strip())
        assert textwrap.dedent(docs[notice]) == docs[notice]
    assert docs["repeated/declaration-paragraph-2"].strip() in docs["us/declaration-of-independence"]

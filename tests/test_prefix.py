"""`mia prefix` / build_prefix_map with the example plugin's byte tokenizer (no model needed).

The byte tokenizer makes every check exact: token i of a sample is byte i of its UTF-8 text.
"""

import importlib.util
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from mia_core import hookimpl
from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.extraction.prefix import build_prefix_map, map_folder, parse_prefix_loc
from mia_core.formats.names import safe_name
from mia_core.formats.prefixmap import PrefixMap, PrefixMapWriter
from mia_core.token_rows import PAD
from mia_core.types import Sample

EXAMPLE = Path(__file__).parent / "plugins" / "mia_example" / "mia_example.py"


def load_example():
    spec = importlib.util.spec_from_file_location("mia_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TextsPlugin:
    """Datasets built from fixed texts, and an endless one of unknown length."""

    TEXTS = {
        "test-varying": ["short", "", "x" * 40, "héllo wörld, this one is long enough to use", "tiny",
                         "0123456789" * 9],
        "test-short": ["a", "bb", "ccc"],
        "test-empty": [],
        "test-surrogate": ["broken \ud83d escape in a long enough text", "fine text, long enough too"],
    }

    @hookimpl
    def mia_register_datasets(self, register) -> None:
        for name, texts in self.TEXTS.items():
            register(name, lambda n, o, texts=texts: ListDataset(n, texts))
        register("test-endless", lambda n, o: EndlessDataset(n))
        register("test-stream", lambda n, o: ListDataset(n, self.TEXTS["test-varying"], length=None))

    @hookimpl
    def mia_register_backends(self, register) -> None:
        register("test-api", lambda n, o: None, capabilities=("generate_text",))


class ListDataset:
    def __init__(self, name: str, texts: list[str], length: int | None = -1) -> None:
        self.name, self.texts = name, texts
        self.length = len(texts) if length == -1 else length

    def __iter__(self) -> Iterator[Sample]:
        for i, text in enumerate(self.texts):
            yield Sample(f"s{i}", text, "member" if i % 2 else None)


class EndlessDataset:
    length = None
    last: "EndlessDataset | None" = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.reads = 0
        EndlessDataset.last = self

    def __iter__(self) -> Iterator[Sample]:
        while True:
            self.reads += 1
            yield Sample(f"e{self.reads}", f"sample number {self.reads} " * 3)


@pytest.fixture
def plugins(register_plugin):
    register_plugin(load_example(), name="mia_example")
    register_plugin(TextsPlugin(), name="texts")


def texts_of(dataset: str, **options) -> dict[str, str]:
    from mia_core import registry

    return {s.id: s.text for s in registry.datasets.create(dataset, options)}


def make(runner, *args: str) -> Path:
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", *args])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.is_dir() and (folder / "prefix_map.h5").is_file()
    return folder


def check_rows(folder: Path, texts: dict[str, str], prefix_tokens: int, suffix_tokens: int) -> PrefixMap:
    """Every stored prefix and suffix equals the source text's bytes at the stored offset."""
    pm = PrefixMap(folder)
    prefixes, starts, ids = pm.read("prefixes"), pm.read("prefix_start"), pm.read("sample_id")
    assert prefixes.shape == (len(pm), prefix_tokens)
    for row, (sample_id, start, suffix) in enumerate(zip(ids, starts, pm.suffixes(), strict=True)):
        toks = list(texts[sample_id].encode())
        assert 0 <= start <= len(toks) - prefix_tokens
        assert prefixes[row].tolist() == toks[start:start + prefix_tokens]
        assert suffix.tolist() == toks[start + prefix_tokens:start + prefix_tokens + suffix_tokens]
    padded = pm.read("suffixes")
    for row, n in enumerate(pm.read("suffix_lengths")):
        assert (padded[row, n:] == PAD).all()
    return pm


def test_start_map_matches_source_and_records_provenance(plugins, runner, in_tmp):
    folder = make(runner, "--dataset", "example-counting", "--prefix_tokens", "12", "--suffix_tokens", "20")
    assert folder.parent == Path("Prefixes")
    assert folder.name.startswith("example-bytes_example-counting_12_start_")
    datetime.strptime(folder.name.rsplit("_", 2)[-2] + folder.name.rsplit("_", 2)[-1], "%Y%m%d%H%M%S")
    pm = check_rows(folder, texts_of("example-counting"), 12, 20)
    assert len(pm) == 20 and (pm.read("prefix_start") == 0).all()
    assert pm.read("sample_index").tolist() == list(range(20))
    assert pm.read("sample_label")[:2].tolist() == ["member", "nonmember"]
    a = pm.attrs
    assert a["tokenizer"] == "example-bytes" and len(a["tokenizer_fingerprint"]) == 16
    assert a["dataset"] == "example-counting" and a["dataset_options"] == {}
    assert (a["prefix_tokens"], a["suffix_tokens"], a["prefix_loc"], a["seed"]) == (12, 20, "start", 0)
    assert (a["size"], a["size_requested"], a["save"], a["crop"]) == (20, "all", True, False)
    assert (a["samples_read"], a["samples_used"], a["samples_skipped"]) == (20, 20, 0)
    assert a["complete"] is True and a["created"] and a["format_version"] == 1


def test_integer_location_is_clamped_and_suffix_shortened(plugins, runner, in_tmp):
    texts = texts_of("test-varying")
    folder = make(runner, "--dataset", "test-varying", "--prefix-tokens", "8", "--prefix-loc", "35",
                  "--suffix-tokens", "10")
    pm = check_rows(folder, texts, 8, 10)
    lengths = {i: len(t.encode()) for i, t in texts.items()}
    for sample_id, start in zip(pm.read("sample_id"), pm.read("prefix_start"), strict=True):
        assert start == min(35, lengths[sample_id] - 8)
    # "x"*40: start clamped to 32, nothing left after the prefix.
    row = pm.read("sample_id").tolist().index("s2")
    assert pm.read("prefix_start")[row] == 32 and pm.read("suffix_lengths")[row] == 0
    # "short" (5), "" (0) and "tiny" (4) are shorter than 8 tokens: skipped and counted.
    assert pm.attrs["samples_skipped"] == 3 and pm.attrs["samples_used"] == 3
    assert pm.read("sample_index").tolist() == [2, 3, 5]
    assert pm.attrs["rows_short_suffix"] == 2  # s2 (none left) and s3 (45 bytes: 2 left)


def test_random_location_is_reproducible_with_seed(plugins, runner, in_tmp):
    args = ["--dataset", "example-counting", "--dataset-option", "n=50", "--dataset-option", "words=40",
            "--prefix_tokens", "16", "--prefix_loc", "random", "--suffix_tokens", "30", "--no-save"]
    texts = texts_of("example-counting", n="50", words="40")
    first = check_rows(make(runner, *args, "--seed", "7"), texts, 16, 30)
    again = check_rows(make(runner, *args, "--seed", "7"), texts, 16, 30)
    other = check_rows(make(runner, *args, "--seed", "8"), texts, 16, 30)
    assert first.folder != again.folder  # same second: a new name, never an overwrite
    for name in ("prefixes", "suffixes", "prefix_start", "sample_index"):
        assert np.array_equal(first.read(name), again.read(name))
    assert not np.array_equal(first.read("prefix_start"), other.read("prefix_start"))
    # Every sample has room for a full suffix, so random windows keep one.
    assert (first.read("suffix_lengths") == 30).all()
    assert len(set(first.read("prefix_start").tolist())) > 10
    assert first.attrs["prefix_loc"] == "random" and first.attrs["seed"] == 7
    assert first.attrs["dataset_options"] == {"n": "50", "words": "40"}


def test_saved_dataset_is_csr_of_whole_dataset_or_cropped(plugins, runner, in_tmp):
    texts = texts_of("test-varying")
    whole = PrefixMap(make(runner, "--dataset", "test-varying", "--prefix_tokens", "8", "--size", "2"))
    assert len(whole) == 2 and whole.attrs["size_requested"] == 2
    saved = list(whole.iter_dataset())
    assert [s[0] for s in saved] == list(texts)  # --no-crop: the whole dataset, short samples too
    for sample_id, text, _label, tokens in saved:
        assert text == texts[sample_id] and tokens.tolist() == list(text.encode())
    assert [s[2] for s in saved] == ["", "member", "", "member", "", "member"]

    cropped = PrefixMap(make(runner, "--dataset", "test-varying", "--prefix_tokens", "8", "--size", "2",
                             "--crop"))
    # Cropped: the samples read until the map held 2 rows (s2 and s3), skipped ones included,
    # so sample_index still points into the saved rows.
    assert [s[0] for s in cropped.iter_dataset()] == ["s0", "s1", "s2", "s3"]
    assert cropped.read("sample_index").tolist() == [2, 3]
    assert cropped.attrs["samples_read"] == 4

    nosave = PrefixMap(make(runner, "--dataset", "test-varying", "--prefix_tokens", "8", "--no-save"))
    assert not nosave.has_dataset
    with pytest.raises(MiaError, match="no saved dataset"):
        next(nosave.iter_dataset())


def test_size_stops_reading_an_endless_stream(plugins, runner, in_tmp):
    folder = make(runner, "--dataset", "test-endless", "--prefix_tokens", "4", "--size", "3000", "--no-save")
    pm = PrefixMap(folder)
    assert len(pm) == 3000 and pm.attrs["samples_read"] == 3000
    assert EndlessDataset.last.reads <= 3000 + 1024  # read in batches, stopped when full
    folder = make(runner, "--dataset", "test-endless", "--prefix_tokens", "4", "--size", "5", "--no-save")
    assert EndlessDataset.last.reads == 16  # a small --size tokenizes a small batch
    # Unknown length and --save without --crop would never end; --crop ends it.
    folder = make(runner, "--dataset", "test-endless", "--prefix_tokens", "4", "--size", "5", "--crop")
    assert len(list(PrefixMap(folder).iter_dataset())) == 5


def test_progress_on_stderr_and_quiet(plugins, runner, in_tmp):
    loud = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "example-counting"])
    assert loud.exit_code == 0 and "prefix map" in loud.stderr and "samples" in loud.stderr
    assert loud.stdout.strip().startswith("Prefixes")  # stdout holds only the path
    assert "20/20" in loud.stderr  # known length: a bar with a total
    stream = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "test-stream"])
    assert stream.exit_code == 0 and "6 samples" in stream.stderr and "6/" not in stream.stderr  # unknown length
    quiet = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "example-counting", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_python_api_and_out_folder(plugins, tmp_path):
    folder = build_prefix_map("example-utf8", "Example-Counting", 5, prefix_loc=3, size=4, save=False,
                              out=tmp_path / "maps", quiet=True)
    assert folder.parent == tmp_path / "maps"
    assert folder.name.startswith("example-utf8_Example-Counting_5_3_")
    pm = check_rows(folder, texts_of("example-counting"), 5, 50)
    assert len(pm) == 4 and (pm.read("prefix_start") == 3).all()
    assert pm.attrs["dataset"] == "Example-Counting" and pm.attrs["dataset_name"] == "example-counting"
    assert pm.attrs["tokenizer"] == "example-utf8"
    for bad in ({"prefix_tokens": 0}, {"prefix_tokens": 5, "size": 0}, {"prefix_tokens": 5, "prefix_loc": "mid"},
                {"prefix_tokens": 5, "prefix_loc": -1}, {"prefix_tokens": 5, "suffix_tokens": -1}):
        with pytest.raises(ValueError):
            build_prefix_map("example-bytes", "example-counting", **{"out": tmp_path, **bad})


@pytest.mark.parametrize("args, message", [
    (["--prefix_tokens", "0"], "--prefix_tokens"),
    (["--prefix-tokens", "-3"], "--prefix-tokens"),
    (["--prefix_loc", "middle"], "prefix_loc must be"),
    (["--prefix_loc", "-1"], "prefix_loc must be"),
    (["--size", "0"], "positive integer"),
    (["--size", "some"], "positive integer"),
    (["--suffix_tokens", "-1"], "--suffix_tokens"),
    (["--dataset-option", "n"], "KEY=VALUE"),
])
def test_usage_errors_exit_2(plugins, runner, in_tmp, args, message):
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "example-counting", *args])
    assert result.exit_code == 2 and message in result.stderr
    assert not Path("Prefixes").exists()


def test_unknown_names_exit_2_with_suggestion(plugins, runner, in_tmp):
    result = runner.invoke(cli, ["prefix", "--model", "example-byts", "--dataset", "example-counting"])
    assert result.exit_code == 2
    assert "unknown tokenizer 'example-byts'" in result.stderr and "Did you mean 'example-bytes'" in result.stderr
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "example-countin"])
    assert result.exit_code == 2 and "Did you mean 'example-counting'" in result.stderr
    assert "Available:" in result.stderr and "test-varying" in result.stderr
    assert "Traceback" not in result.output


def test_api_model_without_tokenizer_is_explained(plugins, runner, in_tmp):
    result = runner.invoke(cli, ["prefix", "--model", "test-api", "--dataset", "example-counting"])
    assert result.exit_code == 2 and "has no tokenizer" in result.stderr and "--model gemma-3-270m" in result.stderr


def test_fewer_usable_samples_than_size_is_a_warning(plugins, runner, in_tmp):
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "test-varying", "--size", "10",
                                 "--prefix_tokens", "8", "-q"])
    assert result.exit_code == 0 and "only 3 usable samples (asked for 10)" in result.stderr
    assert len(PrefixMap(result.stdout.strip())) == 3


@pytest.mark.parametrize("dataset, reason", [
    ("test-short", "all 3 samples read are shorter than prefix_tokens=4"),
    ("test-empty", "yielded no samples"),
])
def test_no_usable_sample_is_an_error_and_writes_nothing(plugins, runner, in_tmp, dataset, reason):
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", dataset, "--prefix_tokens", "4"])
    assert result.exit_code == 1 and reason in result.stderr and "Traceback" not in result.output
    assert list(Path("Prefixes").iterdir()) == []


def test_plugin_errors_are_one_line(plugins, runner, in_tmp):
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "example-counting",
                                 "--dataset_option", "colour=red"])
    expected = "unknown option(s) for dataset 'example-counting': colour. Options accepted: n, words"
    assert result.exit_code == 1 and expected in result.stderr


def test_folder_names_are_safe_and_never_reused(tmp_path):
    now = datetime(2026, 11, 27, 14, 30, 15)
    assert safe_name("hf:org/model") == "hf-org-model" and safe_name("/data/my model/") == "data-my-model"
    first = map_folder(tmp_path, "hf:EleutherAI/pythia-70m", "Corpus", 10, "start", now)
    assert first.name == "hf-EleutherAI-pythia-70m_Corpus_10_start_20261127_143015"
    first.mkdir()
    second = map_folder(tmp_path, "hf:EleutherAI/pythia-70m", "Corpus", 10, "start", now)
    assert second.name == first.name + "_2"
    second.with_name(second.name + ".partial").mkdir()  # another run is writing it
    assert map_folder(tmp_path, "hf:EleutherAI/pythia-70m", "Corpus", 10, "start", now).name == first.name + "_3"


def test_parse_prefix_loc():
    assert parse_prefix_loc("tart") == "start" and parse_prefix_loc("Start") == "start"
    assert parse_prefix_loc("random") == "random" and parse_prefix_loc("9") == 9 and parse_prefix_loc(0) == 0
    for bad in ("-1", "1.5", "", "end", True, -2):
        with pytest.raises(ValueError):
            parse_prefix_loc(bad)


def test_map_file_is_chunked_and_compressed(plugins, tmp_path):
    folder = build_prefix_map("example-bytes", "example-counting", 8, out=tmp_path, quiet=True)
    with h5py.File(folder / "prefix_map.h5") as f:
        for name in ("prefixes", "suffixes", "dataset/tokens"):
            assert f[name].chunks is not None and f[name].compression == "gzip"


def test_writer_never_takes_over_a_folder_being_written(tmp_path):
    folder = tmp_path / "m"
    first = PrefixMapWriter(folder, 4, 2, {"tokenizer": "t", "tokenizer_fingerprint": "f"}, save_dataset=False)
    with pytest.raises(MiaError, match="another run is writing it"):
        PrefixMapWriter(folder, 4, 2, {"tokenizer": "t", "tokenizer_fingerprint": "f"}, save_dataset=False)
    first.add_rows(np.zeros((1, 4)), [[1, 2]], [0], ["a"], [""], [0])
    assert first.finish({}) == folder and len(PrefixMap(folder)) == 1
    with pytest.raises(MiaError, match="refusing to overwrite"):
        PrefixMapWriter(folder, 4, 2, {"tokenizer": "t", "tokenizer_fingerprint": "f"}, save_dataset=False)


def test_invalid_unicode_is_repaired_and_counted(plugins, runner, in_tmp):
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "test-surrogate", "-q"])
    assert result.exit_code == 0 and "1 samples held invalid Unicode" in result.stderr
    pm = PrefixMap(result.stdout.strip())
    assert pm.attrs["samples_repaired"] == 1 and len(pm) == 2
    saved = list(pm.iter_dataset())
    assert saved[0][1] == "broken \ufffd escape in a long enough text"
    assert saved[0][3].tolist() == list(saved[0][1].encode())


def test_cli_runs_outside_the_main_thread(plugins, runner, in_tmp):
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(
        runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "example-counting", "-q"])))
    thread.start()
    thread.join()
    assert results[0].exit_code == 0, results[0].output


def test_balance_draws_n_samples_balanced_over_labels(plugins, runner, in_tmp):
    """--size N --balance: N samples drawn at random (seeded), N/2 per label; another seed draws others."""
    folder = make(runner, "--dataset", "example-counting", "--prefix_tokens", "8", "--size", "6", "--balance",
                  "--seed", "3")
    pm = PrefixMap(folder)
    labels = pm.read("sample_label").tolist()
    assert len(pm) == 6 and labels.count("member") == 3 and labels.count("nonmember") == 3
    assert pm.attrs["balance"] is True
    check_rows(folder, texts_of("example-counting"), 8, 50)
    again = make(runner, "--dataset", "example-counting", "--prefix_tokens", "8", "--size", "6", "--balance",
                 "--seed", "3")
    assert PrefixMap(again).read("sample_id").tolist() == pm.read("sample_id").tolist()
    others = {tuple(PrefixMap(make(runner, "--dataset", "example-counting", "--prefix_tokens", "8", "--size", "6",
                                   "--balance", "--seed", str(seed))).read("sample_id").tolist())
              for seed in (4, 5, 6)}
    assert others - {tuple(pm.read("sample_id").tolist())}  # not always the first samples
    odd = PrefixMap(make(runner, "--dataset", "example-counting", "--prefix_tokens", "8", "--size", "5",
                         "--balance")).read("sample_label").tolist()
    assert sorted([odd.count("member"), odd.count("nonmember")]) == [2, 3]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--dataset", "example-counting", "--balance"], 2, "--balance draws --size N samples"),
    (["--dataset", "test-varying", "--size", "2", "--balance", "--prefix_tokens", "3"], 1,
     "--balance needs eligible samples (at least prefix + 50 suffix tokens) of at least two labels"),
    (["--dataset", "example-counting", "--size", "30", "--balance"], 1, "the largest balanced size is 20"),
])
def test_balance_errors_are_one_line(plugins, runner, in_tmp, args, code, message):
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", *args])
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output


def test_a_map_without_labels_is_said_in_one_line(plugins, runner, in_tmp):
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "test-endless", "--size", "3",
                                 "--prefix_tokens", "4", "--no-save"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "no member/nonmember labels" in line]
    assert len(notes) == 1 and "label_field=FIELD" in notes[0]
    result = runner.invoke(cli, ["prefix", "--model", "example-bytes", "--dataset", "example-counting"])
    assert "no member/nonmember labels" not in result.stderr


class StudyPlugin:
    """The issue's study: 30 members and 30 nonmembers, of which 1 member and 18 nonmembers are too short
    for a full 20-byte suffix after an 8-byte prefix."""

    @hookimpl
    def mia_register_datasets(self, register) -> None:
        def study(name, options):
            samples = [Sample(f"m{i}", f"member text {i:02d} " + "m" * (30 if i else 2), "member") for i in range(30)]
            samples += [Sample(f"n{i}", f"nonmember {i:02d} " + "n" * (2 if i < 18 else 30), "nonmember")
                        for i in range(30)]
            return StudyDataset(name, samples)

        register("test-study", study)


class StudyDataset:
    def __init__(self, name, samples):
        self.name, self.samples, self.length = name, samples, len(samples)

    def __iter__(self):
        return iter(self.samples)


def test_prefix_prints_eligible_rows_per_label_and_warns_of_a_shifted_balance(plugins, register_plugin, runner,
                                                                             in_tmp):
    register_plugin(StudyPlugin(), name="study")
    args = ["prefix", "--model", "example-bytes", "--dataset", "test-study", "--prefix_tokens", "8",
            "--suffix_tokens", "20", "--no-save"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    pm = PrefixMap(Path(result.stdout.strip()))
    full = pm.read("suffix_lengths") == 20
    labels = pm.read("sample_label").astype(str)
    # counted independently from the map's own rows: 29 of 30 members, 12 of 30 nonmembers have a full suffix
    assert (full & (labels == "member")).sum() == 29 and (full & (labels == "nonmember")).sum() == 12
    assert pm.attrs["rows_by_label"] == {"member": {"rows": 30, "full_suffix": 29},
                                         "nonmember": {"rows": 30, "full_suffix": 12}}
    assert "member" in result.stderr and "29" in result.stderr and "12" in result.stderr
    shift = 29 / 41 - 30 / 60  # the member share among full-suffix rows against all rows: +20.7 points
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and f"{shift * 100:+.1f} points, more than 5" in warning[0]
    assert "50.0% of the labelled rows but 70.7%" in warning[0]

    # --min-suffix-tokens 20 keeps only full suffixes: every row counts, nothing shifts any more
    dropped = runner.invoke(cli, [*args, "--min-suffix-tokens", "20"])
    pm = PrefixMap(Path(dropped.stdout.strip()))
    assert len(pm) == 41 and (pm.read("suffix_lengths") == 20).all() and pm.attrs["samples_short_suffix"] == 19
    assert "warning:" not in dropped.stderr and "19 samples skipped by --min-suffix-tokens" in dropped.stderr

    # --balance draws among the full-suffix samples: 12 + 12, all eligible, seeded
    balanced = runner.invoke(cli, [*args, "--balance", "--size", "24", "--seed", "1"])
    pm = PrefixMap(Path(balanced.stdout.strip()))
    labels = pm.read("sample_label").astype(str).tolist()
    assert labels.count("member") == 12 and labels.count("nonmember") == 12
    assert (pm.read("suffix_lengths") == 20).all() and "warning:" not in balanced.stderr
    too_many = runner.invoke(cli, [*args, "--balance", "--size", "26"])
    assert too_many.exit_code == 1 and "only 12 eligible 'nonmember' samples" in too_many.output
    assert "the largest balanced size is 24" in too_many.output

    bad = runner.invoke(cli, [*args, "--min-suffix-tokens", "21"])
    assert bad.exit_code == 2 and "--min-suffix-tokens 21 is more than --suffix_tokens 20" in bad.output


def test_map_rows_read_a_block_at_a_time_and_equal_the_whole_read(tmp_path, monkeypatch):
    """PrefixMap.lazy_rows (what a prompt loop walks) gives the rows of read(), suffixes trimmed to their
    lengths, across block boundaries, in any order, with negative indexes and slices, and refuses a row
    past the end."""
    from map_fixtures import write_map

    from mia_core.formats.prefixmap import MapRows, PrefixMap

    rng = np.random.default_rng(1)
    prefixes = rng.integers(0, 100, (23, 4))
    suffixes = [list(rng.integers(0, 100, int(n))) for n in rng.integers(0, 7, 23)]
    pmap = PrefixMap(write_map(tmp_path / "m", prefixes, suffixes, suffix_tokens=6, tokenizer="t", fingerprint="f"))
    monkeypatch.setattr(MapRows, "BLOCK", 5)
    lazy_prefixes, lazy_suffixes = pmap.lazy_rows("prefixes"), pmap.lazy_rows("suffixes", "suffix_lengths")
    assert len(lazy_prefixes) == 23
    for i in [0, 4, 5, 22, 3, 17, 17, 9]:
        assert lazy_prefixes[i].tolist() == prefixes[i].tolist()
        assert lazy_suffixes[i].tolist() == suffixes[i]
    assert lazy_prefixes[-1].tolist() == prefixes[-1].tolist()
    assert [s.tolist() for s in lazy_suffixes[3:8]] == suffixes[3:8]
    assert [s.tolist() for s in lazy_suffixes] == [s.tolist() for s in pmap.suffixes()]
    with pytest.raises(IndexError):
        lazy_prefixes[23]

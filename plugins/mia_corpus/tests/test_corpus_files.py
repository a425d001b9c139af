"""The local-files dataset (``files``, or a path typed as the dataset name)."""

import csv
import json
import tracemalloc

import pytest

from mia_core import registry
from mia_core.errors import MiaError


def load(path, **options):
    return registry.datasets.create("files", {"path": str(path), **options})


def rows(data):
    return [(s.id, s.text, s.label) for s in data]


def test_txt_by_file_line_paragraph(tmp_path):
    f = tmp_path / "doc.txt"
    f.write_text("first line\nsecond line\n\n\nnext paragraph\n")
    assert rows(load(f)) == [("doc.txt", "first line\nsecond line\n\n\nnext paragraph\n", None)]
    assert load(f).length == 1
    assert rows(load(f, by="line")) == [("doc.txt:1", "first line", None), ("doc.txt:2", "second line", None),
                                        ("doc.txt:5", "next paragraph", None)]
    assert load(f, by="line").length is None
    assert rows(load(f, by="paragraph")) == [("doc.txt#1", "first line\nsecond line", None),
                                             ("doc.txt#2", "next paragraph", None)]


def test_folder_is_recursive_sorted_and_labels_from_folder_names(tmp_path):
    for rel, text in [("b.txt", "B"), ("a/z.txt", "AZ"), ("a/c.txt", "AC"), ("member/x.txt", "X"),
                      ("nonmember/deep/y.txt", "Y"), (".hidden.txt", "H"), ("notes.md", "ignored")]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    data = load(tmp_path)
    assert data.length == 5
    assert rows(data) == [("a/c.txt", "AC", None), ("a/z.txt", "AZ", None), ("b.txt", "B", None),
                          ("member/x.txt", "X", "member"), ("nonmember/deep/y.txt", "Y", "nonmember")]
    assert rows(data) == rows(load(tmp_path))  # re-iterable, same order
    # label= applies to every sample (folder names no longer decide).
    assert {s.label for s in load(tmp_path, label="nonmember")} == {"nonmember"}


def test_jsonl_fields_and_labels(tmp_path):
    f = tmp_path / "data.jsonl"
    records = [{"doc": "one", "key": "k1", "is_member": 1}, {"doc": "two", "key": "k2", "is_member": "nonmember"},
               {"doc": "three", "key": 3, "is_member": None}]
    f.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    # is_member is a common label field: read without options; label_field=none ignores it
    assert rows(load(f, text_field="doc")) == [("data.jsonl:1", "one", "member"),
                                               ("data.jsonl:2", "two", "nonmember"), ("data.jsonl:3", "three", None)]
    assert rows(load(f, text_field="doc", label_field="none")) == [
        ("data.jsonl:1", "one", None), ("data.jsonl:2", "two", None), ("data.jsonl:3", "three", None)]
    assert rows(load(f, text_field="doc", id_field="key", label_field="is_member")) == [
        ("k1", "one", "member"), ("k2", "two", "nonmember"), ("3", "three", None)]


def test_json_list_and_wrapped_list(tmp_path):
    f = tmp_path / "list.json"
    f.write_text(json.dumps([{"text": "a", "label": "member"}, {"text": "b", "label": "false"}]))
    assert rows(load(f, label_field="label")) == [("list.json:0", "a", "member"), ("list.json:1", "b", "nonmember")]
    g = tmp_path / "wrapped.json"
    g.write_text(json.dumps({"version": 1, "data": ["x", "y"]}))
    assert [s.text for s in load(g)] == ["x", "y"]


def test_csv_and_tsv(tmp_path):
    f = tmp_path / "data.csv"
    with f.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerow(["r1", "hello, world\nsecond line", "member"])
        writer.writerow(["r2", "x" * 200_000, "nonmember"])  # beyond csv's default field limit
    assert [(s.id, s.text[:12], s.label) for s in load(f, id_field="id", label_field="label")] == [
        ("r1", "hello, world", "member"), ("r2", "x" * 12, "nonmember")]
    t = tmp_path / "data.tsv"
    t.write_text("body\tname\nsome text\tn1\n")
    assert rows(load(t, text_field="body", id_field="name")) == [("n1", "some text", None)]


def test_parquet_with_cheap_length(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "data.parquet"
    table = pa.table({"content": [f"text {i}" for i in range(2500)], "y": [i % 2 for i in range(2500)]})
    pq.write_table(table, f, row_group_size=1000)
    data = load(f, text_field="content", label_field="y")
    assert data.length == 2500
    samples = list(data)
    assert len(samples) == 2500
    assert (samples[0].id, samples[0].text, samples[0].label) == ("data.parquet:0", "text 0", "nonmember")
    assert (samples[2499].text, samples[2499].label) == ("text 2499", "member")


def test_path_typed_as_dataset_name(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("alpha")
    data = registry.datasets.create(str(tmp_path / "d"), {})
    assert rows(data) == [("a.txt", "alpha", None)]
    monkeypatch.chdir(tmp_path)
    assert registry.datasets.get("d/a.txt").name == "files"


def test_large_jsonl_is_streamed(tmp_path):
    f = tmp_path / "big.jsonl"
    line = json.dumps({"text": "y" * 400}) + "\n"
    with f.open("w") as handle:
        handle.writelines(line for _ in range(50_000))  # ~20 MB
        handle.write("{not json\n")
    it = iter(load(f))
    assert next(it).id == "big.jsonl:1"  # the first sample comes before the bad last line is read
    tracemalloc.start()
    count = 1
    with pytest.raises(MiaError, match=r"big.jsonl:50001: not valid JSON"):
        for _ in it:
            count += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 50_000
    assert peak < 2_000_000, f"reading a 20 MB jsonl traced {peak} bytes"


def test_large_csv_is_streamed(tmp_path):
    f = tmp_path / "big.csv"
    with f.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows(["z" * 400] for _ in range(30_000))
    tracemalloc.start()
    count = sum(1 for _ in load(f))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 30_000
    assert peak < 2_000_000


def test_errors(tmp_path):
    with pytest.raises(MiaError, match="does not exist"):
        load(tmp_path / "missing.jsonl")
    bad = tmp_path / "data.xlsx"
    bad.write_text("x")
    with pytest.raises(MiaError, match=r"unsupported file type '.xlsx'; supported: .txt, .jsonl"):
        load(bad)
    with pytest.raises(MiaError, match=r"holds no supported file \(found only: .xlsx\)"):
        load(tmp_path)
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"body": "x", "meta": 1}) + "\n")
    with pytest.raises(MiaError, match=r"no field 'text' \(text_field\); fields present: body, meta"):
        list(load(f))
    c = tmp_path / "d.csv"
    c.write_text("body,meta\nx,1\n")
    with pytest.raises(MiaError, match=r"no field 'text' .*fields present: body, meta"):
        list(load(c))
    with pytest.raises(MiaError, match=r"no field 'nope' \(label_field\)"):
        list(load(c, text_field="body", label_field="nope"))
    with pytest.raises(MiaError, match="label 'maybe' is neither member nor nonmember"):
        list(load(c, text_field="body", label="maybe"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(MiaError, match="has no samples"):
        list(load(empty))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n")
    with pytest.raises(MiaError, match="has no samples"):
        list(load(blank, by="line"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(MiaError, match="not utf-8 text"):
        list(load(latin))
    assert [s.text for s in load(latin, encoding="latin-1")] == ["café"]
    with pytest.raises(MiaError, match="needs --dataset-option path="):
        registry.datasets.create("files", {})
    with pytest.raises(MiaError, match="unknown option.*textfield. Did you mean .text_field.*accepted: by, encoding"):
        load(f, textfield="body")
    with pytest.raises(MiaError, match="expected one of file, line, paragraph"):
        load(f, by="sentence")



@pytest.mark.parametrize("field", ["label", "is_member", "member", "membership"])
def test_common_label_fields_are_read_without_options(tmp_path, field, capsys):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "a", field: "1"}) + "\n" + json.dumps({"text": "b", field: False}) + "\n")
    assert [s.label for s in load(f)] == ["member", "nonmember"]
    assert f"labels read from field {field!r}" in capsys.readouterr().err
    c = tmp_path / "d.csv"
    c.write_text(f"text,{field}\na,member\nb,0\n")
    assert [s.label for s in load(c)] == ["member", "nonmember"]


def test_parquet_label_column_is_found(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "membership": [1, 0]}), tmp_path / "d.parquet")
    assert [s.label for s in load(tmp_path / "d.parquet")] == ["member", "nonmember"]


def test_an_unreadable_automatic_label_says_how_to_ignore_it(tmp_path):
    f = tmp_path / "sentiment.jsonl"
    f.write_text(json.dumps({"text": "good film", "label": "positive"}) + "\n")
    with pytest.raises(MiaError, match="label_field=none ignores it"):
        list(load(f))
    assert [s.label for s in load(f, label_field="none")] == [None]


@pytest.mark.parametrize("field", ["id", "_id", "doc_id", "sample_id"])
def test_common_id_fields_are_read_without_options(tmp_path, field, capsys):
    f = tmp_path / "study.jsonl"
    f.write_text(json.dumps({"text": "a", field: "doc-7", "label": 1}) + "\n"
                 + json.dumps({"text": "b", field: 12}) + "\n" + json.dumps({"text": "c"}) + "\n")
    # an id present is the sample id; a record without one keeps its position
    assert [s.id for s in load(f)] == ["doc-7", "12", "study.jsonl:3"]
    assert f"sample ids read from field {field!r}" in capsys.readouterr().err
    assert [s.id for s in load(f, id_field="none")] == ["study.jsonl:1", "study.jsonl:2", "study.jsonl:3"]
    c = tmp_path / "study.csv"
    c.write_text(f"{field},text\nx1,a\nx2,b\n")
    assert [s.id for s in load(c)] == ["x1", "x2"]


def test_id_field_priority_and_parquet_float_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "a", "sample_id": "s", "doc_id": "d", "_id": "u", "id": "i"}) + "\n"
                 + json.dumps({"text": "b", "sample_id": "s2", "doc_id": "d2"}) + "\n")
    # per record, the first of id, _id, doc_id, sample_id that it has
    assert [s.id for s in load(f)] == ["i", "d2"]
    pq.write_table(pa.table({"text": ["a", "b"], "doc_id": [3.0, 4.0], "label": [1.0, 0.0]}), tmp_path / "d.parquet")
    assert [(s.id, s.label) for s in load(tmp_path / "d.parquet")] == [("3", "member"), ("4", "nonmember")]


def test_duplicate_ids_name_both_records(tmp_path):
    f = tmp_path / "study.jsonl"
    f.write_text("\n".join(json.dumps({"text": t, "id": i}) for t, i in
                           [("a", "x"), ("b", "y"), ("c", "x")]) + "\n")
    with pytest.raises(MiaError, match=r"duplicate sample id 'x': study.jsonl:1 and study.jsonl:3"):
        list(load(f))
    # across the files of a folder too, and with an explicit id_field
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "a.csv").write_text("key,text\nk,one\n")
    (tmp_path / "more" / "b.csv").write_text("key,text\nk,two\n")
    with pytest.raises(MiaError, match=r"duplicate sample id 'k': a.csv:1 and b.csv:1"):
        list(load(tmp_path / "more", id_field="key"))


@pytest.mark.parametrize("member, nonmember", [(1.0, 0.0), ("1.0", "0.0"), (1, 0)])
def test_float_labels_are_member_and_nonmember(tmp_path, member, nonmember):
    """Labels written as floats (pandas, Parquet) or as their text are read, not refused."""
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "a", "label": member}) + "\n" + json.dumps({"text": "b", "label": nonmember}))
    assert [s.label for s in load(f)] == ["member", "nonmember"]
    c = tmp_path / "d.csv"
    c.write_text(f"text,is_member\na,{member}\nb,{nonmember}\n")
    assert [s.label for s in load(c)] == ["member", "nonmember"]


def test_a_name_that_looks_like_a_path_is_read_as_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for missing in ("data/missing.jsonl", "missing.csv", "./texts", "~/no-such-folder-for-mia-tests"):
        assert registry.datasets.get(missing).name == "files"
        with pytest.raises(MiaError, match="^no such file: .* \\(the dataset path does not exist\\)$"):
            registry.datasets.create(missing)
    assert registry.datasets.find("missing") is None  # a bare word stays an unknown dataset name
    assert registry.datasets.get("hf:org/name").name == "hf:NAME"


def test_the_corpus_options_that_need_your_own_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one", "label": "seen"}\n{"text": "two", "label": "unseen"}\n')
    with pytest.raises(MiaError, match="option\\(s\\) by, text_field apply to your own files only: add "
                                       "--dataset-option path="):
        registry.datasets.create("corpus", {"by": "line", "text_field": "body"})
    with pytest.raises(MiaError, match="option seed draws the generated control split"):
        registry.datasets.create("corpus", {"path": str(tmp_path), "seed": "7"})
    data = registry.datasets.create("corpus", {"path": str(tmp_path / "a.jsonl"), "split": "NonMember"})
    assert [(s.text, s.label) for s in data] == [("two", "nonmember")]  # seen/unseen: the core's label table

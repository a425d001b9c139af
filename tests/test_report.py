"""mia report: self-contained HTML and Markdown reports with plots."""

import base64
import re

import numpy as np
from scoring_fixtures import make_docs, make_map, make_run

from mia_core.cli import cli
from mia_core.scoring import plots
from mia_core.scoring.summary import score_run


def _two_runs(tmp_path):
    docs = make_docs(6, 90)
    runs = []
    for p in (5, 15):
        folder = make_map(tmp_path / f"map{p}", docs, prefix=p, suffix=30)
        gens = [d[p:p + 30] if i % 3 == 0 else np.r_[d[p:p + 8], np.arange(22)] for i, d in enumerate(docs)]
        runs.append(make_run(folder, gens, temperature=0.8))  # sampled: the estimate's unit is the generation
    return runs


def test_html_report_is_self_contained(tmp_path, runner):
    runs = _two_runs(tmp_path)
    out = tmp_path / "report.html"
    res = runner.invoke(cli, ["report", *map(str, runs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 4  # 2 histograms, rate vs prefix, extrapolation
    assert "src='http" not in text and "By label" in text and "95% CI" in text
    for blob in re.findall(r"base64,([A-Za-z0-9+/=]+)", text):
        assert base64.b64decode(blob)[:4] == b"\x89PNG"
    res = runner.invoke(cli, ["report", str(runs[0]), "--out", str(out)])
    assert res.exit_code == 1 and "already exists" in res.output
    res = runner.invoke(cli, ["report", str(runs[0]), "--out", str(tmp_path / "r.pdf")])
    assert res.exit_code == 2


def test_markdown_report_writes_pngs(tmp_path, runner):
    runs = _two_runs(tmp_path)
    out = tmp_path / "rep" / "report.md"
    res = runner.invoke(cli, ["report", *map(str, runs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "| exact extraction of the first 30 tokens | 2/6" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 4 and all((out.parent / i).is_file() for i in images)


def test_plots_render(tmp_path):
    runs = _two_runs(tmp_path)
    summaries = [score_run(r) for r in runs]
    for path in (plots.matched_length_histogram(summaries[0], tmp_path / "h.png"),
                 plots.rate_vs_prefix_length(summaries, tmp_path / "r.png"),
                 plots.extrapolation_plot({1: 30, 2: 10, 3: 4, 5: 1}, tmp_path / "e.png")):
        data = open(path, "rb").read()
        assert data[:4] == b"\x89PNG" and len(data) > 5000


def test_report_keeps_scores_made_with_other_options(tmp_path, runner):
    runs = _two_runs(tmp_path)
    assert runner.invoke(cli, ["score", str(runs[0]), "--k", "8"]).exit_code == 0
    scores = runs[0].with_name(runs[0].stem + ".scores.h5")
    before = scores.read_bytes()
    res = runner.invoke(cli, ["report", *map(str, runs), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert scores.read_bytes() == before  # --k 8 scores are not replaced by the report's defaults


def test_report_names_teacher_forced_accuracy_and_withholds_a_greedy_estimate(tmp_path, runner):
    """A generated and a teacher-forced run side by side: the generated run's per-position figure is the
    position agreement (generated), the teacher-forced run's the next-token accuracy (teacher-forced) (never
    pooled, never the same name; issue #31 renamed both); both are greedy runs of a map holding every
    document's start prefix, so the estimate is refused with its reason instead of a number."""
    docs = make_docs(4, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    gen = make_run(folder, [d[10:30] for d in docs], name="gen.h5")
    tf = make_run(folder, [d[10:30] for d in docs], name="tf.h5", method="teacher-forced")
    out = tmp_path / "r.md"
    res = runner.invoke(cli, ["report", str(gen), str(tf), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    run1, run2 = text.split("## Run 2")
    run2 = run2.split("\n## ")[0]  # up to the next top-level section (estimates, definitions)
    assert "| position agreement (generated), mean | 1.000 |" in run1 and "next-token accuracy (" not in run1
    assert "| next-token accuracy (teacher-forced), mean | 1.000 |" in run2 and "position agreement (" not in run2
    assert "| eligible rows by label | member 2 of 2, nonmember 2 of 2 |" in run1
    assert "not estimated" in text and "greedy" in text


def test_report_by_label_histogram_longest_extractions_definitions(tmp_path, runner, register_plugin):
    """Matched length by label as one plot, the longest extractions as text with the agreement marked,
    the definitions and provenance sections; a single prefix length draws no rate-vs-length plot."""
    from test_prompt_fakes import FakePlugin

    register_plugin(FakePlugin(), name="fake-report")
    docs = make_docs(6, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    gens = [d[10:30] if i % 2 == 0 else np.r_[d[10:10 + i], np.zeros(20 - i, dtype=int)] for i, d in enumerate(docs)]
    run = make_run(folder, gens, tokenizer="fake-tok-a")
    out = tmp_path / "r.md"
    res = runner.invoke(cli, ["report", str(folder), "--out", str(out), "--examples", "2"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "### Longest extractions" in text and text.count("matched 20 of 20 tokens") == 2
    first = docs[0][10:30]
    assert f"**{' '.join(f't{int(t)}' for t in first)}**" in text  # the reproduced suffix, highlighted
    assert "matched_length_1.png" in text and "rate_vs_prefix_length" not in text
    assert "## Definitions" in text and "**exact extraction**" in text and "## Provenance" in text
    assert "## Run 1" in text and "## Run 2" not in text  # the map's one run, not its scores file
    assert run.with_name(run.stem + ".scores.h5").is_file()


def test_single_valued_histogram_is_a_note_not_a_plot(tmp_path, runner):
    docs = make_docs(4, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    make_run(folder, [np.zeros(20, dtype=int) + 7 for _ in docs])  # nothing matches: every matched length is 0
    out = tmp_path / "r.md"
    res = runner.invoke(cli, ["report", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "all 4 eligible rows matched 0 tokens (one value)" in text and "matched_length_1.png" not in text
    assert "no eligible row reproduced even the first token" in text


def test_report_paths_that_are_not_runs(tmp_path, runner):
    docs = make_docs(4, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    res = runner.invoke(cli, ["report", str(folder), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 1 and "has no runs yet" in res.stderr
    run = make_run(folder, [d[10:30] for d in docs])
    assert runner.invoke(cli, ["score", str(run)]).exit_code == 0
    only_scores = runner.invoke(cli, ["report", str(run.with_name(run.stem + ".scores.h5")), "--out",
                                      str(tmp_path / "r.html")])
    assert only_scores.exit_code == 1 and "no run files among the paths given" in only_scores.stderr
    both = runner.invoke(cli, ["score", *map(str, sorted((folder / "runs").glob("*.h5"))), "--json"])
    assert both.exit_code == 0 and "skipped 1 scores file(s)" in both.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    res = runner.invoke(cli, ["score", str(plain)])
    assert res.exit_code == 1 and "not a prefix map folder" in res.stderr


def test_rate_plot_at_a_rate_of_one_or_zero(tmp_path):
    """At a rate of 0 or 1 the Wilson bound equals the rate up to rounding: the bar is never negative."""
    from mia_core.formatting import rate

    summaries = [{"model": "m", "method": "generate", "prefix_tokens": p, "extraction": rate(c, 7)}
                 for p, c in ((8, 7), (16, 0), (32, 3))]
    assert summaries[0]["extraction"]["wilson95"][1] <= 1.0
    assert plots.rate_vs_prefix_length(summaries, tmp_path / "r.png") and (tmp_path / "r.png").stat().st_size > 0


def test_report_shows_runs_as_mia_score_scored_them(tmp_path, runner):
    """A run scored with --edit-threshold 0.3 is reported under that criterion, not the default's."""
    runs = _two_runs(tmp_path)
    assert runner.invoke(cli, ["score", str(runs[0]), "--edit-threshold", "0.3"]).exit_code == 0
    res = runner.invoke(cli, ["report", str(runs[0]), "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert "normalized token edit distance <= 0.3" in (tmp_path / "r.md").read_text()


def test_per_row_figures_read_in_slices_equal_one_read(tmp_path, register_plugin, monkeypatch):
    """The matched lengths by label and the longest extractions are read a slice of the run at a time
    (memory flat in the run's size): slices of 2 rows give what one slice of the whole run gives."""
    from test_prompt_fakes import FakePlugin

    from mia_core.report import sections

    register_plugin(FakePlugin(), name="fake-report-slices")
    docs = make_docs(7, 60)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=20)
    gens = [np.r_[d[10:10 + (3 * i) % 20], np.zeros(20 - (3 * i) % 20, dtype=int)] for i, d in enumerate(docs)]
    run = make_run(folder, gens, tokenizer="fake-tok-a")
    whole = (sections.matched_length_counts_by_label(run, 20), sections.longest_extractions(run, 20, 3))
    monkeypatch.setattr(sections, "REPORT_ROWS", 2)
    sliced = (sections.matched_length_counts_by_label(run, 20), sections.longest_extractions(run, 20, 3))
    assert {k: v.tolist() for k, v in whole[0].items()} == {k: v.tolist() for k, v in sliced[0].items()}
    matched = [(3 * i) % 20 for i in range(7)]  # each row's matched length, counted by label (even rows members)
    assert sliced[0]["member"].tolist() == np.bincount(matched[0::2], minlength=21).tolist()
    assert sliced[0]["nonmember"].tolist() == np.bincount(matched[1::2], minlength=21).tolist()
    assert whole[1] == sliced[1] and [e["matched"] for e in sliced[1][0]] == [18, 15, 12]
    assert [e["row"] for e in sliced[1][0]] == [6, 5, 4]

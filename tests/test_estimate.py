"""mia estimate: tables from files and scored runs, JSON, warnings, plot."""

import json

import numpy as np
import pytest
from scoring_fixtures import make_docs, make_map, make_run
from test_goodturing import PROSODY

from mia_core.cli import cli
from mia_core.formats.corpus_index.shard_writer import build_index
from mia_core.scoring.summary import score_run


def test_estimate_from_pairs_file(tmp_path, runner):
    table = tmp_path / "prosody.txt"
    table.write_text("# r n_r\n" + "\n".join(f"{r} {n}" for r, n in PROSODY.items()) + "\n")
    res = runner.invoke(cli, ["estimate", "--table", str(table), "--json", "--t", "2", "--t", "0.5"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert round(data["good_turing"]["P0"], 6) == 0.003883
    assert round(data["good_turing"]["r_star_renormalized"]["1"], 4) == 0.7628
    assert [p["t"] for p in data["extrapolation"]["points"]] == [2.0, 0.5]
    assert "estimate" in data["extrapolation"]["label"] and "lower bound" in data["chao1"]["label"]
    res = runner.invoke(cli, ["estimate", "--table", str(table)])
    assert res.exit_code == 0 and "P0 = 0.003883" in res.output and "Chao1" in res.output


def test_estimate_degenerate_counts_file_warns(tmp_path, runner):
    counts = tmp_path / "counts.txt"
    counts.write_text("1\n1\n1\n")
    res = runner.invoke(cli, ["estimate", "--table", str(counts), "--json"])
    assert res.exit_code == 0
    assert "warning: every item was seen once" in res.stderr
    data = json.loads(res.stdout)
    assert data["good_turing"]["P0"] == 1.0 and data["good_turing"]["method"] == "turing-fallback"
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    res = runner.invoke(cli, ["estimate", "--table", str(bad)])
    assert res.exit_code == 1 and "bad.txt:1" in res.output


def test_estimate_from_sampled_runs_with_plot(tmp_path, runner):
    docs = make_docs(4, 80)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=30)
    gens = [docs[0][10:40], docs[0][10:40], docs[1][10:40], np.arange(30), docs[2][10:40]]
    run = make_run(folder, gens, prefix_rows=[0, 0, 1, 3, 2], temperature=0.8)
    res = runner.invoke(cli, ["estimate", str(run)])
    assert res.exit_code == 1 and "not been scored" in res.output
    score_run(run)
    res = runner.invoke(cli, ["estimate", str(run), "--json"])
    data = json.loads(res.stdout)
    assert data["items"] == "extracted samples" and data["table"] == {"1": 2, "2": 1}
    assert data["unit"] == "generation" and data["units"] == 5
    assert any("independent" in a for a in data["assumptions"])
    build_index(tmp_path / "idx", docs, "toy", "toy-fingerprint", 500, {})
    score_run(run, index=tmp_path / "idx", window=10)
    png = tmp_path / "gt.png"
    res = runner.invoke(cli, ["estimate", str(run), "--json", "--plot", str(png)])
    data = json.loads(res.stdout)
    # each 30-token match is one span (not 21 overlapping windows); doc0's span was found by 2 generations
    assert data["items"].startswith("memorized corpus spans") and data["table"] == {"1": 2, "2": 1}
    assert png.read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(cli, ["estimate", str(run)])
    assert "sampling unit: the generation" in res.output and "assumption:" in res.output
    res = runner.invoke(cli, ["estimate"])
    assert res.exit_code == 2


def test_overlapping_windows_of_one_match_are_one_event(tmp_path, runner):
    """One 60-token verbatim match with window 50 holds 11 memorized windows but is one memorized span."""
    docs = make_docs(2, 100)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=60)
    run = make_run(folder, [docs[0][10:70], np.arange(60)], temperature=1.0)
    build_index(tmp_path / "idx", docs, "toy", "toy-fingerprint", 500, {})
    s = score_run(run, index=tmp_path / "idx", window=50)
    assert s["corpus"]["unique_windows"] == 11 and s["corpus"]["memorized_spans"] == {"distinct": 1, "occurrences": 1}
    res = runner.invoke(cli, ["estimate", str(run), "--json"])
    data = json.loads(res.stdout)
    assert data["distinct"] == 1 and data["table"] == {"1": 1}


def test_greedy_run_of_every_documents_prefix_is_refused(tmp_path, runner):
    """Repeating a greedy run yields the same strings, and a map of every document's start prefix has no
    further prompts to draw: one line says so, no number."""
    docs = make_docs(6, 80)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=30)
    run = make_run(folder, [d[10:40] for d in docs[:3]] + [np.arange(30)] * 3)
    score_run(run)
    res = runner.invoke(cli, ["estimate", str(run)])
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "greedy" in res.output and "no further prompts" in res.output and "Traceback" not in res.output


def test_greedy_run_is_estimated_over_prompts(tmp_path, runner):
    """With prompts drawn at random locations, a greedy run's unit is the prompt: a prompt asked twice
    (rows wrapping around the map) is counted once."""
    docs = make_docs(4, 80)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=30, loc="random")
    gens = [docs[0][10:40], docs[0][10:40], docs[1][10:40], np.arange(30), docs[2][10:40]]
    run = make_run(folder, gens, prefix_rows=[0, 0, 1, 3, 2])
    score_run(run)
    res = runner.invoke(cli, ["estimate", str(run), "--json", "--t", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["unit"] == "prompt" and data["units"] == 4 and data["table"] == {"1": 3}
    assert "t× more prompts" in " ".join(data["assumptions"])
    # Chao et al. 2014 by hand: f1 = 3, f2 = 0, T = 4: f0 = 3/4 · 3·2/2 = 2.25; new(1) = f0 (1 − (1 − 3/12)^4)
    f0 = 0.75 * 3
    assert data["extrapolation"]["points"][0]["new"] == pytest.approx(f0 * (1 - (1 - 3 / (4 * f0 + 3)) ** 4))
    mixed = make_run(folder, gens, prefix_rows=[0, 0, 1, 3, 2], name="sampled.h5", temperature=0.7)
    score_run(mixed)
    res = runner.invoke(cli, ["estimate", str(run), str(mixed)])
    assert res.exit_code == 1 and "mix greedy and sampled" in res.output


def test_row_bits_equal_flag_arrays():
    """`mia estimate`'s prompts asked and counted, a bit per map row, equal boolean flags (brute force)."""
    import numpy as np

    from mia_core.scoring.tables import RowBits

    rng = np.random.default_rng(1)
    for n in (1, 7, 8, 9, 1000, 12345):
        a, b = rng.integers(0, n, n // 2 + 1), rng.integers(0, n, n // 3 + 1)
        asked, seen = RowBits(n), RowBits(n)
        asked.set(a)
        seen.set(b)
        flags_a, flags_b = np.zeros(n, bool), np.zeros(n, bool)
        flags_a[a], flags_b[b] = True, True
        new = asked.without(seen)
        assert new.count() == int((flags_a & ~flags_b).sum())
        assert [new.has(i) for i in range(n)] == (flags_a & ~flags_b).tolist()
        seen.add(asked)
        assert seen.count() == int((flags_a | flags_b).sum())

"""mia estimate: tables from files and scored runs, JSON, warnings, plot."""

import json

import numpy as np
from scoring_fixtures import make_docs, make_map, make_run
from test_goodturing import PROSODY

from mia_core.cli import cli
from mia_core.scoring.index import build_index
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


def test_estimate_from_scored_runs_with_plot(tmp_path, runner):
    docs = make_docs(4, 80)
    folder = make_map(tmp_path / "map", docs, prefix=10, suffix=30)
    gens = [docs[0][10:40], docs[0][10:40], docs[1][10:40], np.arange(30), docs[2][10:40]]
    run = make_run(folder, gens, prefix_rows=[0, 0, 1, 3, 2])
    res = runner.invoke(cli, ["estimate", str(run)])
    assert res.exit_code == 1 and "not been scored" in res.output
    score_run(run)
    res = runner.invoke(cli, ["estimate", str(run), "--json"])
    data = json.loads(res.stdout)
    assert data["items"] == "extracted samples" and data["table"] == {"1": 2, "2": 1}
    build_index(tmp_path / "idx", docs, "toy", "toy-fingerprint", 500, {})
    score_run(run, index=tmp_path / "idx", window=10)
    png = tmp_path / "gt.png"
    res = runner.invoke(cli, ["estimate", str(run), "--json", "--plot", str(png)])
    data = json.loads(res.stdout)
    assert data["items"] == "memorized corpus windows" and data["distinct"] == 3 * 21
    assert png.read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(cli, ["estimate"])
    assert res.exit_code == 2

"""`mia demo`, the README's first command, end to end on the real embedded default."""

from pathlib import Path

import h5py
import pytest

from mia_core.cli import cli
from mia_core.formats.runs import open_run


@pytest.mark.real_model
@pytest.mark.parametrize("method", ["generate", "teacher-forced"])
def test_demo_runs_prefix_prompt_score_and_writes_the_report(runner, in_tmp, method):
    result = runner.invoke(cli, ["demo", "--size", "4", "--suffix-tokens", "12", "--method", method, "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    assert "exact extraction (first k tokens)" in out
    assert "member" in out and "nonmember" in out
    # one name per quantity: the per-position figure is named by run kind, and every table says its rows
    name = "next-token accuracy (teacher-forced)" if method == "teacher-forced" else "position agreement (generated)"
    other = "position agreement (generated)" if method == "teacher-forced" else "next-token accuracy (teacher"
    assert "members vs non-members" in out and f"{name} by suffix position" in out and other not in out
    assert "token accuracy |" not in out and "Pythia" not in out
    assert "eligible rows only" in out
    assert "longest extractions" in out and "eligible rows; prefix in [brackets]" in out
    paths = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("run:", "report:")))
    report, run = Path(paths["report"].strip()), Path(paths["run"].strip())
    text = report.read_text()  # a plot, or the note that replaces a plot of one value
    assert report.is_file() and ("<img" in text or "(one value)" in text)
    with h5py.File(run) as f:
        assert f.attrs["method"] == method
        assert f["tokens"].shape[0] == 4
    # No --model: the fastest measured path within docs/models.md's agreement bound, said on stderr and
    # recorded. Today's figures keep the fp32 reference: bf16 (4/130 matched lengths moved) is outside.
    said = [line for line in result.stderr.splitlines() if line.startswith("path: ")]
    assert len(said) == 1 and said[0].startswith("path: gemma-3-270m dtype=float32, transformers float32 "
                                                  "(the reference) — the fastest path available here within")
    assert "matched length moved on ≤ 1% of rows" in said[0]
    assert ("transformers bfloat16 (" in said[0]  # faster at batch 16 (measured at 32): passed over, and why
            and ("outside the bound, matched length moved on 3% (4/130)" in said[0] or "needs native bf16" in said[0]))
    assert "path:       gemma-3-270m dtype=float32, transformers float32 (the reference)" in out
    assert open_run(run).attrs["model_options"] == {"dtype": "float32"}
    # The repeated texts come first: the model follows the MIT and BSD bodies for several tokens.
    assert "repeated/" in out
    assert "None" not in out  # a withheld rate is n/a with its reason, never a missing number
    if method == "teacher-forced":
        assert "approximate n/a: teacher-forced runs have no generated text to compare" in out


def test_demo_uses_the_model_given_and_says_no_selection(runner, in_tmp, tiny_llama):
    result = runner.invoke(cli, ["demo", "--model", str(tiny_llama), "--size", "2", "--suffix-tokens", "4", "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    assert f"path: {tiny_llama}, as given by --model — no selection" in result.stderr.splitlines()
    assert f"path:       {tiny_llama}, as given by --model" in result.stdout
    run = Path(next(line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("run:")))
    assert open_run(run).attrs["model"] == str(tiny_llama) and not open_run(run).attrs.get("model_options")


def test_demo_rejects_a_non_positive_size(runner, in_tmp):
    result = runner.invoke(cli, ["demo", "--size", "0"])
    assert result.exit_code == 2
    assert "--size" in result.stderr
    assert not Path("Prefixes").exists()


def test_per_position_accuracy_by_label():
    import numpy as np

    from mia_core.cli.demo_cmd import per_position_accuracy

    generations = [np.array([1, 2, 9]), np.array([1, 8, 3]), np.array([5, 5, 5])]
    suffixes = [np.array([1, 2, 3]), np.array([1, 2, 3]), np.array([5, 6])]
    acc = per_position_accuracy(generations, suffixes, ["member", "member", "nonmember"])
    assert acc == {"member": [1.0, 0.5, 0.5], "nonmember": [1.0, 0.0, None]}

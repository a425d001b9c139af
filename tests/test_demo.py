"""`mia demo`, the README's first command, end to end on the real embedded default."""

from pathlib import Path

import h5py
import pytest

from mia_core.cli import cli


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
    # The repeated texts come first: the model follows the MIT and BSD bodies for several tokens.
    assert "repeated/" in out
    assert "None" not in out  # a withheld rate is n/a with its reason, never a missing number
    if method == "teacher-forced":
        assert "approximate n/a: teacher-forced runs have no generated text to compare" in out


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

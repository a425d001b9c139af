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
    assert "longest matches with the true suffix (of 4 rows)" in out
    paths = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("run:", "report:")))
    report, run = Path(paths["report"].strip()), Path(paths["run"].strip())
    text = report.read_text()  # a plot, or the note that replaces a plot of one value
    assert report.is_file() and ("<img" in text or "(one value)" in text)
    with h5py.File(run) as f:
        assert f.attrs["method"] == method
        assert f["tokens"].shape[0] == 4
    # The preamble is the first member sample: the model follows it for several tokens.
    assert "us/constitution-preamble" in out or "license/" in out


def test_demo_rejects_a_non_positive_size(runner, in_tmp):
    result = runner.invoke(cli, ["demo", "--size", "0"])
    assert result.exit_code == 2
    assert "--size" in result.stderr
    assert not Path("Prefixes").exists()

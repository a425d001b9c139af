"""One CLI vocabulary: the prefix map is named the same way by every command that reads one,
`mia attack`'s Min-K% fraction is not `--k` (suffix tokens in `mia score`), and `--out` names
the exact file or folder a command writes (`--out-dir` the folder a new, named output goes in)."""

import json
import sys
from pathlib import Path

import pytest
from test_attack_cli import make_map
from test_attack_fakes import FakePlugin

from mia_core.cli import cli
from mia_core.formats.attack_results import AttackResults
from mia_core.formats.prefixmap import PrefixMap


@pytest.fixture
def fake_plugin(register_plugin) -> FakePlugin:
    return register_plugin(FakePlugin(), name="fake-attack-plugin")


def attack(runner, *args):
    return runner.invoke(cli, ["attack", "--model", "fake-lm", "--bootstrap", "0", "--no-plot", "--json", *args])


def test_attack_takes_the_map_as_option_or_positional(runner, in_tmp, fake_plugin):
    folder = make_map(in_tmp / "Prefixes" / "m")
    as_option = attack(runner, "--prefix_map", "m")
    dashed = attack(runner, "--prefix-map", str(folder))
    positional = attack(runner, "m")
    same_twice = attack(runner, "m", "--prefix_map", "m")
    for result in (as_option, dashed, positional, same_twice):
        assert result.exit_code == 0, result.output
    aucs = {json.dumps(json.loads(r.stdout)["metrics"], sort_keys=True) for r in (as_option, dashed, positional)}
    assert len(aucs) == 1  # the same map, the same results
    two = attack(runner, "m", "--prefix_map", "other")
    assert two.exit_code == 2 and "two prefix maps given" in two.stderr


def test_min_k_fraction_replaces_k(runner, in_tmp, fake_plugin):
    result = attack(runner, "--dataset", "fake-set", "--min-k-fraction", "0.5", "--out-dir", "res")
    assert result.exit_code == 0, result.output
    stored = AttackResults(next((in_tmp / "res").glob("*.h5")))
    assert stored.attrs["k"] == 0.5
    old = attack(runner, "--dataset", "fake-set", "--k", "0.5")
    assert old.exit_code == 2
    assert "--k is now --min-k-fraction (--k counts suffix tokens in mia score)" in old.stderr


@pytest.fixture
def example(register_plugin):
    """The example plugin (tests/plugins/mia_example), registered in-process."""
    sys.path.insert(0, str(Path(__file__).parent / "plugins" / "mia_example"))
    try:
        import mia_example
    finally:
        sys.path.pop(0)
    return register_plugin(mia_example, name="example-in-process")


PREFIX = ["prefix", "--model", "example-bytes", "--dataset", "example-counting", "--dataset-option", "n=4",
          "--prefix_tokens", "5", "-q"]


def test_out_dir_and_the_older_out(runner, in_tmp, example):
    made = runner.invoke(cli, [*PREFIX, "--out-dir", "maps"])
    assert made.exit_code == 0 and made.stderr == "", made.output
    assert PrefixMap(made.stdout.strip()).folder.parent.resolve() == in_tmp / "maps"
    older = runner.invoke(cli, [*PREFIX, "--out", "old"])
    assert older.exit_code == 0, older.output
    assert PrefixMap(older.stdout.strip()).folder.parent.resolve() == in_tmp / "old"
    assert older.stderr.strip() == ("note: --out is now --out-dir (--out names the exact file or folder a command "
                                    "writes); --out still works for now")
    assert "--out-dir" in runner.invoke(cli, ["prefix", "--help"]).stdout
    assert "--out " not in runner.invoke(cli, ["prefix", "--help"]).stdout  # the old spelling is hidden


@pytest.mark.parametrize("spelling", ["--prefix_map", "--prefix-map"])
def test_index_takes_the_map_like_every_command(runner, in_tmp, example, spelling):
    folder = runner.invoke(cli, PREFIX).stdout.strip()
    result = runner.invoke(cli, ["index", "idx", spelling, folder, "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents"] == 4

"""Numbers from the command line, --config files and the Python API (issue #24, item 3): NaN, ±infinity,
integers beyond int64, tables where a number belongs and runs that could never be read back are one
line, before any request; a binary --labels file is one line too."""

import math
import os
import subprocess

import pytest
import test_prompt_fakes as fakes
from test_prompt_fakes import FakePlugin, cli_command, make_fake_map

from mia_core.cli import cli
from mia_core.errors import UsageError
from mia_core.extraction.prompt import prompt
from mia_core.types import Sampling

PROMPT = ["prompt", "--prefix_map", "fakemap", "--model", "fake-api", "--yes", "-q"]


@pytest.fixture
def fake(register_plugin, in_tmp):
    register_plugin(FakePlugin(), name="fake-numbers")
    fakes.CALLS.clear()
    return make_fake_map(in_tmp / "Prefixes" / "fakemap", n=7)


def usage_line(result):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("option, value, says", [
    ("--max-cost", "nan", "'nan' is not a finite number"),
    ("--max-cost", "inf", "'inf' is not a finite number"),
    ("--max-cost", "0", "0.0 is not in the range x>0"),
    ("--temperature", "nan", "'nan' is not a finite number"),
    ("--temperature", "-inf", "'-inf' is not a finite number"),
    ("--top_p", "nan", "'nan' is not a finite number"),
    ("--top_k", "99999999999999999999", "is not in the range 1<=x<=9223372036854775807"),
    ("--confirm-above", "inf", "'inf' is not a finite number"),
    ("--seed", "99999999999999999999999", "is not in the range 0<=x<=9223372036854775807"),
    ("--seed", "-1", "is not in the range 0<=x<=9223372036854775807"),
    ("--batch_size", "1e3", "is not a valid integer"),
])
def test_bad_numbers_on_the_command_line_send_nothing(fake, runner, option, value, says):
    line = usage_line(runner.invoke(cli, [*PROMPT, option, value]))
    assert line.startswith(f"Error: Invalid value for '{option}'") and says in line, line
    assert fakes.CALLS == [] and not (fake / "runs").exists()


@pytest.mark.parametrize("command, args", [
    ("score", ["--edit-threshold", "nan", "x.h5"]),
    ("estimate", ["--confidence", "inf", "x.h5"]),
    ("estimate", ["--t", "nan", "x.h5"]),
    ("attack", ["fakemap", "--seed", "18446744073709551616"]),
    ("attack", ["fakemap", "--sampling", "temperature=inf"]),
    ("attack", ["fakemap", "--sampling", "top_k=99999999999999999999"]),
    ("prefix", ["--seed", "-5"]),
    ("index", ["out", "--shard-tokens", "1e400"]),
])
def test_other_numeric_options_refuse_nan_and_overflow(fake, runner, command, args):
    line = usage_line(runner.invoke(cli, [command, *args]))
    assert "Invalid value for" in line and any(w in line for w in ("finite", "range", "integer", "2**63")), line


def test_max_cost_nan_sends_nothing_in_a_real_process(fake, in_tmp):
    result = subprocess.run(cli_command(*PROMPT, "--max-cost", "nan"), capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MIA_LOAD_PLUGINS": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--max-cost'")
    assert not (fake / "runs").exists()


@pytest.mark.parametrize("toml, says", [
    ("max_length = {a=1}", "'max_length' must be a value, not a table"),
    ("[prompt]\nmax_length = {a=1}", "[prompt] 'max_length' must be a value, not a table"),
    ("[prompt]\nmax_length = [1, 2]", "expects a number, got a list"),
    ("[prompt]\nmax_length = true", "expects a number, got a bool"),
    ("[prompt]\nmax_cost = nan", "nan is not a finite number"),
    ("[prompt]\ntemperature = inf", "inf is not a finite number"),
    ("[prompt]\nseed = 9223372036854775807\ntop_k = 0", "0 is not in the range"),
    ("[prompt]\nmax_length = 2.5", "2.5 is not an integer"),
])
def test_bad_numbers_in_a_config_file_are_one_line_naming_the_key(fake, runner, in_tmp, toml, says):
    (in_tmp / "c.toml").write_text(toml + "\n")
    result = runner.invoke(cli, [*PROMPT, "--config", "c.toml"])
    line = usage_line(result)
    assert says in line, line
    assert fakes.CALLS == []


def test_a_run_too_large_to_read_back_is_refused_with_its_size(fake, runner):
    line = usage_line(runner.invoke(cli, ["prompt", "--prefix_map", "fakemap", "--model", "fake-lm",
                                          "--num_strings", "10000000000000", "-q"]))
    assert "10000000000000 strings of 20 tokens would take 873.1 TiB of memory to read back" in line, line
    assert "lower --num_strings or split the run with --shard" in line
    assert fakes.CALLS == [] and not (fake / "runs").exists()


@pytest.mark.parametrize("kwargs, hint", [
    ({"max_cost": math.nan}, "max_cost"),
    ({"max_cost": math.inf}, "max_cost"),
    ({"confirm_above": math.nan}, "confirm_above"),
    ({"num_strings": 2**64}, "num_strings"),
])
def test_the_python_api_raises_usage_errors(fake, kwargs, hint):
    with pytest.raises(UsageError) as caught:
        prompt("fakemap", "fake-api", yes=True, quiet=True, **kwargs)
    assert caught.value.option == hint and fakes.CALLS == []


@pytest.mark.parametrize("kwargs, hint", [
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"top_p": math.nan}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"seed": 2**63}, "seed"),
    ({"seed": -1}, "seed"),
])
def test_sampling_refuses_what_no_decoder_can_use(kwargs, hint):
    with pytest.raises(UsageError) as caught:
        Sampling(**kwargs)
    assert caught.value.option == hint


def test_a_binary_labels_file_is_one_line(register_plugin, runner, in_tmp):
    from test_attack_fakes import FakePlugin as AttackFakes

    register_plugin(AttackFakes(), name="fake-attack-labels")
    (in_tmp / "labels.csv").write_bytes(b"id,label\n\xff\xfe\x00\x81binary")
    result = runner.invoke(cli, ["attack", "--dataset", "fake-unlabelled", "--model", "fake-lm", "--labels",
                                 "labels.csv", "-q"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "label file labels.csv is not UTF-8 text" in line and "give a CSV, TSV or JSONL file" in line


def test_the_largest_seed_runs_to_the_end(fake):
    """Batch seeds are the run's seed plus the batch's first row, wrapped below 2**63."""
    rows = prompt("fakemap", "fake-lm", sampling=Sampling(1.0, seed=2**63 - 1), batch_size=2, max_length=3,
                  quiet=True)
    assert len(rows) == 7

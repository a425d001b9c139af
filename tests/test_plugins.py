"""The third-party plugin story: a separately installed distribution is found through its
entry point, and what it registers works through the CLI; plus plugin loading rules.

The example distribution (tests/plugins/mia_example) is installed with pip exactly as a
user would install a plugin, but into a private folder put on PYTHONPATH of the
subprocesses rather than into the shared environment: entry points are discovered the
same way (importlib.metadata over sys.path), and the environment other test runs use is
never modified, even if this test is killed before its teardown.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mia_core import hookimpl, registry
from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.formats.prefixmap import PrefixMap
from mia_core.types import Sampling

EXAMPLE = Path(__file__).parent / "plugins" / "mia_example"
MIA = [sys.executable, "-c", "from mia_core.cli import main; main()"]


def pip_install(source: Path, site: Path) -> dict[str, str]:
    """pip-install the distribution in ``source`` into ``site``; return an environment that sees it."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet",
           "--target", str(site), str(source)]
    try:
        import setuptools  # noqa: F401  (the build backend: build without network when it is here)

        cmd.insert(5, "--no-build-isolation")
    except ImportError:
        pass
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k != "MIA_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def example_env(tmp_path_factory) -> dict[str, str]:
    """pip-install the example plugin; return the environment in which it is installed."""
    root = tmp_path_factory.mktemp("example-plugin")
    source = root / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = pip_install(source, root / "site")
    assert (root / "site" / "mia_example-0.1.0.dist-info" / "entry_points.txt").is_file()
    return env


BROKEN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mia-broken"
version = "0.1.0"

[project.entry-points.mia]
broken = "mia_broken"

[tool.setuptools]
py-modules = ["mia_broken"]
"""


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory, example_env) -> dict[str, str]:
    """The example plugin plus a distribution whose plugin module fails to import."""
    source = tmp_path_factory.mktemp("broken-plugin")
    (source / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (source / "mia_broken.py").write_text("import no_such_module_for_mia_tests  # the bug\n")
    site = source / "site"
    env = pip_install(source, site)
    env["PYTHONPATH"] = os.pathsep.join([str(site), example_env["PYTHONPATH"]])
    return env


def mia(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MIA, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_installed_plugin_is_listed(example_env):
    result = mia(example_env, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    example = plugins["example"]
    assert (example["distribution"], example["version"]) == ("mia-example", "0.1.0")
    assert example["datasets"] == ["example-counting"] and example["tokenizers"] == ["example-bytes", "example-hf:ID"]
    assert example["backends"] == ["example-hf:ID"] and "mia_register_datasets" in example["hooks"]
    assert example["commands"] == ["example-peek"] and example["error"] is None

    datasets = mia(example_env, "datasets")
    assert datasets.returncode == 0
    line = next(row for row in datasets.stdout.splitlines() if row.startswith("example-counting"))
    assert "example" in line and "Generated counting sentences" in line
    models = json.loads(mia(example_env, "models", "--json").stdout)
    row = next(m for m in models if m["name"] == "example-bytes")
    assert row["tokenizer"] is True and row["backend"] is False and row["aliases"] == ["example-utf8"]
    model = next(m for m in models if m["name"] == "example-hf:ID")
    assert model["capabilities"] == ["generate", "score"] and model["description"].startswith("any transformers")


def test_installed_plugin_builds_a_prefix_map(example_env, tmp_path):
    result = mia(example_env, "prefix", "--model", "example-bytes", "--dataset", "example-counting",
                 "--dataset-option", "n=7", "--prefix_tokens", "6", "--suffix_tokens", "9", "--prefix_loc", "2",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / result.stdout.strip()
    assert folder.parent == tmp_path / "Prefixes"
    pm = PrefixMap(folder)
    assert len(pm) == 7 and pm.attrs["tokenizer"] == "example-bytes" and pm.attrs["dataset_plugin"] == "example"
    for (sample_id, text, _label, tokens), prefix, suffix in zip(pm.iter_dataset(), pm.read("prefixes"),
                                                                   pm.suffixes(), strict=True):
        assert tokens.tolist() == list(text.encode()) and text.startswith(sample_id.split("-")[1] + ": ")
        assert prefix.tolist() == tokens[2:8].tolist() and suffix.tolist() == tokens[8:17].tolist()
    unknown = mia(example_env, "prefix", "--model", "example-bites", "--dataset", "example-counting",
                  cwd=tmp_path)
    assert unknown.returncode == 2 and "Did you mean 'example-bytes'" in unknown.stderr


def test_example_model_works_through_mia_prompt(example_env, tmp_path):
    """The docs' minimal model backend: a map made with its tokenizer, then `mia prompt` and
    `mia check` with it; its greedy tokens and log-probabilities equal mia-hf's on the same folder."""
    from tiny_models import make_tiny_llama

    from mia_core.formats.runs import open_run

    # seed 1: seed 0's greedy text holds a NUL byte, which run files cannot store yet (reported)
    folder = make_tiny_llama(tmp_path / "tiny", seed=1)
    model = f"example-hf:{folder}"
    made = mia(example_env, "prefix", "--model", model, "--dataset", "example-counting", "--dataset-option", "n=5",
               "--prefix_tokens", "6", "--suffix_tokens", "8", "-q", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    prompted = mia(example_env, "prompt", "--prefix_map", made.stdout.strip(), "--model", model,
                   "--max_length", "8", "--batch_size", "2", "-q", cwd=tmp_path)
    assert prompted.returncode == 0, prompted.stderr
    run = open_run(tmp_path / prompted.stdout.strip())
    assert len(run) == 5 and run.attrs["model"] == model and run.attrs["backend"]["bos_prepended"] is True

    reference = registry.backends.create(str(folder), {"device": "cpu"})  # mia-hf's HFCausalLM
    greedy = reference.generate([p.tolist() for p in run.prefixes()], 8, Sampling())
    assert [t.tolist() for t in run.tokens()] == greedy

    checked = mia(example_env, "check", "--prefix_map", made.stdout.strip(), "--model", model, "-q", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    scored = open_run(tmp_path / checked.stdout.strip())
    pmap = PrefixMap(scored.attrs["prefix_map"])
    sequences = [[*p.tolist(), *s.tolist()] for p, s in zip(pmap.read("prefixes"), pmap.suffixes(), strict=True)]
    expected = reference.score(sequences, start=6, distribution=False)
    for row, exp in zip(scored.read("logprobs"), expected, strict=True):
        np.testing.assert_allclose(row[:len(exp.logprob)], exp.logprob, rtol=1e-4, atol=1e-4)


def test_plugin_command_is_added(example_env):
    listed = mia(example_env, "--help")
    assert listed.returncode == 0 and "example-peek" in listed.stdout
    peek = mia(example_env, "example-peek", "example-counting", "-n", "2")
    assert peek.returncode == 0, peek.stderr
    rows = [line.split("\t")[:2] for line in peek.stdout.splitlines()]
    assert rows == [["count-0", "member"], ["count-1", "nonmember"]]
    unknown = mia(example_env, "example-peek", "no-such-data")
    assert unknown.returncode == 2 and "unknown dataset 'no-such-data'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_a_broken_plugin_is_reported_and_skipped(broken_env, tmp_path):
    listed = mia(broken_env, "plugins")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    at = lines.index("broken (mia-broken 0.1.0)")
    assert lines[at + 1] == ("  skipped: failed to load: ModuleNotFoundError: No module named "
                             "'no_such_module_for_mia_tests'")
    assert "example (mia-example 0.1.0)" in lines and "Traceback" not in listed.stderr
    info = {p["name"]: p for p in json.loads(mia(broken_env, "plugins", "--json").stdout)}
    assert "ModuleNotFoundError" in info["broken"]["error"] and info["example"]["error"] is None

    made = mia(broken_env, "prefix", "--model", "example-bytes", "--dataset", "example-counting",
               "--dataset-option", "n=3", "--prefix_tokens", "4", "-q", cwd=tmp_path)
    assert made.returncode == 0 and made.stderr == "", made.stderr
    assert len(PrefixMap(tmp_path / made.stdout.strip())) == 3
    unknown = mia(broken_env, "prefix", "--model", "example-bytes", "--dataset", "nothing-here", cwd=tmp_path)
    assert unknown.returncode == 2 and "Plugins that failed to load: broken (see mia plugins)" in unknown.stderr


class FailingHook:
    """Loads, but one of its hooks raises: its datasets are skipped, everything else works."""

    @hookimpl
    def mia_register_datasets(self, register) -> None:
        raise RuntimeError("bad\nregistration")


def test_a_plugin_whose_hook_raises_is_skipped(register_plugin, runner, monkeypatch):
    from mia_core import plugins

    monkeypatch.setattr(plugins, "failures", {})
    register_plugin(FailingHook(), name="failing")
    listed = runner.invoke(cli, ["datasets"])
    assert listed.exit_code == 0 and "failing" not in listed.stdout
    info = {p["name"]: p for p in json.loads(runner.invoke(cli, ["plugins", "--json"]).stdout)}
    assert info["failing"]["error"] == "mia_register_datasets: RuntimeError: bad registration"


def test_the_plugin_guide_shows_the_example_verbatim():
    """docs/plugins.md teaches from the example plugin: its code blocks are the tested code."""
    guide = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
    module = (EXAMPLE / "mia_example.py").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in guide.split("## 3. The example module", 1)[1].split("```python\n")[1:]]
    assert len(blocks) >= 7
    for block in blocks:
        assert block in module, block[:200]
    toml = guide.split("```toml\n", 1)[1].split("```", 1)[0]
    assert toml == (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")


def test_the_readme_plugin_installs_as_written(tmp_path):
    """The README's two code blocks, copied into a folder, pip-install into a working plugin."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Writing a plugin", 1)[1]
    toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
    module = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "pyproject.toml").write_text(toml)
    (tmp_path / "src" / "mia_hello.py").write_text(module)
    env = pip_install(tmp_path / "src", tmp_path / "site")
    listed = mia(env, "datasets")
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("hello-greetings") and "hello" in line for line in listed.stdout.splitlines())
    made = mia(env, "prefix", "--model", "gemma-3-270m", "--dataset", "hello-greetings", "--dataset-option", "n=4",
               "--prefix_tokens", "3", "--suffix_tokens", "3", "-q", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert len(PrefixMap(tmp_path / made.stdout.strip())) == 4


@pytest.mark.parametrize("allowed, expected", [
    ("", set()),
    ("mia-example", {"example"}),
    ("mia_example, no-such-plugin", {"example"}),
])
def test_mia_load_plugins_restricts_loading(example_env, allowed, expected):
    result = mia({**example_env, "MIA_LOAD_PLUGINS": allowed}, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    assert {p["name"] for p in json.loads(result.stdout)} == expected
    if not expected:
        listing = mia({**example_env, "MIA_LOAD_PLUGINS": allowed}, "datasets")
        assert "Nothing registered" in listing.stdout


def test_other_plugins_load_without_the_excluded_one(example_env):
    installed = {p["name"] for p in json.loads(mia(example_env, "plugins", "--json").stdout)}
    others = sorted(installed - {"example"})
    if not others:
        pytest.skip("no other plugin installed")
    result = mia({**example_env, "MIA_LOAD_PLUGINS": "mia-corpus,mia-hf,mia-mamba,mia-claude"}, "plugins", "--json")
    assert "example" not in {p["name"] for p in json.loads(result.stdout)}


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"], ["models"], ["datasets"],
                                  ["prefix", "--help"]])
def test_listing_commands_do_not_import_heavy_libraries(example_env, args):
    code = (
        "import sys\n"
        "from mia_core.cli import cli\n"
        f"try:\n    cli({args!r}, prog_name='mia')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'anthropic', 'datasets', 'tokengrams') "
        "if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=example_env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


class Throwaway:
    """A plugin registered in-process, the way tests and notebooks can add one."""

    @hookimpl
    def mia_register_datasets(self, register) -> None:
        register("throwaway-data", "mia_core.types:Sample", description="in-process dataset",
                 aliases=("tmp-data",))

    @hookimpl
    def mia_register_tokenizers(self, register) -> None:
        register("throwaway-tok", lambda name, options: None, description="in-process tokenizer")


class Clash:
    @hookimpl
    def mia_register_datasets(self, register) -> None:
        register("TMP-DATA", lambda name, options: None)


def test_in_process_plugin_is_listed(register_plugin, runner):
    register_plugin(Throwaway(), name="throwaway")
    result = runner.invoke(cli, ["plugins", "--json"])
    entry = next(p for p in json.loads(result.stdout) if p["name"] == "throwaway")
    assert entry["datasets"] == ["throwaway-data"] and entry["tokenizers"] == ["throwaway-tok"]
    assert entry["distribution"] is None  # not installed: registered by code
    assert registry.datasets.get("Tmp-Data").name == "throwaway-data"  # aliases, any case
    result = runner.invoke(cli, ["datasets"])
    assert "throwaway-data" in result.stdout and "in-process dataset" in result.stdout


def test_duplicate_names_are_a_clear_error(register_plugin, runner):
    register_plugin(Throwaway(), name="throwaway")
    register_plugin(Clash(), name="clash")
    with pytest.raises(MiaError, match="dataset 'tmp-data' is registered twice|dataset 'TMP-DATA' is registered"):
        registry.datasets.names()
    registry.refresh()  # a failed fill is not retried in-process; the CLI below starts afresh
    result = runner.invoke(cli, ["datasets"])
    assert result.exit_code == 1 and "registered twice" in result.stderr
    assert "'throwaway'" in result.stderr and "'clash'" in result.stderr and "Traceback" not in result.output


def test_unknown_name_suggests_a_close_match(register_plugin, runner, in_tmp):
    register_plugin(Throwaway(), name="throwaway")
    result = runner.invoke(cli, ["prefix", "--model", "throwaway-tok", "--dataset", "throwaway-dta"])
    assert result.exit_code == 2
    assert "unknown dataset 'throwaway-dta'" in result.stderr and "Did you mean 'throwaway-data'" in result.stderr
    assert "throwaway-data" in result.stderr.split("Available:")[1]


class Promises:
    """A backend registered with capabilities its object lacks, and one name registered as a
    tokenizer and a backend with different descriptions."""

    @hookimpl
    def mia_register_backends(self, register) -> None:
        register("promise-breaker", lambda name, options: TextOnly(), capabilities=("generate", "score"))
        register("two-faced", lambda name, options: TextOnly(), description="the model itself",
                 capabilities=("generate_text",))

    @hookimpl
    def mia_register_tokenizers(self, register) -> None:
        register("two-faced", lambda name, options: None, description="a stand-in tokenizer")


class TextOnly:
    name = "text-only"

    def describe(self) -> dict:
        return {}

    def generate_text(self, prompts, max_new_tokens, sampling):
        return []


def test_capabilities_are_inferred_and_promises_checked(register_plugin, runner):
    from mia_core.types import capabilities

    register_plugin(Promises(), name="promises")
    assert capabilities(TextOnly()) == {"generate_text"}
    assert registry.backends.get("two-faced").capabilities == {"generate_text"}
    assert capabilities(registry.backends.create("two-faced")) == {"generate_text"}
    with pytest.raises(MiaError, match="plugin 'promises' registers 'promise-breaker' with capabilities it lacks"):
        registry.backends.create("promise-breaker")
    models = {m["name"]: m for m in json.loads(runner.invoke(cli, ["models", "--json"]).stdout)}
    two = models["two-faced"]
    assert (two["description"], two["tokenizer_description"]) == ("the model itself", "a stand-in tokenizer")
    assert two["capabilities"] == ["generate_text"] and two["tokenizer"] and two["backend"]
    table = runner.invoke(cli, ["models"]).stdout
    assert "the model itself" in table and "a stand-in tokenizer" not in table


class Commands:
    """In-process commands that fail in each of the library's ways."""

    @hookimpl
    def mia_register_commands(self, cli) -> None:
        import click

        from mia_core.errors import UsageError

        @cli.command(name="fail-usage")
        def fail_usage() -> None:
            raise UsageError("must be positive, got -1", option="count")

        @cli.command(name="fail-error")
        def fail_error() -> None:
            raise MiaError("the file is corrupt")

        @cli.command(name="prefix")  # taken by a built-in command: refused, reported
        def shadow() -> None:
            click.echo("never")


def test_library_errors_are_translated_once_at_the_cli(register_plugin, runner, monkeypatch):
    from mia_core import plugins

    monkeypatch.setattr(plugins, "failures", {})
    register_plugin(Commands(), name="commands")
    usage = runner.invoke(cli, ["fail-usage"])
    assert usage.exit_code == 2 and "Usage: cli fail-usage" in usage.stderr
    assert "Error: Invalid value for --count: must be positive, got -1" in usage.stderr
    error = runner.invoke(cli, ["fail-error"])
    assert error.exit_code == 1 and error.stderr == "Error: the file is corrupt\n"
    assert "never" not in runner.invoke(cli, ["prefix", "--help"]).stdout
    info = {p["name"]: p for p in json.loads(runner.invoke(cli, ["plugins", "--json"]).stdout)}
    assert info["commands"]["commands"] == ["fail-error", "fail-usage"]
    assert info["commands"]["error"] == "its command 'prefix' clashes with an existing one"


# --- register()'s keywords and the options schema (#25 item 3) ---------------------------------

TYPO_MODULE = '''
from mia_core import hookimpl


@hookimpl
def mia_register_backends(register) -> None:
    register("typo-model", "mia_typo:make", capabilites=("generate",))  # the typo
'''


@pytest.fixture(scope="module")
def typo_env(tmp_path_factory, example_env) -> dict[str, str]:
    """The example plugin plus a distribution whose register() call misspells a keyword."""
    source = tmp_path_factory.mktemp("typo-plugin")
    (source / "pyproject.toml").write_text(BROKEN_PYPROJECT.replace("broken", "typo"))
    (source / "mia_typo.py").write_text(TYPO_MODULE)
    env = pip_install(source, source / "site")
    env["PYTHONPATH"] = os.pathsep.join([str(source / "site"), example_env["PYTHONPATH"]])
    return env


def test_a_misspelt_register_keyword_is_a_broken_plugin(typo_env):
    listed = mia(typo_env, "plugins")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    lines = listed.stdout.splitlines()
    reason = lines[lines.index("typo (mia-typo 0.1.0)") + 1]
    assert reason.startswith("  skipped: mia_register_backends: RegistrationError: plugin 'typo' calls "
                             "register('typo-model', ...) with unknown keyword(s) capabilites "
                             "(did you mean capabilities?); register accepts description, aliases, match, ")
    models = {m["name"] for m in json.loads(mia(typo_env, "models", "--json").stdout)}
    assert "typo-model" not in models and "example-hf:ID" in models  # the other plugins keep working


def one_error_line(result: subprocess.CompletedProcess, code: int = 1) -> str:
    """The command's only stderr line, which must be its error."""
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_options_are_checked_typed_and_listed_by_the_core(example_env, tmp_path):
    make = ("prefix", "--model", "example-bytes", "--dataset", "example-counting", "--prefix_tokens", "4", "-q")
    typo = one_error_line(mia(example_env, *make, "--dataset-option", "nn=3", cwd=tmp_path))
    assert typo == ("Error: unknown option(s) for dataset 'example-counting': nn. Did you mean 'n'? "
                    "Options accepted: n, words (see mia datasets --options example-counting)")
    wrong = one_error_line(mia(example_env, *make, "--dataset-option", "n=three", cwd=tmp_path))
    assert wrong == ("Error: option n='three' for dataset 'example-counting' is not an integer: expected an integer "
                     "(or auto)")
    assert not (tmp_path / "Prefixes").exists()  # refused before the dataset was read
    made = mia(example_env, *make, "--dataset-option", "n=3", "--dataset-option", "words=5", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert len(PrefixMap(tmp_path / made.stdout.strip())) == 3  # the factory got ints

    table = mia(example_env, "datasets", "--options", "example-counting")
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0] == ["dataset", "example-counting", "(--dataset-option", "KEY=VALUE;", "plugin", "example):"]
    assert ["n", "int", "20", "an", "integer", "(or", "auto)", "number", "of", "samples"] in rows
    listed = json.loads(mia(example_env, "datasets", "--options", "example-counting", "--json").stdout)
    assert listed == {"dataset": [
        {"option": "n", "type": "int", "default": 20, "accepts": "an integer (or auto)", "help": "number of samples"},
        {"option": "words", "type": "int", "default": 30, "accepts": "an integer (or auto)",
         "help": "words per sample"}]}
    none = mia(example_env, "models", "--options", "example-hf:some/model")
    assert none.returncode == 0 and "takes no option" in none.stdout
    undeclared = mia(example_env, "models", "--options", "example-bytes")
    assert "declares no option schema" in undeclared.stdout
    unknown = mia(example_env, "models", "--options", "example-bites")
    assert unknown.returncode == 2 and "unknown backend 'example-bites'" in unknown.stderr


class LazyPlugin:
    """Registers names whose factory module does not exist: whatever is refused, is refused before import."""

    @hookimpl
    def mia_register_backends(self, register) -> None:
        from mia_core import Option

        register("lazy-model", "no_such_module_for_mia_tests:make", capabilities=("generate",), options=(
            Option("dtype", choices=("float32", "bfloat16"), default="float32", help="weights' type"),
            Option("trust_remote_code", bool, False, "run the model's own code"),
            Option("threads", int, None, "CPU threads"),
            Option("temperature", float, 1.0, "softmax temperature"),
        ))
        register("lazy-folder:ID", "no_such_module_for_mia_tests:make", match=lambda n: n.startswith("lazy-"),
                 match_priority=5)


def test_options_are_refused_before_the_factory_is_imported(register_plugin):
    register_plugin(LazyPlugin(), name="lazy")
    entry = registry.backends.get("lazy-model")
    assert entry.info == {"capabilities": ("generate",)} and entry.capabilities == frozenset({"generate"})
    with pytest.raises(MiaError, match=r"unknown option\(s\) for model 'lazy-model': dtpye\. Did you mean 'dtype'\?"):
        registry.backends.create("lazy-model", {"dtpye": "float32"})
    with pytest.raises(MiaError, match=r"unknown dtype 'float16' for model 'lazy-model': expected one of float32, "
                                       r"bfloat16$"):
        registry.backends.create("lazy-model", {"dtype": "float16"})
    with pytest.raises(MiaError, match="option trust_remote_code='maybe' .* is not a boolean: expected true or false"):
        registry.backends.create("lazy-model", {"trust_remote_code": "maybe"})
    with pytest.raises(MiaError, match=r"option threads=2\.5 .* is not an integer: expected an integer \(or auto\)"):
        registry.backends.check_options("lazy-model", {"threads": 2.5})
    typed = registry.backends.check_options(
        "lazy-model", {"dtype": "BFloat16", "trust_remote_code": "yes", "threads": "auto", "temperature": "0.5"})
    assert typed == {"dtype": "bfloat16", "trust_remote_code": True, "threads": None, "temperature": 0.5}
    # auto is the default: None ("the plugin decides") or the default number or boolean
    assert registry.backends.check_options("lazy-model", {"temperature": "auto", "trust_remote_code": ""}) == \
        {"temperature": 1.0, "trust_remote_code": False}
    with pytest.raises(MiaError, match="unknown dtype 'auto'"):  # a choice with a default: auto is no choice
        registry.backends.check_options("lazy-model", {"dtype": "auto"})
    # typed values (from Python, or a run's recorded options) pass unchanged
    assert registry.backends.check_options("lazy-model", typed) == typed
    assert registry.backends.check_options("lazy-model", {"threads": 4}) == {"threads": 4}
    # no schema declared: the factory gets the strings as given (and only then is imported)
    assert registry.backends.get("lazy-x").check_options("lazy-x", {"any": "1"}) == {"any": "1"}
    with pytest.raises(ModuleNotFoundError):
        registry.backends.create("lazy-x", {"any": "1"})
    assert registry.backends.find("lazy-model").name == "lazy-model"  # an exact name before any predicate


class BadRegistrations:
    @hookimpl
    def mia_register_datasets(self, register) -> None:
        from mia_core import Option

        register("bad-options", "x:y", options=[Option("n", int), Option("n", str)])

    @hookimpl
    def mia_register_backends(self, register) -> None:
        register("bad-capability", "x:y", capabilities=("generate", "sing"))


def test_wrong_registrations_name_the_plugin(register_plugin, monkeypatch):
    from mia_core import Option, plugins

    monkeypatch.setattr(plugins, "failures", {})
    register_plugin(BadRegistrations(), name="bad")
    assert registry.datasets.find("bad-options") is None and registry.backends.find("bad-capability") is None
    failure = plugins.failures["bad"]
    assert "plugin 'bad' registers dataset 'bad-options' wrongly: options= declares n twice" in failure
    assert "capabilities= names sing, which mia does not know (known: generate, generate_text" in failure
    with pytest.raises(TypeError, match="type must be one of str, int, float, bool"):
        Option("n", list)


def test_the_label_spellings_are_one_table():
    from mia_corpus.options import normalize_label

    from mia_core.labels import ACCEPTED, label_from_text

    for member, nonmember in (("seen", "unseen"), ("train", "test"), ("1.0", "0.0"), (" IN ", "out")):
        assert (label_from_text(member), label_from_text(nonmember)) == ("member", "nonmember")
        assert (normalize_label(member, "x"), normalize_label(nonmember, "x")) == ("member", "nonmember")
    assert label_from_text("maybe") is None and normalize_label("", "x") is None
    assert "seen/unseen" in ACCEPTED and "train/test" in ACCEPTED
    with pytest.raises(MiaError, match="label 'maybe' is neither member nor nonmember"):
        normalize_label("maybe", "x")


# --- the first ten minutes (#26 item 6) ---------------------------------------------------------

def test_a_newcomers_mistakes_get_one_line_that_says_what_is_wrong(example_env, tmp_path):
    missing = mia(example_env, "prefix", "--model", "example-bytes", "--dataset", "data/missing.jsonl", cwd=tmp_path)
    assert one_error_line(missing) == "Error: no such file: data/missing.jsonl (the dataset path does not exist)"
    (tmp_path / "data.jsonl").write_text('{"text": "a sample of a dataset"}\n')
    for command in (("score", "data.jsonl"), ("report", "data.jsonl", "-o", "r.html"), ("export", "data.jsonl")):
        line = one_error_line(mia(example_env, *command, cwd=tmp_path))
        assert line == ("Error: data.jsonl is not an HDF5 file: it is a JSONL file, not a mia map, run, scores or "
                        "attack file"), command
    line = one_error_line(mia(example_env, "attack", "data.jsonl", "--model", "example-hf:x", cwd=tmp_path))
    assert line.startswith("Error: data.jsonl is a JSONL file, not a prefix map")
    assert (tmp_path / "data.jsonl").read_text() == '{"text": "a sample of a dataset"}\n'  # untouched


BAR_THEN_ERROR = """
import click
from mia_core import hookimpl
from mia_core.cli import main
from mia_core.errors import MiaError
from mia_core.plugins import load_plugins, pm
from mia_core.progress import progress


class BarPlugin:
    @hookimpl
    def mia_register_commands(self, cli):
        @cli.command(name="bar-then-error")
        def bar_then_error():
            bar = progress(total=10, desc="working")  # left open: the error interrupts it
            bar.update(4)
            bar.refresh()
            raise MiaError("something went wrong")


load_plugins()
pm.register(BarPlugin(), name="bar")
main()
"""


def test_an_error_interrupting_a_bar_starts_a_clean_line(tmp_path):
    result = subprocess.run([sys.executable, "-c", BAR_THEN_ERROR, "bar-then-error"], capture_output=True,
                            timeout=120)
    assert result.returncode == 1, result.stderr
    before, _, after = result.stderr.decode().rpartition("Error: ")
    assert after == "something went wrong\n" and "working:  40%" in before  # the bar was drawn
    # The error's line as a terminal shows it (\r returns to the line's start, later characters
    # overwrite earlier ones): the error alone, not after the bar's remnant "working:  40%|████".
    assert rendered(before.rpartition("\n")[2] + "Error: " + after.rstrip("\n")).rstrip() == \
        "Error: something went wrong"


def rendered(line: str) -> str:
    cells: list[str] = []
    at = 0
    for char in line:
        if char == "\r":
            at = 0
            continue
        cells[at:at + 1] = [char]
        at += 1
    return "".join(cells)


def test_the_vllm_plugins_options_are_declared_for_the_core(register_plugin, monkeypatch):
    """mia-vllm's tests need the vLLM environment; its registration and option schema need only the core."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "plugins" / "mia_vllm"))
    import mia_vllm

    register_plugin(mia_vllm, name="vllm-for-test")
    typed = registry.backends.check_options("vllm:gemma-3-270m", {
        "seed": "auto", "enforce_eager": "yes", "gpu_memory_utilization": "0.5",
        "distributed_executor_backend": "RAY", "tensor_parallel_size": "2", "add_bos": "auto"})
    assert typed == {"seed": 0, "enforce_eager": True, "gpu_memory_utilization": 0.5,
                     "distributed_executor_backend": "ray", "tensor_parallel_size": 2, "add_bos": None}
    with pytest.raises(MiaError, match=r"unknown option\(s\) for model 'vllm:org/model': bogus\. Options accepted: "
                                       r"dtype, seed, .* \(see mia models --options vllm:ID\)"):
        registry.backends.create("vllm:org/model", {"bogus": "1"})
    with pytest.raises(MiaError, match="option max_model_len='long' .* is not an integer"):
        registry.tokenizers.create("vllm:gemma-3-270m", {"max_model_len": "long"})

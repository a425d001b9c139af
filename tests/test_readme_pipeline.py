"""The README's pipeline, commands copied from README.md by the test and run in the order written
(real `mia` subprocesses, a shell for the `*.h5` glob) on a tiny randomly initialised model: only
the model name and the placeholders <map> and <run> are substituted."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from tiny_models import make_tiny_llama

README = Path(__file__).resolve().parent.parent / "README.md"
BIN = Path(sys.executable).parent


def pipeline_commands() -> list[str]:
    """The `mia ...` lines of every bash block of the section '## The pipeline' (up to the next
    '## ' heading), in order, without their comments."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"## The pipeline\n(.*?)\n## ", text, re.S).group(1)
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [re.split(r"\s+#", line)[0].strip() for block in blocks for line in block.splitlines()
            if line.startswith("mia ")]


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_readme_pipeline_runs_verbatim(tmp_path):
    model = make_tiny_llama(tmp_path / "tiny-llama")
    commands = pipeline_commands()
    names = [c.split()[1] for c in commands]
    # the study first, then the step commands (the advanced path)
    assert names[:4] == ["study", "study", "prefix", "prompt"]
    assert names.index("score") < names.index("report") < names.index("show")
    assert {"check", "index", "estimate", "attack", "export"} <= set(names)
    work = tmp_path / "work"
    work.mkdir()
    subs: dict[str, str] = {}
    for template in commands:
        command = template.replace("gemma-3-270m", shlex.quote(str(model)))
        for key, value in subs.items():
            command = command.replace(key, value)
        result = sh(command, work)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if template.startswith("mia prefix"):
            subs["<map>"] = shlex.quote(str(Path(last).parent if last.endswith(".h5") else Path(last)))
        if template.startswith("mia prompt"):
            subs["<run>"] = shlex.quote(last)
    study = json.loads((work / "studies/first/results.json").read_text())
    assert study["attack"]["metrics"] and study["extraction"]["generate"]["rows"] == 20
    assert (work / "studies/first/samples.jsonl").read_text().count("\n") == 20
    map_folder = work / shlex.split(subs["<map>"])[0]
    run = work / shlex.split(subs["<run>"])[0]
    runs = sorted((map_folder / "runs").glob("*.h5"))
    assert any(p.name.endswith(".scores.h5") for p in runs)  # the glob in the README did pick scores up
    report = (work / "report.html").read_text()
    assert report.count("<h2>Run ") == 2  # the prompt and the check runs, not their scores files
    whole = (work / "study.html").read_text()  # mia report MAP: every run and the attack
    assert whole.count("<h2>Run ") == 2 and "<h2>Attack 1" in whole and "<h2>Provenance" in whole
    assert "ROC curves" in whole and "<dt>AUC</dt>" in whole
    exported = (work / "rows.csv").read_text().splitlines()
    assert exported[0].startswith("index,prefix_index,sample_id,label,prefix_start,prefix_text,true_suffix_text")
    assert "score_matched_length" in exported[0] and len(exported) > 100  # 100 generations (texts may span lines)
    # mia show on each kind of file
    attack = next((map_folder / "attacks").glob("*.h5"))
    for path, kind in ((map_folder, "map"), (run, "run"), (run.with_name(run.stem + ".scores.h5"), "scores"),
                       (attack, "attack")):
        shown = sh(f"mia show {shlex.quote(str(path))} --json", work)
        assert shown.returncode == 0, shown.stderr
        info = json.loads(shown.stdout)
        assert info["kind"] == kind and info["provenance"]["command_line"].startswith("mia ")
        assert info["provenance"]["mia_version"] and info["provenance"]["host"]
        if kind in ("run", "attack"):
            assert info["provenance"]["device"] == "cpu" and info["provenance"]["dtype"]
            assert "torch" in info["provenance"]["libraries"] and "transformers" in info["provenance"]["libraries"]
    with h5py.File(attack) as f:
        assert "provenance" in f.attrs


@pytest.mark.parametrize("line", pipeline_commands())
def test_readme_commands_parse(line):
    """Every README pipeline line is a command mia knows, with options it accepts (--help exits 0)."""
    from click.testing import CliRunner

    from mia_core.cli import cli

    name = line.split()[1]
    assert CliRunner().invoke(cli, [name, "--help"]).exit_code == 0

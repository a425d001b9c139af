"""A damaged run journal never silently drops a paid row (issue #24, item 1).

The real `mia` CLI in subprocesses against the fake Anthropic server (tests/fake_anthropic.py),
which counts requests. A claude-API run of 18 rows in batches of 3 is killed (MIA_FAULT_KILL_AT)
just before its final record, leaving a journal of 6 records (rows 0..2, 3..5, ..., 15..17) and
nothing compacted. Each test damages a copy of it the way a disk or a careless hand would, then
checks what `--resume`, a reader and `--resume --salvage` do, and exactly which rows are asked again.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from fake_anthropic import FakeAnthropic
from test_claude_cli import DATASET, KEY, PREFIX_TOKENS, SUFFIX_TOKENS, TOKENIZER, ByteTokenizer, check_rows

from mia_core.formats import journal
from mia_core.formats.journal import journal_path

ROWS, BATCH = 18, 3
RECORDS = ROWS // BATCH


def mia(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mia ARGS` in a subprocess, with the test tokenizer and dataset registered (tests/test_claude_cli.py)."""
    tests = Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(tests)!r}); sys.argv[0] = 'mia'; " \
           "import test_claude_cli; test_claude_cli.run_cli()"
    full_env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "MIA_LOAD_PLUGINS": "mia-claude", **(env or {})}
    full_env.pop("ANTHROPIC_BASE_URL", None)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def server():
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def killed(tmp_path_factory, server) -> Path:
    """A folder holding the map and RUN.h5 with an uncompacted 6-record journal (killed before finishing)."""
    folder = tmp_path_factory.mktemp("killed")
    made = mia(["prefix", "--model", TOKENIZER, "--dataset", DATASET, "--prefix_tokens", str(PREFIX_TOKENS),
                "--suffix_tokens", str(SUFFIX_TOKENS), "-q"], folder)
    assert made.returncode == 0, made.stderr
    (map_folder,) = [p for p in (folder / "Prefixes").iterdir() if p.is_dir()]
    env = {"MIA_RUN_COMPACT_BYTES": str(2**30), "MIA_FAULT_NO_FSYNC": "1"}
    args = ["prompt", "--prefix_map", str(map_folder), "--model", "claude-API", "--max_length", "16",
            "--num_strings", str(ROWS), "--batch_size", str(BATCH), "--yes", "-q",
            "--model-option", f"base_url={server.url}", "--model-option", "max_retries=0"]
    log = folder / "steps.log"
    whole = mia([*args, "--out", "whole.h5"], folder, {**env, "MIA_FAULT_LOG": str(log)})
    assert whole.returncode == 0, whole.stderr
    steps = [line.split() for line in log.read_text().splitlines()]
    halves = [int(s[0]) for s in steps if " ".join(s[1:]) == "journal record"]
    kill_at = halves[2 * RECORDS]  # the first half of the 7th record (the final attributes)
    killed = mia([*args, "--out", "RUN.h5"], folder, {**env, "MIA_FAULT_KILL_AT": str(kill_at)})
    assert killed.returncode == -9, killed.stderr
    records, end = journal.read_records(journal_path(folder / "RUN.h5"))
    assert [(r.op, r.start, r.size) for r in records] == [("append", BATCH * i, BATCH) for i in range(RECORDS)]
    assert end == journal_path(folder / "RUN.h5").stat().st_size
    return folder


@pytest.fixture
def run(killed, tmp_path) -> Path:
    """A fresh copy of the killed run (and its map) for one test."""
    shutil.copytree(killed, tmp_path / "w")
    return tmp_path / "w" / "RUN.h5"


def spans(path: Path) -> list[tuple[int, int]]:
    """(start, end) of each record in a journal."""
    data, offset, out = path.read_bytes(), 0, []
    while offset < len(data):
        _, length, _ = journal.HEADER.unpack_from(data, offset)
        out.append((offset, offset + journal.HEADER.size + length))
        offset = out[-1][1]
    return out


def resume(run: Path, server: FakeAnthropic, *extra: str) -> subprocess.CompletedProcess:
    return mia(["prompt", "--resume", str(run), "--yes", "-q", "--model-option", f"base_url={server.url}", *extra],
               run.parent)


def asked_rows(server: FakeAnthropic, since: int) -> list[int]:
    """The map rows (prefix texts) of the Messages requests sent after the first ``since``."""
    with h5py.File(server.map_file, "r") as m:
        prefixes = [ByteTokenizer().decode_batch([row])[0] for row in m["prefixes"][:]]
    asked = []
    for request in server.message_requests()[since:]:
        content = json.dumps(request["body"]["messages"])
        asked.append(next(i for i, p in enumerate(prefixes) if json.dumps(p)[1:-1] in content))
    return sorted(asked)


def map_rows(server: FakeAnthropic) -> int:
    with h5py.File(server.map_file, "r") as m:
        return len(m["prefixes"])


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("estimated cost")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def _map_file(server, killed):
    (map_folder,) = [p for p in (killed / "Prefixes").iterdir() if p.is_dir()]
    server.map_file = map_folder / "prefix_map.h5"


@pytest.mark.parametrize("damaged", range(RECORDS))
def test_a_flipped_byte_in_any_record_stops_resume_and_salvage_asks_only_its_rows(run, server, damaged):
    path = journal_path(run)
    start, end = spans(path)[damaged]
    data = bytearray(path.read_bytes())
    data[(start + end) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    sent = len(server.message_requests())
    held = f"{BATCH * damaged}..{BATCH * damaged + BATCH - 1}"

    refused = resume(run, server)
    line = one_error_line(refused)
    assert f"damaged journal {path}" in line and "--salvage" in line
    if damaged < RECORDS - 1:  # the record, the rows it held and the intact rows after it
        assert f"record {damaged + 1} is damaged (it held rows {held}; intact after it: rows " \
               f"{BATCH * damaged + BATCH}..{ROWS - 1})" in line
    else:  # nothing intact after it: its first row is where the intact records end
        assert f"record {RECORDS} is damaged (it held rows from {BATCH * damaged} on; no intact record after it)" \
            in line
    assert len(server.message_requests()) == sent and path.read_bytes() == bytes(data)  # nothing asked or changed

    shown = mia(["show", str(run)], run.parent)  # every reader stops with the same line
    assert one_error_line(shown) == line

    earlier_copy = run.parent / "RUN.h5.journal.damaged"
    earlier_copy.write_bytes(b"an earlier copy, never overwritten")
    salvaged = resume(run, server, "--salvage")
    assert salvaged.returncode == 0, salvaged.stderr
    assert "salvaging" in salvaged.stderr and "estimated cost" in salvaged.stderr
    rows = list(range(BATCH * damaged, BATCH * damaged + BATCH))
    assert asked_rows(server, sent) == sorted(r % map_rows(server) for r in rows)
    assert earlier_copy.read_bytes() == b"an earlier copy, never overwritten"
    assert (run.parent / "RUN.h5.journal_2.damaged").read_bytes() == bytes(data)
    with check_rows(run, ROWS) as f:  # every row as the undamaged run has it, in place
        assert f.attrs["complete"] and not journal_path(run).exists()
        assert int(f.attrs["generated_tokens"]) == int(f["lengths"][:].sum())
        assert json.loads(f.attrs["salvage_rows"]) == []


def test_a_garbage_prefix_loses_no_record_and_salvage_asks_nothing(run, server):
    path = journal_path(run)
    path.write_bytes(bytes(100) + path.read_bytes())
    sent = len(server.message_requests())
    line = one_error_line(resume(run, server))
    assert f"100 unreadable bytes at offset 0 (no record lost; journaled rows 0..{ROWS - 1} intact)" in line
    salvaged = resume(run, server, "--salvage")
    assert salvaged.returncode == 0, salvaged.stderr
    assert len(server.message_requests()) == sent  # all 18 journaled rows kept
    with check_rows(run, ROWS) as f:
        assert f.attrs["complete"]


def test_a_truncated_tail_is_a_kill_and_replays_silently(run, server):
    path = journal_path(run)
    path.write_bytes(path.read_bytes()[:-7])  # the last record cut short, as a kill leaves it
    sent = len(server.message_requests())
    result = resume(run, server)
    assert result.returncode == 0, result.stderr
    assert "damaged" not in result.stderr and "salvag" not in result.stderr
    assert asked_rows(server, sent) == sorted(r % map_rows(server) for r in range(ROWS - BATCH, ROWS))
    with check_rows(run, ROWS) as f:
        assert f.attrs["complete"]


def test_an_identical_duplicate_record_is_kept_once(run, server):
    path = journal_path(run)
    data = path.read_bytes()
    start, end = spans(path)[2]
    path.write_bytes(data[:end] + data[start:end] + data[end:])  # record 3 twice, byte for byte
    sent = len(server.message_requests())
    result = resume(run, server)
    assert result.returncode == 0, result.stderr
    assert len(server.message_requests()) == sent
    with check_rows(run, ROWS) as f:
        assert f.attrs["complete"]


def test_a_conflicting_duplicate_record_is_one_line_and_salvage_asks_its_rows(run, server):
    path = journal_path(run)
    data = path.read_bytes()
    start, end = spans(path)[2]
    record = journal.decode(data[start + journal.HEADER.size:end])
    record.columns["text"] = ["a different answer"] * BATCH
    path.write_bytes(data + journal.encode(record))  # record 3 again, with other contents
    sent = len(server.message_requests())
    line = one_error_line(resume(run, server))
    assert "record 3 appears twice with different contents (it held rows 6..8; intact after it: rows 9..17)" in line
    assert len(server.message_requests()) == sent
    salvaged = resume(run, server, "--salvage")
    assert salvaged.returncode == 0, salvaged.stderr
    assert asked_rows(server, sent) == sorted(r % map_rows(server) for r in range(6, 9))
    with check_rows(run, ROWS) as f:
        assert f.attrs["complete"]


def test_a_salvage_killed_before_asking_again_is_finished_by_a_plain_resume(killed, tmp_path, server):
    def damaged_copy(name: str) -> Path:
        shutil.copytree(killed, tmp_path / name)
        run = tmp_path / name / "RUN.h5"
        start, end = spans(journal_path(run))[1]
        data = bytearray(journal_path(run).read_bytes())
        data[(start + end) // 2] ^= 0x01
        journal_path(run).write_bytes(bytes(data))
        return run

    log = tmp_path / "steps.log"
    logged = damaged_copy("logged")
    env = {"MIA_FAULT_NO_FSYNC": "1"}
    salvage = ["prompt", "--resume", "RUN.h5", "--salvage", "--yes", "-q", "--model-option", f"base_url={server.url}"]
    assert mia(salvage, logged.parent, {**env, "MIA_FAULT_LOG": str(log)}).returncode == 0
    steps = [line.split(maxsplit=1) for line in log.read_text().splitlines()]
    first_record = next(int(n) for n, what in steps if what == "journal record")  # the first row asked again

    run = damaged_copy("killed")
    sent = len(server.message_requests())
    killed_salvage = mia(salvage, run.parent, {**env, "MIA_FAULT_KILL_AT": str(first_record)})
    assert killed_salvage.returncode == -9, killed_salvage.stderr
    assert (run.parent / "RUN.h5.journal.damaged").exists()
    with h5py.File(run, "r") as f:  # compacted: intact rows kept, the lost ones waiting, marked
        assert json.loads(f.attrs["salvage_rows"]) == [3, 4, 5] and not f.attrs["complete"]
        assert [e.decode().startswith("lost in a damaged journal record") for e in f["error"][:]] == \
            [3 <= i <= 5 for i in range(ROWS)]
    asked_before = asked_rows(server, sent)
    finished = resume(run, server)  # no --salvage: the recorded salvage_rows are asked first
    assert finished.returncode == 0, finished.stderr
    assert sorted(asked_before + asked_rows(server, sent + len(asked_before))) == \
        sorted([r % map_rows(server) for r in (3, 4, 5)] * 2)  # once by the killed salvage, once now
    with check_rows(run, ROWS) as f:
        assert f.attrs["complete"] and json.loads(f.attrs["salvage_rows"]) == []

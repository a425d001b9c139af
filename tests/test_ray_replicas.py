"""data_parallel_size=2 on Ray (mia_core/data_parallel.py) with the HF backend: two replicas of a tiny
Llama, each a Ray actor on a local cluster the test process starts, against one engine: the same rows;
a replica killed mid-call has its rows rerun on the other; a killed or interrupted ``mia`` leaves no
Ray process behind; an existing cluster (``ray start --head``) is joined with ``--ray-address``."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import pytest
from tiny_models import windows_map

from mia_core import registry
from mia_core.data_parallel import contiguous_parts
from mia_core.errors import MiaError
from mia_core.extraction.prompt import prompt
from mia_core.formats.runs import open_run
from mia_core.types import Sampling

ray = pytest.importorskip("ray", reason="Ray is installed by bash install.sh --dev")

SCORE_TOLERANCE = 1e-5  # the replicas see other batch compositions than one engine (docs/prompt.md)
BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def dp(tiny_llama):
    """The tiny Llama with data_parallel_size=2: two Ray actors, one core each."""
    backend = registry.backends.create(str(tiny_llama), {"device": "cpu", "data_parallel_size": "2"})
    yield backend
    backend.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tiny_llama_backend, tmp_path_factory):
    _, backend, ids = tiny_llama_backend
    return windows_map(tmp_path_factory.mktemp("dp") / "map", backend, ids, [5 * i for i in range(12)], 8, 6)


def test_calls_are_cut_into_consecutive_parts_of_near_equal_length():
    parts = contiguous_parts([10, 1, 1, 1, 9, 2], 2)
    assert [list(p) for p in parts] == [[0, 1, 2], [3, 4, 5]]  # 12 and 12
    assert [list(p) for p in contiguous_parts([5], 3)] == [[0], [], []]
    assert [len(p) for p in contiguous_parts([1] * 10, 3)] == [4, 3, 3]
    for lengths in ([3, 3, 3, 3], [1, 50, 1, 1, 1, 1], list(range(1, 30))):
        for count in (1, 2, 3, 5):
            parts = contiguous_parts(lengths, count)
            assert len(parts) == count and [i for p in parts for i in p] == list(range(len(lengths)))


@pytest.mark.parametrize("method", ["generate", "teacher-forced"])
def test_a_run_on_two_replicas_equals_one_engine_row_for_row(dp, tiny_llama_backend, folder, method, tmp_path):
    name, one, _ = tiny_llama_backend
    kw = dict(num_strings=30, max_length=6, batch_size=7, quiet=True, method=method)
    prompt(folder, str(name), backend=dp, out=tmp_path / "dp.h5", **kw)
    prompt(folder, str(name), backend=one, out=tmp_path / "one.h5", **kw)
    ours, ref = open_run(tmp_path / "dp.h5"), open_run(tmp_path / "one.h5")
    assert len(ours) == len(ref) == 30
    for column in ref.columns:  # tokens and verdicts exact, log-probabilities to SCORE_TOLERANCE
        a, b = ours.read(column), ref.read(column)
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, atol=SCORE_TOLERANCE, equal_nan=True, err_msg=column)
        else:
            assert np.array_equal(a, b), column
    recorded = ours.attrs["backend"]
    assert recorded["data_parallel_size"] == 2 and recorded["data_parallel"] == "ray"
    assert recorded["ray_address"] == "local" and recorded["bos_prepended"] is True


def test_scores_and_progress_come_from_both_replicas(dp, tiny_llama_backend):
    _, one, ids = tiny_llama_backend
    rows = [ids[i:i + 5 + i % 7] for i in range(0, 200, 9)]
    starts = [1 + i % 3 for i in range(len(rows))]
    ours, ref = dp.score(rows, starts), one.score(rows, starts)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a.logprob, b.logprob, atol=SCORE_TOLERANCE, equal_nan=True)
        np.testing.assert_allclose(a.mean, b.mean, atol=SCORE_TOLERANCE, equal_nan=True)
        assert a.argmax.tolist() == b.argmax.tolist()
    sampling = Sampling(temperature=1.0, top_k=50, seed=3)  # each part seeded from the call's seed + its first row
    assert dp.generate(rows, 5, sampling) == dp.generate(rows, 5, sampling)
    reported = []
    dp.on_rows_done = lambda rows_done, tokens: reported.append(rows_done)
    try:
        dp.generate(rows, 4)
    finally:
        dp.on_rows_done = None
    assert sum(reported) == len(rows)


def test_bad_values_are_one_line_before_any_replica_starts(dp, tiny_llama):
    with pytest.raises(MiaError, match="data_parallel_size") as caught:
        registry.backends.create(str(tiny_llama), {"device": "cpu", "data_parallel_size": "0"})
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(MiaError, match=rf"needs {cores + 1} CPUs in all .* has \d+ free of {cores}") as too_many:
        registry.backends.create(str(tiny_llama), {"device": "cpu", "data_parallel_size": str(cores + 1)})
    # dp's replicas hold every core: another backend's would wait forever for one, and is refused instead
    with pytest.raises(MiaError, match=r"has 0 free of .* held by other actors") as busy:
        registry.backends.create(str(tiny_llama), {"device": "cpu", "data_parallel_size": "2"})
    for exc in (caught.value, too_many.value, busy.value):
        assert "\n" not in str(exc)


def test_a_replica_killed_mid_call_has_its_rows_rerun_then_the_last_one_is_one_error(dp, tiny_llama_backend, capfd):
    """Last of the module's uses of ``dp``: it kills both replicas, one per call."""
    _, one, ids = tiny_llama_backend
    rows = [ids[i:i + 6] for i in range(120)] * 8  # calls of seconds: the bar asks how far they are every 0.5 s
    victim = dp.started[1]["pid"]
    dp.on_rows_done = lambda rows_done, tokens: _kill_once(victim)
    try:
        got = dp.generate(rows, 96)
    finally:
        dp.on_rows_done = None
    assert got == one.generate(rows, 96)  # its rows were generated again, on replica 1
    err = capfd.readouterr().err
    assert re.search(r"replica 2 of 2 .* died .* run again on replica 1", err), err
    assert dp.generate(rows[:3], 4) == one.generate(rows[:3], 4)  # later calls: the one replica left
    last = dp.started[0]["pid"]
    dp.on_rows_done = lambda rows_done, tokens: _kill_once(last)
    try:
        with pytest.raises(MiaError) as caught:
            dp.generate(rows, 96)
    finally:
        dp.on_rows_done = None
    message = str(caught.value)
    assert "\n" not in message and "replica 1 of 2" in message and "no other replica" in message, message
    with pytest.raises(MiaError, match="no replica is left"):
        dp.generate(rows[:2], 2)


def _kill_once(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- the mia command: killed, interrupted, and on a cluster of its own ------------------------------
def _start_mia(folder, tiny_llama, out, *extra: str, strings: int = 4000) -> tuple[subprocess.Popen, bytearray]:
    process = subprocess.Popen(
        [os.path.join(BIN, "mia"), "prompt", "--prefix_map", str(folder), "--model", str(tiny_llama), "--max_length",
         "6", "--num_strings", str(strings), "--batch_size", "8", "--out", str(out),
         "--model-option", "data_parallel_size=2", "--model-option", "device=cpu", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    stderr = bytearray()
    threading.Thread(target=lambda: [stderr.extend(chunk) for chunk in iter(
        lambda: os.read(process.stderr.fileno(), 4096), b"")], daemon=True).start()
    return process, stderr


def _wait_for_rows(process: subprocess.Popen, stderr: bytearray, timeout_s: float = 180) -> list:
    """``mia``'s descendants once the replicas are generating (the bar is past its first batches)."""
    deadline = time.monotonic() + timeout_s
    while not re.search(rb"\b([1-9][0-9]+)/\d+ \[", bytes(stderr)):
        assert process.poll() is None and time.monotonic() < deadline, bytes(stderr)[-2000:]
        time.sleep(0.5)
    family = psutil.Process(process.pid).children(recursive=True)
    assert sum("_Replica" in " ".join(p.cmdline()) for p in family) == 2, [p.cmdline()[:2] for p in family]
    return family


def _left(processes: list, within_s: float) -> list:
    deadline = time.monotonic() + within_s
    alive = processes
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return [(p.pid, " ".join(p.cmdline())[:60]) for p in alive]


def test_a_killed_mia_leaves_no_ray_process(folder, tiny_llama, tmp_path):
    process, _ = _start_mia(folder, tiny_llama, tmp_path / "run.h5", "--quiet")
    family = _wait_for_replicas(process)
    process.kill()
    assert process.wait(30) == -signal.SIGKILL
    # The actors and the local cluster's raylet and GCS end at once; Ray's agents check their
    # raylet every 0.4 s and leave after 5 misses (ray/dashboard/consts.py), some seconds more.
    assert not _left(family, 90), _left(family, 0)


def _wait_for_replicas(process: subprocess.Popen, timeout_s: float = 180) -> list:
    """``mia``'s descendants (the local cluster's processes, the actors) once both replicas have
    started and the run has had a moment to ask them."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "mia ended before its replicas started"
        family = psutil.Process(process.pid).children(recursive=True)
        if sum("_Replica" in " ".join(p.cmdline()) for p in family) == 2:
            time.sleep(3)
            return psutil.Process(process.pid).children(recursive=True)
        time.sleep(0.5)


def test_ctrl_c_keeps_the_rows_done_and_leaves_no_ray_process(folder, tiny_llama, tmp_path):
    process, stderr = _start_mia(folder, tiny_llama, tmp_path / "run.h5")
    family = _wait_for_rows(process, stderr)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
    assert process.wait(60) == 130, bytes(stderr)[-2000:]
    text = bytes(stderr).decode(errors="replace")
    assert "Traceback" not in text and "rows kept in" in text and "mia prompt --resume" in text, text[-2000:]
    assert not _left(family, 90), _left(family, 0)
    assert 8 <= len(open_run(tmp_path / "run.h5")) < 4000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_existing_cluster_is_joined_with_ray_address(folder, tiny_llama, tmp_path):
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="mia-ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    # --block: the head's processes stay in this one process group, which the test ends (`ray stop`
    # would end every Ray process on the machine).
    head = subprocess.Popen([os.path.join(BIN, "ray"), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}"],
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port, head)
        address = f"127.0.0.1:{port}"
        process, stderr = _start_mia(folder, tiny_llama, tmp_path / "run.h5", "--ray-address", address, "-q",
                                     strings=40)
        process.communicate(timeout=300)
        assert process.returncode == 0, bytes(stderr)[-2000:]
        assert open_run(tmp_path / "run.h5").attrs["backend"]["ray_address"] == address
        # mia SIGKILLed on the cluster: its actors die with it (Ray's owner fate-sharing), the cluster stays.
        process, stderr = _start_mia(folder, tiny_llama, tmp_path / "run2.h5", "--ray-address", address, "-q")
        _wait_for_actors_on_cluster(process)
        process.kill()
        assert _replicas_on_cluster(within_s=60) == [], "actors outlived the mia that owned them"
        assert head.poll() is None, "the cluster went down with mia"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_port(port: int, head: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(2)  # the GCS answers a moment before the head's raylet has registered
            return
        except OSError:
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not start"
            time.sleep(0.5)


def _wait_for_actors_on_cluster(process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_replicas_on_cluster(within_s=0)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "mia ended before its replicas started"
        time.sleep(0.5)
    time.sleep(2)


def _replicas_on_cluster(within_s: float) -> list:
    """The actor processes (``ray::_Replica…``) alive on this machine, after waiting up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        found = [p.pid for p in psutil.process_iter(["cmdline"])
                 if "ray::_Replica" in " ".join(p.info["cmdline"] or [])]
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def test_no_cluster_at_the_address_is_one_line(folder, tiny_llama, tmp_path):
    port = _free_port()  # nobody listens there
    process, stderr = _start_mia(folder, tiny_llama, tmp_path / "run.h5", "--ray-address", f"127.0.0.1:{port}", "-q")
    assert process.wait(120) == 1
    time.sleep(0.2)
    lines = bytes(stderr).decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no Ray cluster answers at 127.0.0.1:"), lines
    assert not os.path.exists(tmp_path / "run.h5")


def test_without_ray_installed_it_is_one_line(tiny_llama):
    """The default install (`bash install.sh`, no --dev) has no Ray: data_parallel_size > 1 says how to get it."""
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` now fails as if it were not installed
            "from mia_core import registry\nfrom mia_core.errors import MiaError\n"
            f"try:\n    registry.backends.create({str(tiny_llama)!r}, {{'device': 'cpu', 'data_parallel_size': 2}})\n"
            "except MiaError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("data_parallel_size > 1 runs the replicas on Ray, which is not installed") and \
        "pip install 'ray==2.60.0'" in out and out.count("\n") == 1, out

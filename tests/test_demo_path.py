"""The path `mia demo` runs the default model on (mia_core/path_choice.py): the fastest available one
whose measured verdicts agree with the reference's within the bound of docs/models.md."""

import os
import subprocess
import sys

import pytest

from mia_core.defaults import AGREEMENT_BOUND, DEFAULT_MODEL, DEFAULT_MODEL_PATHS, NATIVE_BF16, DefaultModelPath
from mia_core.path_choice import (
    availability,
    choose_path,
    cpu_has_native_bf16,
    describe_choice,
    measured_workload,
    within_bound,
)

W = "generate, batch 32"


def path(label, speed, matched_moved=0, exact_moved=0, reference=False, model="m", needs=None):
    return DefaultModelPath(label, model, needs=needs, speed={W: speed}, exact_moved=exact_moved,
                            matched_moved=matched_moved, rows=130, reference=reference)


REF = path("ref", 10.0, reference=True)
everywhere = lambda p: True  # noqa: E731


def test_a_faster_path_within_the_bound_is_chosen():
    fast = path("fast", 30.0, matched_moved=1)  # 1/130 < 1 %
    choice = choose_path([REF, fast], everywhere, W)
    assert choice.path is fast and choice.passed_over == ()
    assert "against the reference: matched length moved on 1% (1/130)" in describe_choice(choice)


def test_a_faster_path_outside_the_bound_is_passed_over_with_its_figures():
    too_many = path("bf16", 30.0, matched_moved=4)
    exact = path("exact", 40.0, exact_moved=1)
    choice = choose_path([REF, too_many, exact], everywhere, W)
    assert choice.path is REF
    assert [p.label for p, _ in choice.passed_over] == ["bf16", "exact"]
    line = describe_choice(choice)
    assert "bf16 (30 tok/s): outside the bound, matched length moved on 3% (4/130)" in line
    assert "exact (40 tok/s): outside the bound, exact verdict moved on 1/130" in line


def test_the_bound_at_its_edge():
    assert within_bound(path("one row", 1.0, matched_moved=1), AGREEMENT_BOUND)  # 0.8 %
    assert not within_bound(path("two rows", 1.0, matched_moved=2), AGREEMENT_BOUND)  # 1.5 %
    assert within_bound(REF)


def test_an_unavailable_path_is_skipped_and_said():
    fast = path("bf16", 30.0, needs=NATIVE_BF16)
    slower = path("other", 20.0, model="other")
    choice = choose_path([REF, fast, slower], lambda p: p.needs is None, W)
    assert choice.path is slower
    assert choice.passed_over == ((fast, "not available here (needs native bf16)"),)


def test_equal_speeds_go_to_the_earlier_path():
    twin = path("twin", 10.0)
    assert choose_path([REF, twin], everywhere, W).path is REF
    assert choose_path([twin, REF], everywhere, W).path is twin


def test_nothing_available_falls_back_to_the_reference():
    assert choose_path([path("fast", 99.0), REF], lambda p: False, W).path is REF


@pytest.mark.parametrize("method, batch, workload", [
    ("generate", 16, "generate, batch 32"), ("generate", 1, "generate, batch 1"),
    ("generate", 4, "generate, batch 1"), ("generate", 200, "generate, batch 32"),
    ("teacher-forced", 1, "score, batch 32")])
def test_the_measured_workload_nearest_the_demo(method, batch, workload):
    assert measured_workload(method, batch, DEFAULT_MODEL_PATHS) == workload


@pytest.mark.parametrize("workload", ["generate, batch 1", "generate, batch 32", "score, batch 32"])
def test_todays_figures_choose_the_reference_everywhere(workload):
    """docs/models.md: bf16 moves 4/130 matched lengths, llama.cpp 8/130; both outside the 1 % bound."""
    choice = choose_path(DEFAULT_MODEL_PATHS, everywhere, workload)
    assert choice.path.reference and choice.path.model == DEFAULT_MODEL
    assert choice.path.options == {"dtype": "float32"}
    faster = {p.label for p in DEFAULT_MODEL_PATHS if p.speed[workload] > choice.path.speed[workload]}
    assert faster and {p.label for p, _ in choice.passed_over} == faster


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme avx512f avx512bw {extra} sse4_2
bugs\t\t: sysret_ss_attrs {bug}
"""


@pytest.mark.parametrize("extra, bug, native", [
    ("avx512_bf16", "", True), ("amx_bf16 amx_tile", "", True), ("avx512_vnni", "", False),
    ("", "avx512_bf16", False)])  # only the flags line counts
def test_native_bf16_from_cpuinfo(extra, bug, native):
    assert cpu_has_native_bf16(CPUINFO.format(extra=extra, bug=bug)) is native


def test_native_bf16_on_a_machine_without_cpuinfo_flags():
    assert not cpu_has_native_bf16("")


def test_availability_asks_the_registry_and_the_cpu():
    reference, bf16, llamacpp = DEFAULT_MODEL_PATHS
    with_bf16, without = availability(lambda: True), availability(lambda: False)
    assert with_bf16(reference) and with_bf16(bf16) and without(reference) and not without(bf16)
    assert not with_bf16(path("unknown", 1.0, model="no-such-model-anywhere"))
    pytest.importorskip("mia_llamacpp")
    assert with_bf16(llamacpp)


def test_llamacpp_is_unavailable_when_its_plugin_is_not_loaded():
    code = ("from mia_core.defaults import DEFAULT_MODEL_PATHS as P; from mia_core.path_choice import availability;"
            " a = availability(lambda: False); print([a(p) for p in P])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MIA_LOAD_PLUGINS": "mia-hf"}).stdout
    assert out.strip() == "[True, False, False]"


def test_the_table_holds_the_figures_docs_models_md_states():
    """DEFAULT_MODEL_PATHS cites docs/models.md: its speeds, rows moved and bound are the page's."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text(encoding="utf-8")
    for workload in ("generate, batch 1", "generate, batch 32", "score, batch 32"):
        row = re.search(rf"^\| {workload} \|(.*)$", text, flags=re.M).group(1)
        measured = [float(x) for x in row.split("|")[:3]]  # mia HF fp32, mia HF bf16, mia llama.cpp
        assert measured == [p.speed[workload] for p in DEFAULT_MODEL_PATHS]
    matched = re.search(r"^\| rows whose matched length differs \| (\d+) \(.*\| (\d+) \(", text, flags=re.M)
    exact = re.search(r"^\| rows whose exact-extraction verdict differs \| (\d+) \| (\d+) \|", text, flags=re.M)
    _, bf16, llamacpp = DEFAULT_MODEL_PATHS
    assert [int(matched.group(i)) for i in (1, 2)] == [bf16.matched_moved, llamacpp.matched_moved]
    assert [int(exact.group(i)) for i in (1, 2)] == [bf16.exact_moved, llamacpp.exact_moved]
    assert "130 rows (65 members)" in text and bf16.rows == llamacpp.rows == 130
    assert AGREEMENT_BOUND.exact_verdicts_moved == 0 and AGREEMENT_BOUND.matched_lengths_moved == 0.01
    assert "no exact-verdict change and\nmatched-length changes on at most 1 % of rows" in text

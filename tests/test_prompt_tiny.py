"""The prompt loop on a tiny randomly initialised HF model (tests/tiny_models.py): resume
after an interrupted run gives exactly the uninterrupted output, sampling is reproducible."""

import pytest
from tiny_models import windows_map

from mia_core.extraction.prompt import prompt
from mia_core.formats.runs import RunWriter, open_run
from mia_core.types import Sampling


@pytest.fixture(scope="module")
def tiny(tiny_llama_backend, tmp_path_factory):
    path, backend, ids = tiny_llama_backend
    folder = windows_map(tmp_path_factory.mktemp("tiny") / "map", backend, ids, [7 * i for i in range(9)], 8, 6)
    return str(path), backend, folder


class Interrupting:
    """Wraps a backend and raises KeyboardInterrupt (as Ctrl-C would) on call number ``at``."""

    def __init__(self, backend, at):
        self.backend, self.at, self.calls = backend, at, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.backend.generate(*args, **kwargs)


@pytest.mark.parametrize("sampling", [None, Sampling(temperature=1.0, top_k=20, seed=7)])
def test_interrupted_then_resumed_equals_uninterrupted(tiny, tmp_path, sampling):
    name, backend, folder = tiny
    kw = dict(num_strings=20, batch_size=3, max_length=5, sampling=sampling, quiet=True)
    whole = prompt(folder, name, backend=backend, out=tmp_path / "whole.h5", **kw)
    with pytest.raises(KeyboardInterrupt):
        prompt(folder, name, backend=Interrupting(backend, at=4), out=tmp_path / "cut.h5", **kw)
    assert len(open_run(tmp_path / "cut.h5")) == 9 and not open_run(tmp_path / "cut.h5").complete
    resumed = prompt(resume=tmp_path / "cut.h5", backend=backend, quiet=True)
    assert [r["generated_tokens"] for r in resumed] == [r["generated_tokens"] for r in whole]
    assert [r["prefix_index"] for r in resumed] == [i % 9 for i in range(20)]
    again = prompt(folder, name, backend=backend, **kw)
    assert [r["generated_tokens"] for r in again] == [r["generated_tokens"] for r in whole]  # reproducible


def test_reopened_run_appends_after_last_batch(tiny, tmp_path):
    name, backend, folder = tiny
    prompt(folder, name, backend=backend, out=tmp_path / "r.h5", num_strings=4, max_length=3, quiet=True)
    RunWriter.reopen(tmp_path / "r.h5").close()
    assert len(prompt(resume=tmp_path / "r.h5", backend=backend, quiet=True)) == 4


def test_progress_moves_within_a_batch(tiny, tmp_path, monkeypatch):
    """One batch of 9 rows and 24 new tokens: the bar advances during the batch (the HF backend
    reports every decoding step) in whole rows, and ends at exactly 9."""
    import mia_core.extraction.prompt as prompt_module

    path, backend, folder = tiny
    updates: list[float] = []
    real_progress = prompt_module.progress

    def recording_progress(*args, **kwargs):
        bar = real_progress(*args, **{**kwargs, "quiet": True})
        update = bar.update
        bar.update = lambda n=1: (updates.append(n), update(n))[1]
        return bar

    monkeypatch.setattr(prompt_module, "progress", recording_progress)
    prompt(folder, path, num_strings=9, batch_size=9, max_length=24, backend=backend,
           out=tmp_path / "run.h5", quiet=True)
    assert len(updates) > 2 and all(float(n).is_integer() for n in updates)  # moved inside the batch
    assert sum(updates) == 9
    assert backend.on_rows_done is None  # the hook pointed at this run's bar only


def test_pending_rows_are_listed_only_for_a_priced_model(tiny, tmp_path, monkeypatch):
    """A local model's run never lists its pending rows up front (8 bytes a row, twice: 160 MB at 10^7 rows, the
    peak of `mia prompt` before): only a model whose requests have a price estimates their cost over them."""
    from mia_core.extraction import prompt as prompt_module

    def refuse(*args, **kwargs):
        raise AssertionError("the pending rows were listed for a model without prices")

    monkeypatch.setattr(prompt_module, "_pending_rows", refuse)
    name, backend, folder = tiny
    rows = prompt(folder, name, backend=backend, out=tmp_path / "run.h5", num_strings=7, batch_size=3,
                  max_length=4, quiet=True)
    assert len(rows) == 7 and len(open_run(tmp_path / "run.h5")) == 7

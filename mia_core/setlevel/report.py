"""The plain-text summaries ``mia dataset-inference`` and ``mia contamination`` print, from their
results records (the same dicts the JSON files hold)."""

from statistics import median
from typing import Any

from mia_core.text_table import text_table

DI_ASSUMPTIONS = (
    "the suspect and validation strings are drawn i.i.d. from the same distribution (the blind baseline above "
    "checks what it can without the model), the validation strings were never trained on, and no string is in "
    "both sets; the t-test's normal approximation holds for the testing halves' scores")
CONTAMINATION_ASSUMPTIONS = (
    "without contamination every order of the examples within a shard is equally likely (exchangeability: "
    "examples not sorted by date, length, topic or answer); the permutation p-value is then exact, the "
    "sharded t-test approximate (normal over shards)")


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _verdict(p_value: float, alpha: float, yes: str, no: str) -> str:
    return f"at level {alpha:g}: {yes} (p = {_p(p_value)} ≤ {alpha:g})" if p_value <= alpha else \
        f"at level {alpha:g}: {no} (p = {_p(p_value)} > {alpha:g})"


def _merged_p(splits: int) -> str:
    """How dataset inference's one p-value comes from its splits'."""
    return "the one split's p-value" if splits == 1 else \
        f"min(1, 2 × median) of the {splits} seeded splits' p-values, valid under their dependence"


def format_dataset_inference(record: dict[str, Any]) -> str:
    r = record["result"]
    splits = r["splits"]
    merged = _merged_p(splits)
    lines = [
        f"dataset inference (Maini et al. 2024), model {record['model']}",
        f"p-value: {_p(r['p_value'])}  (one-sided Welch t-test, H1: the linear model scores the suspect set's "
        f"testing half higher than the validation set's; {merged})",
        f"sequences: {r['n_suspect']} suspect, {r['n_validation']} validation; per split fitted on "
        f"{r['n_fit'][0]} + {r['n_fit'][1]}, tested on {r['n_test'][0]} + {r['n_test'][1]}"
        + (f"; {record['missing']} left out (a feature missing)" if record.get("missing") else ""),
    ]
    if splits > 1:
        ps = sorted(r["split_p_values"])
        lines.append(f"per-split p-values: median {_p(median(ps))}, min {_p(ps[0])}, max {_p(ps[-1])} "
                     f"(seed {r['seed']})")
    lines.append(_verdict(r["p_value"], record["alpha"], "the suspect set was trained on (H0 rejected)",
                          "no evidence that the suspect set was trained on (H0 not rejected)"))
    lines.append(format_blind(record.get("blind") or {}))
    lines.append("features' weights (logistic regression on features standardised by the suspect set, mean over "
                 "splits; positive: higher in the suspect set):")
    lines.append(text_table(["feature", "weight"], [[name, f"{w:+.3f}"] for name, w in r["weights"].items()],
                            indent="  ", right=(1,)))
    for name, why in r.get("dropped_features", {}).items():
        lines.append(f"  {name}: not used ({why})")
    passes = record.get("forward_passes_per_string") or {}
    lines.append("cost: forward passes per sequence: " + ", ".join(f"{k} {v:g}" for k, v in passes.items())
                 + f" (total {sum(passes.values()):g})")
    lines.append(f"assumptions: {DI_ASSUMPTIONS}")
    lines.extend(f"warning: {w}" for w in record.get("warnings", []))
    return "\n".join(lines)


def format_blind(blind: dict[str, Any]) -> str:
    """The blind baseline's verdict on whether the two sets differ in their text alone."""
    if not blind.get("computed"):
        return f"blind baseline (no model): not computed ({blind.get('reason') or 'unknown reason'})"
    verdict = ("the sets differ in their text without the model: the p-value may measure that difference, "
               "not training" if blind.get("separable") else
               "the sets are not separable without the model: consistent with i.i.d. sets")
    return (f"blind baseline (no model, word n-grams, out-of-fold over both whole sets): AUC {blind['auc']:.3f}; "
            f"{verdict}")


def format_contamination(record: dict[str, Any]) -> str:
    r = record["result"]
    t_test = r.get("t_test")
    lines = [
        f"test-set contamination (Oren et al. 2024), model {record['model']}",
        f"permutation p-value: {_p(r['p_value'])}  (exact under exchangeability; H1: the canonical order's "
        f"log-likelihood, summed over shards, exceeds that of {r['permutations']} seeded permutations; "
        f"resolution 1/(N+1) = {_p(r['resolution'])})",
        "sharded t-test p-value: " + (f"{_p(t_test['p_value'])}  (Oren et al.'s test: one-sided one-sample t-test "
                                      f"over {r['n_shards']} shards of canonical − mean permuted log-likelihood, "
                                      f"t = {t_test['t']:.3f}; approximate)" if t_test else
                                      f"n/a (needs ≥ 2 shards with differing values; {r['n_shards']} shard(s))"),
        f"examples: {r['n_examples']} in {r['n_shards']} shard(s) of {min(r['shard_sizes'])}"
        + (f"-{max(r['shard_sizes'])}" if max(r["shard_sizes"]) != min(r["shard_sizes"]) else "")
        + f" consecutive examples; {r['tokens_in_benchmark']} tokens",
        _verdict(r["p_value"], record["alpha"], "the canonical order is preferred: evidence of contamination "
                 "(H0 rejected)", "no evidence of contamination (H0 not rejected)"),
        f"cost: {r['forward_passes']} windows of ≤ {r['context']} tokens (stride {r['stride']}); each benchmark "
        f"token went through the model {r['scored_tokens_per_benchmark_token']:.3g} times "
        f"({r['permutations']} permutations + the canonical order)",
        f"assumptions: {CONTAMINATION_ASSUMPTIONS}",
    ]
    lines.extend(f"warning: {w}" for w in record.get("warnings", []))
    return "\n".join(lines)


def report_rows(record: dict[str, Any]) -> list[list[str]]:
    """The figures of a set-level results record as (measure, value) rows for ``mia report``: the
    same statements as the printed summary, one per row."""
    r = record["result"]
    if record["kind"] == "dataset-inference":
        rows = [["p-value (one-sided Welch t-test)", f"{_p(r['p_value'])} ({_merged_p(r['splits'])})"],
                ["sequences", f"{r['n_suspect']} suspect, {r['n_validation']} validation"
                 + (f"; {record['missing']} left out (a feature missing)" if record.get("missing") else "")],
                ["verdict", _verdict(r["p_value"], record["alpha"], "the suspect set was trained on",
                                     "no evidence that the suspect set was trained on")],
                ["blind baseline", format_blind(record.get("blind") or {})]]
        rows += [[f"weight of {name}", f"{w:+.3f}"] for name, w in r["weights"].items()]
        rows += [[f"feature {name} left out", why] for name, why in (r.get("dropped_features") or {}).items()]
        passes = record.get("forward_passes_per_string") or {}
        rows.append(["forward passes per sequence", f"{sum(passes.values()):g}"])
        rows.append(["assumptions", DI_ASSUMPTIONS])
    else:
        rows = [["permutation p-value (exact under exchangeability)",
                 f"{_p(r['p_value'])} (resolution 1/(N+1) = {_p(r['resolution'])}, N = {r['permutations']})"],
                ["examples, shards", f"{r['n_examples']} in {r['n_shards']} shard(s)"],
                ["verdict", _verdict(r["p_value"], record["alpha"], "evidence of contamination",
                                     "no evidence of contamination")],
                ["assumptions", CONTAMINATION_ASSUMPTIONS]]
    rows += [["warning", w] for w in record.get("warnings", [])]
    return rows

"""ROC plot with a log-scaled FPR axis (Carlini et al. 2022: what matters is the low-FPR end)."""

from collections.abc import Sequence
from pathlib import Path

from mia_core.attack.metrics import SignalMetrics


def plot_roc(metrics: Sequence[SignalMetrics], path: Path, title: str = "") -> Path:
    """Write a PNG of the ROC curves. FPR = 0 cannot sit on a log axis: it is drawn at
    half the smallest non-zero FPR the data can reach (1 / 2·n_nonmembers)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 5))
    floor = min(0.5 / max(m.n_nonmembers, 1) for m in metrics) if metrics else 1e-3
    for m in metrics:
        fpr = np.maximum(m.fpr, floor)
        ax.step(fpr, m.tpr, where="post", label=f"{m.signal} (AUC {m.auc:.3f})")
    grid = np.logspace(np.log10(floor), 0, 100)
    ax.plot(grid, grid, ls="--", color="grey", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("False positive rate (log scale)")
    ax.set_ylabel("True positive rate")
    ax.set_title(title or "Membership inference ROC")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

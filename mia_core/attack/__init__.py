"""Membership inference (``mia attack``): signals, ROC metrics, results files and plots.

Pure numpy apart from the backend calls; nothing here imports torch.
"""

from mia_core.attack.items import Item, load_dataset_items, load_map_items
from mia_core.attack.metrics import SignalMetrics, bootstrap_auc, evaluate_signal, roc_auc, roc_curve, tpr_at_fpr
from mia_core.attack.run import AttackConfig, AttackOutcome, attack
from mia_core.attack.signals import SIGNALS, parse_signals
from mia_core.formats.attack_results import AttackResults, export_results

__all__ = [
    "SIGNALS", "AttackConfig", "AttackOutcome", "AttackResults", "Item", "SignalMetrics", "attack",
    "bootstrap_auc", "evaluate_signal", "export_results", "load_dataset_items", "load_map_items",
    "parse_signals", "roc_auc", "roc_curve", "tpr_at_fpr",
]

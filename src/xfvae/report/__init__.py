"""Reporting: collect training runs into one tidy CSV, then the paper's statistics (Friedman,
Nemenyi, Wilcoxon-Holm), tables (1, 3, 4) and figures (2, 3, 4). CLI: ``python -m xfvae.report``."""

from xfvae.report.collect import ReportWarning, collect, load_results, select
from xfvae.report.comparison import Comparison, compare, compare_scores

__all__ = [
    "Comparison",
    "ReportWarning",
    "collect",
    "compare",
    "compare_scores",
    "load_results",
    "select",
]

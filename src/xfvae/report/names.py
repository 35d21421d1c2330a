"""Names shared by every report artefact: metric columns and their direction, and the paper's labels
for models, data sets and ablation variants (so our tables read like the paper's)."""

from __future__ import annotations

import re

#: Short metric name -> column of the collected results CSV, in the paper's Table 3 order.
METRICS = {
    "rmse": "test/rmse",
    "ndcg@20": "test/ndcg@20",
    "ndcg@50": "test/ndcg@50",
    "recall@20": "test/recall@20",
    "recall@50": "test/recall@50",
}

#: The ranking metrics, recorded per protocol as ``test/<protocol>/<metric>`` (xfvae.scoring.evaluation).
RANKING_METRICS = ("recall@20", "recall@50", "ndcg@20", "ndcg@50")

#: Validation RMSE: what early stopping, checkpoint choice and tuning select on.
VAL_RMSE = "val/rmse"

#: The scores every run writes to metrics.json under the default protocol, in this order.
SCORE_KEYS = (VAL_RMSE, METRICS["rmse"], *(f"test/{m}" for m in RANKING_METRICS))

#: The ranking protocols of :data:`xfvae.scoring.metrics.PROTOCOLS`, in its order (no torch import here).
PROTOCOLS = (
    "paper",
    "paper_heldout",
    "liang_nnz",
    "binary",
    "binary_heldout",
    "liang_binary",
    "full",
    "rated",
    "rated_all",
)

METRIC_LABELS = {
    "rmse": "RMSE",
    "ndcg@20": "NDCG@20",
    "ndcg@50": "NDCG@50",
    "recall@20": "Recall@20",
    "recall@50": "Recall@50",
    "auc": "AUC",
}

#: Model config name -> label; the order is the paper's row order (ours last).
MODEL_LABELS = {
    "mf": "Biased MF",
    "bpmf": "BPMF",
    "ncf": "NCF",
    "cnncf": "CNN-CF",
    "urec": "U-Rec",
    "irec": "I-Rec",
    "daecf": "DAE-CF",
    "vaecf": "VAE-CF",
    "xfvae": "Ours",
}

DATA_LABELS = {
    "ml-100k": "ML-100K",
    "ml-1m": "ML-1M",
    "ml-10m": "ML-10M",
    "ml-20m": "ML-20M",
    "amazon-pet": "Amazon-Pet",
    "amazon-kindle": "Amazon-Kindle",
    "synthetic": "Synthetic",
}

#: Table 4 rows (ablation variant -> label), in the paper's order.
VARIANT_LABELS = {
    "no_data_input": "No data input",
    "no_cross_feedback": "No cross feedback",
    "no_attention": "No attention",
    "full": "Full Model",
}

_LOWER_IS_BETTER = ("rmse", "mae", "mse", "loss")
_HIGHER_IS_BETTER = ("ndcg", "recall", "precision", "hit", "mrr", "map", "auc", "accuracy")


def metric_column(metric: str, columns=None) -> str:
    """The results column of ``metric``: a short name (``ndcg@20``) or a column name itself."""
    if columns is not None and metric in columns:
        return metric
    if metric in METRICS:
        return METRICS[metric]
    if columns is not None and f"test/{metric}" in columns:
        return f"test/{metric}"
    if columns is None:
        return metric
    raise KeyError(
        f"metric {metric!r} is not a column of the results (known short names: {', '.join(METRICS)}; "
        f"numeric columns present: {', '.join(map(str, columns))})"
    )


def protocol_column(protocol: str, metric: str) -> str:
    """The results column of ``metric`` (a short name) under ranking protocol ``protocol``."""
    return f"test/{protocol}/{metric}"


def protocols_in(columns) -> list[str]:
    """The protocols whose four ranking metrics are all columns, in :data:`PROTOCOLS` order."""
    found = {c.split("/")[1] for c in map(str, columns) if c.count("/") == 2 and c[:5] == "test/"}
    found = {p for p in found if all(protocol_column(p, m) in columns for m in RANKING_METRICS)}
    return order_by(found, {p: p for p in PROTOCOLS})


def short_metric(metric: str) -> str:
    return metric.removeprefix("test/").removeprefix("val/").split("/")[-1]


def metric_label(metric: str) -> str:
    short = short_metric(metric)
    return METRIC_LABELS.get(short, short)


def lower_is_better(metric: str) -> bool:
    """Direction of a metric from its name: RMSE-like lower, ranking/accuracy metrics higher."""
    name = short_metric(metric).lower()
    if name.startswith(_LOWER_IS_BETTER) or name.endswith(_LOWER_IS_BETTER):
        return True
    if name.startswith(_HIGHER_IS_BETTER):
        return False
    raise ValueError(
        f"cannot tell whether lower or higher {metric!r} is better; name it like rmse/mae (lower) "
        f"or ndcg/recall/auc (higher), or pass lower_is_better explicitly"
    )


def model_label(name: str) -> str:
    return MODEL_LABELS.get(name, name)


def data_label(name: str) -> str:
    return DATA_LABELS.get(name, name)


def order_by(names, known: dict[str, str]) -> list:
    """Known names in the order of ``known``, then the others alphabetically."""
    names = list(dict.fromkeys(names))
    rank = {k: i for i, k in enumerate(known)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), str(n)))


def setting_value(setting, key: str | None = None):
    """The value of a ``key=value`` setting (``"frac=0.05"`` -> ``"0.05"``); the setting itself when
    it has no ``=``; None for a missing setting. Several settings are comma separated."""
    if setting is None or (isinstance(setting, float) and setting != setting):
        return None
    parts = [p.strip() for p in str(setting).split(",") if p.strip()]
    pairs = [p.split("=", 1) for p in parts if "=" in p]
    if key is not None:
        return next((v for k, v in pairs if k.strip() == key), None)
    return pairs[0][1] if len(pairs) == 1 and len(parts) == 1 else str(setting)


def canonical_variant(value) -> str:
    """Map an ablation setting value to a :data:`VARIANT_LABELS` key where it names one
    (``"No-Cross-Feedback"``, ``no_cross_feedback`` and ``nocrossfeedback`` all do)."""
    key = re.sub(r"[^a-z]", "", str(value).lower())
    for name in VARIANT_LABELS:
        if key == name.replace("_", ""):
            return name
    return {"fullmodel": "full", "nodata": "no_data_input", "nocf": "no_cross_feedback"}.get(
        key, str(value)
    )

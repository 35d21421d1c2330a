"""Lightning's CSV logger made resumable: ``csv/metrics.csv`` of a resumed run keeps the epochs
before its checkpoint (Lightning's writer deletes the file when it finds one) and is written
atomically (:mod:`xfvae.runs.atomic`) at every flush instead of being appended to in place.

Rows the earlier invocation logged after its last checkpoint are replaced by the resumed run's: at
its first flush, the rows of the epochs it logs again are dropped, and so are rows without an epoch
(the final summary row ``xfvae.train`` logs, which the resumed run logs again).
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from xfvae.runs.atomic import atomic_write_text


class _ResumableWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._resumed_rows_dropped = False

    def _check_log_dir_exists(self) -> None:  # keep what this run logged before it was stopped
        pass

    def _read_rows(self) -> list[dict[str, Any]]:
        if not os.path.isfile(self.metrics_file_path):
            return []
        with open(self.metrics_file_path, newline="") as fh:
            return list(csv.DictReader(fh))

    def save(self) -> None:
        if not self.metrics:
            return
        rows = self._read_rows()
        if not self._resumed_rows_dropped:
            epochs = [float(m["epoch"]) for m in self.metrics if m.get("epoch") is not None]
            first = min(epochs, default=float("inf"))
            rows = [
                r for r in rows if r.get("epoch") not in (None, "") and float(r["epoch"]) < first
            ]
            self._resumed_rows_dropped = True
        rows += self.metrics
        keys = sorted(set().union(*rows))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, text.getvalue())
        self.metrics = []


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` with the resumable writer (conf/logger/csv.yaml)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _ResumableWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(log_dir=self.log_dir)
        return self._experiment

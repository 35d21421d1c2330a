"""A run directory holds one configuration's results, and says what state they are in.

``run.json`` (written atomically at start and at every change of state) records the configuration
hash (:func:`xfvae.runs.provenance.config_hash`), the status (``running``, ``complete``, ``failed``,
``interrupted``), how this invocation started (``fresh``, ``resumed`` from ``checkpoints/last.ckpt``
or ``skipped`` because complete) and the error of a failed run. Before a run starts,
:meth:`RunDir.plan` decides from what is there:

* nothing of ours                       -> run from scratch;
* another configuration's files         -> refuse (:class:`RunDirConflict`), unless ``overwrite``;
* this configuration, complete          -> skip (``resume``) / refuse (not ``resume``);
* this configuration, ``last.ckpt``     -> resume from it (``resume``) / start over (not ``resume``).

A lock file (``.lock``, ``flock``) keeps two processes out of one directory at a time.

Ownership is decided before anything is written: only an invocation that holds the lock and plans
to run (fresh or resumed) writes into the directory (:meth:`RunDir.claim`, then its config, log and
results). A skipped run, a refused one and one that finds the directory locked change no byte of
it, so a finished run's files stay exactly as that run wrote them. ``run.json`` is the last file a
finished run writes: ``metrics.json`` counts only beside a ``run.json`` that says ``complete``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xfvae.runs.atomic import atomic_write_json, remove_orphan_temps

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
#: Files and folders a run writes; ``overwrite`` removes exactly these.
RESULT_FILES = (
    METRICS_FILE,
    "history.csv",
    "test_predictions.csv",
    RUN_FILE,
    "checkpoints",
)
LAST_CKPT = Path("checkpoints") / "last.ckpt"
#: Folders of a run that its atomic writers write into (orphan temp files are looked for there).
RUN_FOLDERS = (".", "checkpoints", "csv", ".hydra")


class RunDirConflict(RuntimeError):
    """The directory holds another configuration's results, or another process is using it."""


@dataclass(frozen=True)
class Plan:
    action: str  # "fresh" | "resume" | "skip"
    ckpt: Path | None = None
    metrics: dict[str, Any] | None = None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    def __init__(
        self,
        path: str | os.PathLike,
        config_hash: str,
        data_fingerprint: dict[str, Any] | None = None,
        config_only_hash: str | None = None,
    ):
        """``config_only_hash``: the configuration's hash without the data fingerprint, which is
        how runs written before the fingerprint existed (scheme identity-v1) name themselves."""
        self.path = Path(path)
        self.config_hash = config_hash
        self.data_fingerprint = data_fingerprint
        self.config_only_hash = config_only_hash

    # -- what is there ---------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        """``run.json`` (or, for runs written before it existed, the hash in ``metrics.json``)."""
        for name in (RUN_FILE, METRICS_FILE):
            f = self.path / name
            if f.is_file():
                try:
                    data = json.loads(f.read_text())
                except (OSError, ValueError) as exc:
                    raise RunDirConflict(
                        f"{f}: unreadable ({exc}); inspect it, then re-run with overwrite=true to "
                        "replace the directory's results"
                    ) from exc
                if name == METRICS_FILE:
                    keys = ("config_hash", "data_fingerprint")
                    return {k: data[k] for k in keys if k in data} | {"status": "complete"}
                return data
        return None

    def has_results(self) -> bool:
        return any((self.path / name).exists() for name in RESULT_FILES)

    def plan(self, resume: bool = True, overwrite: bool = False) -> Plan:
        if overwrite:
            self.clear()
            return Plan("fresh")
        state = self.read_state()
        if state is None:
            if self.has_results():
                raise RunDirConflict(
                    f"{self.path} holds result files of an unknown configuration (no {RUN_FILE}): "
                    "re-run with overwrite=true to replace them, or choose another directory "
                    "(hydra.run.dir=... / hydra.sweep.dir=...)"
                )
            return Plan("fresh")
        if state.get("config_hash") != self.config_hash and not self._same_before_fingerprint(
            state
        ):
            changed = self._changed_data(state.get("data_fingerprint"))
            if changed:
                raise RunDirConflict(
                    f"{self.path} holds results of this configuration on other data: "
                    f"{changed} changed since. Re-run with overwrite=true to replace them with "
                    "results on the current data, or choose another directory (hydra.run.dir=...)"
                )
            raise RunDirConflict(
                f"{self.path} holds the results of another configuration (config_hash "
                f"{state.get('config_hash')}, this one {self.config_hash}): re-run with "
                "overwrite=true (FRESH=1 for the make targets) to replace them, or choose another "
                "directory (hydra.run.dir=... / hydra.sweep.dir=...)"
            )
        metrics = self.path / METRICS_FILE
        if state.get("status") == "complete" and metrics.is_file():
            if not resume:
                raise RunDirConflict(
                    f"{self.path} already holds this configuration's complete results: drop "
                    "resume=false to keep them, or pass overwrite=true to run it again"
                )
            return Plan("skip", metrics=json.loads(metrics.read_text()))
        ckpt = self.path / LAST_CKPT
        if resume and ckpt.is_file():
            return Plan("resume", ckpt=ckpt)
        self.clear()
        return Plan("fresh")

    def _same_before_fingerprint(self, state: dict[str, Any]) -> bool:
        """A run from before data fingerprints (no ``data_fingerprint`` recorded) of this very
        configuration: its data cannot be checked, and it is taken as this run's."""
        return (
            "data_fingerprint" not in state
            and self.config_only_hash is not None
            and state.get("config_hash") == self.config_only_hash
        )

    def _changed_data(self, recorded: Any) -> str | None:
        """Which data files differ from the recorded fingerprint (None: not known to differ)."""
        if not isinstance(recorded, dict) or self.data_fingerprint is None:
            return None
        roles = sorted(set(recorded) | set(self.data_fingerprint))
        diff = [
            f"{r} (size {recorded.get(r, {}).get('size')} -> "
            f"{self.data_fingerprint.get(r, {}).get('size')} bytes, sha256 "
            f"{str(recorded.get(r, {}).get('sha256'))[:12]} -> "
            f"{str(self.data_fingerprint.get(r, {}).get('sha256'))[:12]})"
            for r in roles
            if recorded.get(r) != self.data_fingerprint.get(r)
        ]
        return "the data file(s) " + "; ".join(diff) if diff else None

    # -- changes -----------------------------------------------------------------------------------
    def claim(self, plan: Plan) -> None:
        """Take the directory for a run that goes ahead (fresh or resumed), holding the lock: note
        the owner in ``.lock``, remove temp files an earlier killed process left, and (resuming)
        the result files of its unfinished end, which the resumed run writes again."""
        if plan.action == "skip":
            raise ValueError("a skipped run does not claim the directory")
        if self._lock_fh is not None:
            self._lock_fh.seek(0)
            self._lock_fh.truncate()
            self._lock_fh.write(f"pid {os.getpid()} on {platform.node()}\n")
            self._lock_fh.flush()
        for folder in RUN_FOLDERS:
            remove_orphan_temps(self.path / folder)
        if plan.action == "resume":
            for name in (METRICS_FILE, "history.csv", "test_predictions.csv"):
                (self.path / name).unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every result file of an earlier run (configs and logs stay)."""
        for name in RESULT_FILES:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def mark(self, status: str, started: str | None = None, **extra: Any) -> None:
        state = self.read_state() if (self.path / RUN_FILE).is_file() else {}
        state = dict(state or {})
        if self.data_fingerprint is not None:
            state["data_fingerprint"] = self.data_fingerprint
        state.update(
            config_hash=self.config_hash,
            status=status,
            updated_at=_now(),
            host=platform.node(),
            pid=os.getpid(),
            **extra,
        )
        if started is not None:
            state["started"] = started
            state["invoked_at"] = _now()
        if status != "failed":
            state.pop("error", None)
        atomic_write_json(self.path / RUN_FILE, state)

    _lock_fh = None

    @contextmanager
    def lock(self):
        """Hold ``.lock`` for the duration; a second process gets a clear error, not a mixed dir.
        Taking the lock writes nothing (:meth:`claim` notes the owner)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                fh.seek(0)
                owner = fh.read().strip() or "another process"
                raise RunDirConflict(
                    f"{self.path} is in use by {owner}: wait for it to finish, or run into "
                    "another directory (hydra.run.dir=...)"
                ) from exc
            except OSError as exc:  # e.g. a cluster file system mounted without flock
                warnings.warn(
                    f"{self.path}: cannot lock the run directory ({exc}); going on unlocked",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self._lock_fh = fh
            yield self
        finally:
            self._lock_fh = None
            fh.close()

"""Follow a long make target: runs finished / total, failures so far, elapsed time and an estimate
of what is left, from the files the runs write (each job's ``.hydra/outcome.json``,
:mod:`xfvae.runs.sweep`), so it works for local sweeps and launcher jobs alike.

    python experiments/progress.py ROOT... --total N --since ISO [--log FILE] [--every S]
    python experiments/progress.py --study results/tuning/ml-100k/mf/journal.log:mf --total 20

On a terminal the status line is rewritten in place every few seconds, and a plain line is printed
whenever a run finishes and at least once a minute; with ``--log`` the plain lines are appended to
that file too. The experiment scripts (``experiments/common.sh``) start it beside their sweeps and
stop it when the sweeps end (SIGTERM: it prints a last line and exits 0); ``make tune`` starts it
on the study's journal (search trials finished against the budget; the re-runs of the selection
follow them).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xfvae.runs.sweep import now, read_outcomes


@dataclass(frozen=True)
class Progress:
    """Counts of this invocation's jobs and its elapsed time."""

    total: int
    finished: int
    failed: int
    skipped: int
    elapsed_s: float
    unit: str = "runs"
    stopped: int = 0  # trials a stop signal ended (the tuner continues them): not failures

    @property
    def remaining_s(self) -> float | None:
        """Left time at the rate of the jobs that trained (skipped jobs cost nothing)."""
        trained = self.finished - self.skipped
        left = max(self.total - self.finished, 0)
        if left == 0:
            return 0.0
        if trained <= 0:
            return None
        return self.elapsed_s / trained * left

    def line(self) -> str:
        eta = self.remaining_s
        left = "unknown until a run finishes" if eta is None else f"about {clock(eta)}"
        skipped = f" ({self.skipped} skipped as complete)" if self.unit == "runs" else ""
        stopped = f", {self.stopped} stopped and continued" if self.stopped else ""
        return (
            f"progress: {self.finished}/{self.total} {self.unit} finished{skipped}, "
            f"{self.failed} failed{stopped}, elapsed {clock(self.elapsed_s)}, left {left}"
        )


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def measure(roots: Sequence[str | Path], total: int, since: str, started: float) -> Progress:
    rows = [r for root in roots if Path(root).is_dir() for r in read_outcomes(root, since=since)]
    return Progress(
        total=total,
        finished=len(rows),
        failed=sum(r["outcome"] in ("failed", "interrupted") for r in rows),
        skipped=sum(r["outcome"] == "skipped" for r in rows),
        elapsed_s=time.monotonic() - started,
    )


def measure_study(journal: Path, study: str, total: int, started: float) -> Progress:
    """A tuning study's search trials in its Optuna journal: finished = complete + pruned (what the
    budget counts), failed ones apart and stopped ones (a stop signal or a dead worker; the tuner
    continues them) apart from those; nothing yet while the journal does not exist."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    elapsed = time.monotonic() - started
    unit = "search trials"
    if not journal.is_file():
        return Progress(total, 0, 0, 0, elapsed, unit)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the study is not created yet
        trials = []
    states = [t.state.name for t in trials]
    finished = states.count("COMPLETE") + states.count("PRUNED")
    stopped = sum(
        t.state.name == "FAIL" and ("interrupted" in t.user_attrs or "reaped" in t.user_attrs)
        for t in trials
    )
    failed = states.count("FAIL") - stopped
    return Progress(total, finished, failed, 0, elapsed, unit, stopped)


def watch(
    roots: Sequence[str],
    total: int,
    since: str,
    log: Path | None = None,
    every: float = 60.0,
    tick: float = 5.0,
    stream=sys.stdout,
    until=lambda: False,
    study: tuple[Path, str] | None = None,
) -> Progress:
    """Report until ``until()`` is true or a stop signal arrives; returns the last state. With
    ``study`` (journal, name) it follows a tuning study's search trials instead of ``roots``."""
    started = time.monotonic()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    tty = stream.isatty()
    last_line, last_finished = -every, -1
    while True:
        if study is not None:
            state = measure_study(study[0], study[1], total, started)
        else:
            state = measure(roots, total, since, started)
        done = bool(stop) or until() or (total and state.finished >= total)
        now_s = time.monotonic() - started
        if done or state.finished != last_finished or now_s - last_line >= every:
            text = state.line()
            stream.write(("\r\033[K" if tty else "") + text + "\n")
            if log is not None:
                with open(log, "a") as f:
                    f.write(f"{now()} {text}\n")
            last_line, last_finished = now_s, state.finished
        elif tty:
            stream.write("\r\033[K" + state.line())
        stream.flush()
        if done:
            return state
        time.sleep(tick)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="*", help="folders the runs go to (e.g. logs/table3/ml-100k)")
    p.add_argument("--study", help="JOURNAL:NAME, a tuning study's search trials instead of runs")
    p.add_argument("--total", type=int, required=True, help="jobs (or the study's budget)")
    p.add_argument("--since", default=now(), help="count outcomes written from this ISO time")
    p.add_argument("--log", type=Path, help="append the plain lines to this file")
    p.add_argument("--every", type=float, default=60.0, help="a plain line at least this often (s)")
    p.add_argument("--tick", type=float, default=5.0, help="seconds between checks")
    a = p.parse_args(argv)
    if bool(a.roots) == bool(a.study):
        p.error("give run folders or --study JOURNAL:NAME, not both and not neither")
    study = None
    if a.study:
        journal, _, name = a.study.rpartition(":")
        study = (Path(journal), name)
    watch(a.roots, a.total, a.since, a.log, a.every, a.tick, study=study)
    return 0


if __name__ == "__main__":
    sys.exit(main())

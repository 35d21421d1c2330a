"""Stopping a run on a signal: SIGTERM (a time limit, ``docker stop``), SIGINT (Ctrl-C), a cluster's
pre-emption signal (configurable: ``stop_signals``).

The first signal is noted; the run stops at the next batch or epoch boundary (a Lightning callback
raises :class:`RunInterrupted`), keeps ``checkpoints/last.ckpt`` of the last complete epoch, and
``train`` exits with ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT). A second signal
interrupts at once. Lightning's own SIGTERM handling (it raises ``SIGTERMException``, an exit with
code 0) is kept and composed with ours; ``train`` turns either into the non-zero exit.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytorch_lightning as pl


class RunInterrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def parse_signal(name: str | int) -> signal.Signals:
    try:
        if isinstance(name, int):
            return signal.Signals(name)
        key = str(name).upper()
        return signal.Signals[key if key.startswith("SIG") else "SIG" + key]
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"stop_signals: unknown signal {name!r}; use names like SIGTERM, SIGINT, SIGUSR1"
        ) from exc


class SignalStop(pl.Callback):
    """Raises :class:`RunInterrupted` at the next boundary once one of the signals arrived."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _check(self, *_args) -> None:
        if self.signum is not None:
            raise RunInterrupted(self.signum)

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _check
    on_train_epoch_end = on_validation_epoch_end = _check

    @contextmanager
    def installed(self, names: Iterable[str | int]) -> Iterator[SignalStop]:
        """Handlers for ``names`` while the block runs; the previous ones are restored after."""
        sigs = [parse_signal(n) for n in names]
        previous = {s: signal.getsignal(s) for s in sigs}

        def handler(signum, _frame):
            if self.signum is not None:  # second signal: stop now
                raise RunInterrupted(signum)
            self.signum = signum

        try:
            for s in sigs:
                signal.signal(s, handler)
        except ValueError:  # not the main thread (e.g. some launchers): no handlers
            previous = {}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

"""Keep third-party noise that says nothing about a run out of its logs: Lightning's advertisement
("Tip: ... litlogger") and deprecation warnings raised inside Lightning's own code, which no user
of this project can act on. Everything else (our warnings, Lightning's real ones) still shows.

Installed for every Hydra job by :class:`QuietThirdParty` (``conf/hydra/default.yaml``), after
Hydra has set up the job's logging and before the task runs.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

from hydra.experimental.callback import Callback

#: Log messages dropped (Lightning's adverts for its cloud products).
NOISE = (re.compile(r"^\W*Tip: .*(litlogger|litmodels|Lightning)"),)
#: Warnings ignored: Lightning's internal use of an API torch deprecated.
WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
_PACKAGES = ("pytorch_lightning", "lightning", "lightning_fabric")


class DropNoise(logging.Filter):
    """A logging filter that drops the records matching :data:`NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in NOISE)


def quiet_third_party() -> None:
    """Filter :data:`WARNINGS` and attach :class:`DropNoise` to every handler that Lightning's
    messages reach (the root logger's and Lightning's own); calling it twice changes nothing."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in _PACKAGES]
    for logger in [logging.getLogger(), *(logging.getLogger(n) for n in names)]:
        for handler in logger.handlers:
            if not any(isinstance(f, DropNoise) for f in handler.filters):
                handler.addFilter(DropNoise())


class QuietThirdParty(Callback):
    """Hydra callback: :func:`quiet_third_party` at the start of every job."""

    def on_job_start(self, config: Any = None, **kwargs: Any) -> None:
        quiet_third_party()

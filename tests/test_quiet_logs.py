"""Third-party noise stays out of run logs (xfvae.training.quiet): Lightning's advertisement and its
internal deprecation warning are dropped, every other message and warning still shows."""

from __future__ import annotations

import io
import logging
import warnings

from omegaconf import OmegaConf

from xfvae.training.quiet import quiet_third_party

TIP = (
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
    "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger"
)


def test_the_advertisement_and_internal_deprecations_are_dropped_and_nothing_else():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    lightning = logging.getLogger("pytorch_lightning")
    lightning.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_third_party()
            quiet_third_party()  # twice: still one filter
            assert sum(type(f).__name__ == "DropNoise" for f in handler.filters) == 1
            child = logging.getLogger("pytorch_lightning.trainer.connectors.logger_connector")
            child.warning(TIP)
            child.warning("GPU available: False, used: False")
            warnings.warn(
                "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
                FutureWarning,
                stacklevel=1,
            )
            warnings.warn("the learning rate is negative", UserWarning, stacklevel=1)
    finally:
        lightning.removeHandler(handler)
    assert "Tip:" not in stream.getvalue() and "GPU available" in stream.getvalue()
    assert [str(w.message) for w in caught] == ["the learning rate is negative"]


def test_every_hydra_job_installs_it():
    cfg = OmegaConf.load("conf/hydra/default.yaml")
    assert cfg.callbacks.quiet_third_party._target_ == "xfvae.training.quiet.QuietThirdParty"

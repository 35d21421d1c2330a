"""Training: the one LightningModule every model trains in (``task.RatingTask``), its callbacks,
and the checks a configuration passes before anything is built."""

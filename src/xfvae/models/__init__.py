"""Models. :mod:`xfvae.models.base` documents the interface every model implements."""

"""Baseline models, one file each; every class implements :mod:`xfvae.models.base`."""

"""Ratings data: registry of data sets, download, parsing, filters, synthetic data, datamodule."""

from xfvae.data.errors import DataFormatError
from xfvae.data.loading import load_csv_split, load_ratings
from xfvae.data.registry import get_spec

__all__ = ["DataFormatError", "get_spec", "load_csv_split", "load_ratings"]

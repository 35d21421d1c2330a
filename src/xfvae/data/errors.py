"""Errors of the data layer, each saying what is wrong and what to do about it."""

from __future__ import annotations

import os


class DataFormatError(ValueError):
    """A ratings file breaks its format; the message reads ``"{path}:{line}: {problem}. {fix}"``.

    ``line`` is 1-based and counts a header line when the file has one, so editors jump to it.
    """

    def __init__(self, path: str | os.PathLike, line: int, problem: str, fix: str):
        self.path, self.line, self.problem, self.fix = str(path), int(line), problem, fix
        super().__init__(f"{self.path}:{self.line}: {problem}. {fix}")


class DownloadError(RuntimeError):
    """A raw file could not be obtained (no network, HTTP error, pip failure)."""


class ChecksumError(RuntimeError):
    """A raw file's hash differs from the pinned (or first recorded) one."""

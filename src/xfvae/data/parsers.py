"""Parsers for the upstream rating files, validating rows with errors that name file and line.

Every parser returns the columns ``user, item, rating, timestamp`` in source-file order; ids keep
their original values (int64 for integer ids, else str), ratings are float64.

Id inference (user-supplied csv): ids are read as text, and a column becomes int64 only when every
id in it is the canonical spelling of an integer (``0``, ``123``, ``-7``; at most 18 digits). So
``0123`` and ``123``, or ``1.0`` and ``1``, stay two distinct ids (the column is kept as text)
instead of being merged into the number 123 or 1. Ids are compared as exact strings, so an id with
spaces around it (``25, 27, 1``) is an error naming its line, not silently a new item ``' 27'``.

Speed: everything goes through the pandas C parser; no Python loop touches rows unless a row is
already known to be bad (then the file is scanned up to it only to quote it in the message). The
MovieLens ``::`` files are read with ``sep=":"`` keeping fields 0, 2, 4 and 6 (0.9 s for 5M rows
against 2.0 s for replacing ``::`` first), and the file's counts of ``:`` and ``::`` must be 6 and
3 per row, so a stray ``:`` cannot shift fields unnoticed.

Duplicated (user, item) pairs follow the ``duplicates`` policy: ``error`` (default: the message
names both lines), ``first`` / ``last`` (keep that occurrence) or ``mean`` (average rating at the
first occurrence's position, with its timestamp). Every drop or merge is logged with counts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from xfvae.data.errors import DataFormatError
from xfvae.data.registry import RATING_COLUMNS

log = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("error", "first", "last", "mean")
_FIX_ROW = "Fix or delete that line (or re-download the file if it came from upstream)"


@dataclass(frozen=True)
class Format:
    """The dialect of a ratings file; the order of its fields comes from the data set's spec."""

    sep: str  # "\t", "," or "::"
    header: str | None = None  # exact header line the file must start with; None: no header
    named_header: bool = False  # the header names the columns (user-supplied csv)
    ids: str = "int"  # "int": integer ids; "str": string ids; "infer": see infer_id_type
    quoted: bool = False  # honour "..." quoting (only for user-supplied csv)


FORMATS: dict[str, Format] = {
    "ml-100k-data": Format("\t"),
    "recbole-inter": Format(
        "\t", header="user_id:token\titem_id:token\trating:float\ttimestamp:float"
    ),
    "ml-dat": Format("::"),
    "ml-20m-csv": Format(",", header="userId,movieId,rating,timestamp"),
    "amazon-csv": Format(",", ids="str"),
    "csv": Format(",", named_header=True, ids="infer", quoted=True),
}


@dataclass(frozen=True)
class Source:
    """A ratings file on disk, or a member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        if self.member is None:
            with open(self.path, "rb") as fh:
                yield fh
            return
        with zipfile.ZipFile(self.path) as zf:
            try:
                fh = zf.open(self.member)
            except KeyError:
                raise FileNotFoundError(
                    f"{self.path}: the archive has no member {self.member!r}; it holds "
                    f"{', '.join(zf.namelist()[:10])}. Re-download it or set data.options.path "
                    "to the ratings file"
                ) from None
            with fh:
                yield fh

    def lines(self) -> Iterator[str]:
        """Decoded lines without their line ends (error paths only: this is a Python loop)."""
        with self.open() as fh:
            for raw in io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline=""):
                yield raw.rstrip("\r\n")


def parse_ratings(
    path: str | os.PathLike,
    fmt: str,
    *,
    member: str | None = None,
    columns: tuple[str, ...] = RATING_COLUMNS,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    duplicates: str = "error",
    line_index: bool = False,
    key: str | None = None,
) -> pd.DataFrame:
    """Read and validate a ratings file of format ``fmt`` (a key of :data:`FORMATS`).

    ``columns`` is the order of the fields in files without a named header. With
    ``line_index=True`` the index holds each row's 1-based line in the file (for cross-file
    messages); otherwise it is 0..n-1. ``key`` is the setting that chose the file (e.g.
    ``data.train``, ``data.options.path``), named in the fix of an empty file; None: a file the
    data layer downloaded.
    """
    if fmt not in FORMATS:
        raise KeyError(f"unknown ratings format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(
            f"duplicates={duplicates!r} is not a policy; use one of {', '.join(DUPLICATE_POLICIES)}"
        )
    if float(rating_min) > float(rating_max):
        raise ValueError(
            f"rating_min={rating_min:g} is above rating_max={rating_max:g}: the scale's minimum "
            "must not exceed its maximum (data.options.rating_min / data.options.rating_max)"
        )
    f, src = FORMATS[fmt], Source(Path(path), member)
    check_ratings_file(src.path, key)
    df, fields = _read(src, f, tuple(columns), key)
    df = _validate(df, src, f, fields, float(rating_min), float(rating_max))
    df = resolve_duplicates(df, duplicates, src.label)
    log.info("%s: parsed %d ratings", src.label, len(df))
    return df if line_index else df.reset_index(drop=True)


def check_ratings_file(path: Path, key: str | None = None) -> None:
    """Raise a clear error unless ``path`` is an existing regular file (``key``: its setting)."""
    where = f" ({key}=PATH)" if key else ""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path}: is a directory, not a ratings file; pass the file itself{where}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ratings file; check the path{where}")


# -- reading ------------------------------------------------------------------------------------
def _read(
    src: Source, f: Format, columns: tuple[str, ...], key: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The raw table (columns named, index = 1-based line of each row) and the file's fields."""
    has_header = f.header is not None or f.named_header
    kwargs = dict(
        header=0 if has_header else None,
        index_col=False,
        skip_blank_lines=False,  # keeps row i on line i+1(+header): blank lines are reported
        quoting=csv.QUOTE_MINIMAL if f.quoted else csv.QUOTE_NONE,
    )
    if f.ids in ("str", "infer"):  # ids as read: "0123" must not become the number 123
        kwargs["dtype"] = _id_dtypes(src, f, columns)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # silent truncation -> error
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed chunks handled below
            with src.open() as fh:
                if f.sep == "::":
                    data = fh.read()
                    df = pd.read_csv(io.BytesIO(data), sep=":", usecols=[0, 2, 4, 6], **kwargs)
                else:
                    df = pd.read_csv(fh, sep=f.sep, **kwargs)
    except pd.errors.EmptyDataError:
        raise _empty(src, f, key) from None
    except UnicodeDecodeError:
        raise _undecodable(src) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
        raise _bad_row(src, f, _expected_fields(src, f, columns), exc) from None

    header_lines = 1 if has_header else 0
    if f.header is not None:
        found = f.sep.join(str(c) for c in df.columns)
        if found != f.header:
            raise DataFormatError(
                src.label,
                1,
                f"the header is {found!r}, expected {f.header!r}",
                "Point the loader at the unmodified upstream file",
            )
        df.columns = fields = list(columns)
    elif f.named_header:
        fields = [str(c).strip() for c in df.columns]
        df = _select_named_columns(df, src)
    else:
        if df.shape[1] != len(columns):
            raise _bad_row(src, f, len(columns), None)
        df.columns = fields = list(columns)
    df = _drop_trailing_empty_lines(df, src)
    if len(df) == 0:
        raise _empty(src, f, key)
    if f.sep == "::" and (data.count(b":") != 6 * len(df) or data.count(b"::") != 3 * len(df)):
        raise _bad_row(src, f, len(columns), None)
    df.index = pd.RangeIndex(1 + header_lines, len(df) + 1 + header_lines)
    return df, fields


def _drop_trailing_empty_lines(df: pd.DataFrame, src: Source) -> pd.DataFrame:
    """Empty lines at the very end are harmless (logged); elsewhere they are errors."""
    filled = np.flatnonzero(~df.isna().all(axis=1).to_numpy())
    n_keep = int(filled[-1]) + 1 if filled.size else 0
    if n_keep < len(df):
        log.info("%s: ignored %d empty line(s) at the end", src.label, len(df) - n_keep)
        df = df.iloc[:n_keep]
    return df


def _select_named_columns(df: pd.DataFrame, src: Source) -> pd.DataFrame:
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("user", "item", "rating") if c not in df.columns]
    if missing:
        first = _raw_line(src, 1)  # as written: pandas renames repeated names ('26' -> '26.1')
        numeric = pd.to_numeric(pd.Series(_fields(first, FORMATS["csv"])), errors="coerce")
        problem = (
            f"the file has no header line: its first line {first!r} is data"
            if numeric.notna().all()
            else f"the header {first!r} lacks the column(s) {', '.join(missing)}"
        )
        raise DataFormatError(
            src.label,
            1,
            problem,
            "Start the file with a header line 'user,item,rating' (optionally ',timestamp')",
        )
    extra = [c for c in df.columns if c not in RATING_COLUMNS]
    if extra:
        log.info("%s: ignoring column(s) %s", src.label, ", ".join(extra))
    return df[[c for c in RATING_COLUMNS if c in df.columns]]


def _id_dtypes(src: Source, f: Format, columns: tuple[str, ...]) -> dict[int, type]:
    """``read_csv`` dtype by position: the user and item fields read as text."""
    if not f.named_header:
        return {columns.index("user"): str, columns.index("item"): str}
    names = [c.strip() for c in _fields(next(src.lines(), ""), f)]
    return {k: str for k, c in enumerate(names) if c in ("user", "item")}


def _expected_fields(src: Source, f: Format, columns: tuple[str, ...]) -> int:
    if not f.named_header:
        return len(columns)
    first = next(src.lines(), "")
    return len(_fields(first, f))


def _fields(line: str, f: Format) -> list[str]:
    if f.quoted:
        return next(csv.reader([line]), [])
    return line.split(f.sep)


def _field_count_ok(line: str, f: Format, n: int) -> bool:
    parts = _fields(line, f)
    return len(parts) == n and not (f.sep == "::" and any(":" in p for p in parts))


def _bad_row(src: Source, f: Format, n: int, exc: Exception | None) -> DataFormatError:
    """The first line whose number of fields is not ``n`` (scanned only on this error path)."""
    skip = 1 if (f.header is not None or f.named_header) else 0
    sep_name = {"\t": "tab", ",": "comma", "::": "'::'"}[f.sep]
    for lineno, line in enumerate(src.lines(), start=1):
        if lineno > skip and not _field_count_ok(line, f, n):
            n_found = len(_fields(line, f))
            found = f"{n_found} field(s)" if n_found != n else "a stray ':' inside a field"
            found = "an empty line" if not line.strip() else found
            return DataFormatError(
                src.label,
                lineno,
                f"expected {n} {sep_name}-separated fields, found {found}: {line[:120]!r}",
                _FIX_ROW,
            )
    match = re.search(r"line (\d+)", str(exc or ""))
    return DataFormatError(
        src.label, int(match.group(1)) if match else 1, f"unreadable row ({exc})", _FIX_ROW
    )


def _empty(src: Source, f: Format, key: str | None) -> DataFormatError:
    """The message for a file without ratings; the fix names the setting that chose the file."""
    if f.named_header:  # a user-supplied csv (data=csv data.train=... data.val=... data.test=...)
        fix = (
            f"Point {key or 'the loader'} at a CSV file with the header line 'user,item,rating' "
            "and at least one rating below it"
        )
    elif key is not None:
        fix = f"Point {key} at a complete ratings file"
    else:  # downloaded by the data layer
        fix = (
            "Delete it so that it is downloaded again, or set data.options.path to a complete "
            "ratings file"
        )
    return DataFormatError(src.label, 1, "the file holds no ratings", fix)


def _undecodable(src: Source) -> DataFormatError:
    with src.open() as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return DataFormatError(
                    src.label, lineno, f"bytes that are not UTF-8 text ({exc.reason})", _FIX_ROW
                )
    return DataFormatError(src.label, 1, "the file is not UTF-8 text", _FIX_ROW)


def _raw_line(src: Source, lineno: int) -> str:
    for i, line in enumerate(src.lines(), start=1):
        if i == lineno:
            return line
    return ""


# -- validation ---------------------------------------------------------------------------------
def _validate(
    df: pd.DataFrame, src: Source, f: Format, fields: list[str], lo: float, hi: float
) -> pd.DataFrame:
    missing = df.isna().any(axis=1).to_numpy()
    if missing.any():
        raise _missing_value(df, src, f, fields, int(np.argmax(missing)))
    out = {}
    for col in ("user", "item"):
        out[col] = _ids(df[col], src, col, f.ids)
    out["rating"] = _numbers(df["rating"], src, "rating", integer=False)
    bad = ((out["rating"] < lo) | (out["rating"] > hi)).to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataFormatError(
            src.label,
            df.index[pos],
            f"rating {out['rating'].iat[pos]:g} is outside the scale [{lo:g}, {hi:g}]",
            "Fix the line, or set rating_min/rating_max of the data set to its real scale",
        )
    if "timestamp" in df.columns:
        ts = df["timestamp"]
        out["timestamp"] = ts if f.named_header else _numbers(ts, src, "timestamp", integer=True)
    else:
        log.info("%s: no timestamp column; using the row order as timestamp", src.label)
        out["timestamp"] = pd.Series(np.arange(len(df), dtype=np.int64), index=df.index)
    return pd.DataFrame(out, index=df.index)


def _missing_value(
    df: pd.DataFrame, src: Source, f: Format, fields: list[str], pos: int
) -> DataFormatError:
    lineno = int(df.index[pos])
    line = _raw_line(src, lineno)
    if not _field_count_ok(line, f, len(fields)):
        return _bad_row(src, f, len(fields), None)
    col = df.columns[int(np.argmax(df.iloc[pos].isna().to_numpy()))]
    value = _fields(line, f)[fields.index(col)]
    problem = (
        f"rating {value!r} is not a number"
        if col == "rating"
        else f"the {col} field is empty or NaN ({value!r})"
    )
    return DataFormatError(src.label, lineno, problem, _FIX_ROW)


def _ids(s: pd.Series, src: Source, col: str, kind: str) -> pd.Series:
    if kind == "str":
        return s.astype(str)
    if kind == "infer":
        _check_no_spaces(s.astype(str), src, col)
        return infer_id_type(s, f"{src.label}: {col} ids")
    if ptypes.is_integer_dtype(s.dtype):
        return s.astype(np.int64)
    return _numbers(s, src, f"{col} id", integer=True)


def _check_no_spaces(ids: pd.Series, src: Source, col: str) -> None:
    """Refuse ids with spaces around them (``25, 27, 1``): compared as exact text, ``' 27'`` would
    silently be another item than ``27``."""
    padded = (ids.str.strip() != ids).to_numpy()
    if padded.any():
        pos = int(np.argmax(padded))
        raise DataFormatError(
            src.label,
            ids.index[pos],
            f"{col} id {ids.iat[pos]!r} has spaces around it",
            f"Remove the spaces around the fields (ids are compared as exact text: {ids.iat[pos]!r} "
            f"and {ids.iat[pos].strip()!r} would be two different {col}s)",
        )


#: The canonical spelling of an int64 id: no sign but "-", no leading zeros, at most 18 digits.
_CANONICAL_INT = r"0|-?[1-9][0-9]{0,17}"


def infer_id_type(ids: pd.Series, label: str = "ids") -> pd.Series:
    """``ids`` as int64 when every one is the canonical spelling of an integer, else as str.

    Never merges two distinct strings: ``"0123"`` and ``"123"`` (or ``"1.0"`` and ``"1"``) keep
    the column as text. Integer columns pass through as int64. The check runs on the distinct
    ids only, so it costs one hash pass over the column.
    """
    if ptypes.is_integer_dtype(ids.dtype) and not ptypes.is_bool_dtype(ids.dtype):
        return ids.astype(np.int64)
    text = ids.astype(str)
    codes, uniques = pd.factorize(text)
    uniques = pd.Series(uniques, dtype=str)
    canonical = uniques.str.fullmatch(_CANONICAL_INT).to_numpy(dtype=bool)
    if canonical.all() and len(uniques):
        values = uniques.astype(np.int64).to_numpy()
        return pd.Series(values[codes], index=ids.index, dtype=np.int64)
    if canonical.any():
        example = uniques.iat[int(np.argmin(canonical))]
        log.info(
            "%s are kept as text: %r is not the plain spelling of an integer, and reading "
            "numbers could merge distinct ids (e.g. '0123' and '123')",
            label,
            example,
        )
    return text


def _numbers(s: pd.Series, src: Source, what: str, integer: bool) -> pd.Series:
    """``s`` as int64/float64, or an error naming the first entry that is not such a number."""
    if ptypes.is_integer_dtype(s.dtype):
        return s.astype(np.int64 if integer else np.float64)
    num = s if ptypes.is_float_dtype(s.dtype) else pd.to_numeric(s, errors="coerce")
    bad = num.isna().to_numpy()
    if integer:
        bad = bad | (num != np.floor(num)).to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        kind = "an integer" if integer else "a number"
        raise DataFormatError(
            src.label, s.index[pos], f"{what} {str(s.iat[pos])!r} is not {kind}", _FIX_ROW
        )
    return num.astype(np.int64 if integer else np.float64)


# -- duplicates ---------------------------------------------------------------------------------
def pair_keys(df: pd.DataFrame) -> np.ndarray:
    """One int64 per (user, item) pair, equal exactly for equal pairs (fast duplicate checks)."""
    u, i = df["user"], df["item"]
    if ptypes.is_integer_dtype(u.dtype) and ptypes.is_integer_dtype(i.dtype) and len(df):
        u0, i0 = u.to_numpy(np.int64), i.to_numpy(np.int64)
        u_lo, i_lo = int(u0.min()), int(i0.min())
        span = int(i0.max()) - i_lo + 1
        if (int(u0.max()) - u_lo + 1) * span < 2**62:
            return (u0 - u_lo) * span + (i0 - i_lo)
    u_codes, _ = pd.factorize(u)
    i_codes, i_uniques = pd.factorize(i)
    return u_codes.astype(np.int64) * len(i_uniques) + i_codes


def resolve_duplicates(df: pd.DataFrame, policy: str, label: str) -> pd.DataFrame:
    """Apply the duplicates policy to repeated (user, item) pairs (index = line numbers)."""
    key = pd.Series(pair_keys(df))
    dup = key.duplicated(keep="first").to_numpy()
    if not dup.any():
        return df
    if policy == "error":
        pos = int(np.argmax(dup))
        first = int(np.argmax(key.to_numpy() == key.iat[pos]))
        raise DataFormatError(
            label,
            df.index[pos],
            f"user {str(df['user'].iat[pos])!r} rates item {str(df['item'].iat[pos])!r} again "
            f"(first on line {df.index[first]})",
            "Remove one of the two lines, or set the data option duplicates to first, last or mean",
        )
    n_rows, n_pairs = int(dup.sum()), int(np.unique(key.to_numpy()[dup]).size)
    if policy == "mean":
        mean = df["rating"].groupby(key.to_numpy(), sort=False).transform("mean")
        df = df.assign(rating=mean)[~dup]
    else:
        df = df[~key.duplicated(keep=policy).to_numpy()]
    log.warning(
        "%s: duplicates=%s merged %d repeated rating(s) of %d (user, item) pair(s) into one each",
        label,
        policy,
        n_rows,
        n_pairs,
    )
    return df

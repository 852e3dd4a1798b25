"""Fetch and unpack the OATH release, verified and safely.

``download_oath(dest)`` downloads ``oath_v1.1_20181026.tgz`` (about 500 MB) from the
address the paper gives, resuming a ``.part`` file with HTTP Range requests and
retrying with exponential backoff, checks it against a SHA256 (given, or read from
the checksum list the release page links next to the tarball), and unpacks it into
``dest`` through a temporary folder beside it, refusing any archive member that
would land outside. Nothing is downloaded when ``dest`` already holds the release.

Example:
    >>> root = download_oath("data/oath", sha256="<64 hex digits from the OATH page>")
    >>> ds = load_oath(root)
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

from aurora_pipeline.errors import BadInputError

__all__ = ["OATH_URL", "OATH_PAGE", "CHECKSUM_NAME", "download_oath", "extract_release"]

log = logging.getLogger(__name__)

OATH_URL = "http://tid.uio.no/plasma/oath/oath_v1.1_20181026.tgz"
OATH_PAGE = "http://tid.uio.no/plasma/oath/"
# The release page links a checksum list ("SHA256SUM here") next to the tarball. Its
# file name could not be checked (the server refuses connections from here): this is
# a guess from the link text. Pass sha256_url= or sha256= when it is wrong.
CHECKSUM_NAME = "SHA256SUM"
_LABEL_FILES = ("classifications/classifications.csv", "classification/classification.csv")
_CHUNK = 1 << 20


def download_oath(
    dest_dir: str | os.PathLike,
    url: str = OATH_URL,
    sha256: str | None = None,
    *,
    sha256_url: str | None = None,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 2.0,
    keep_archive: bool = False,
) -> Path:
    """Download, verify and unpack the OATH release into ``dest_dir``.

    Args:
        dest_dir: the release folder to create (its parent must be writable). If it
            already holds a label file, it is returned as is.
        url: the tarball's address.
        sha256: the tarball's SHA256 as 64 hex digits; when None it is read from
            ``sha256_url``.
        sha256_url: a checksum list in ``sha256sum`` format (or a single digest);
            None means ``<folder of url>/SHA256SUM`` (an unverified guess of the
            release's file name).
        timeout: seconds to wait for the server on each request.
        retries: attempts per request before giving up.
        backoff: seconds before the first retry, doubled after each failure.
        keep_archive: keep the verified tarball beside ``dest_dir`` after unpacking.

    Returns:
        ``dest_dir`` as a Path.

    Raises:
        BadInputError: no checksum could be obtained, the download fails or does
            not match the checksum (the bad file is deleted), the server cannot be
            reached (the message says how to place the files by hand), the archive
            has a member that would land outside ``dest_dir``, or ``dest_dir`` holds
            something other than the release.
    """
    dest = Path(dest_dir)
    if any((dest / name).is_file() for name in _LABEL_FILES):
        log.info("%s already holds the OATH release; not downloading", dest)
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BadInputError(
            dest, "exists but holds no OATH label file.", "remove it or pick another folder for the release."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha256_url = sha256_url or urljoin(url, CHECKSUM_NAME)
    expected = _expected_sha256(url, sha256, sha256_url, dest, timeout, retries, backoff)
    archive = dest.parent / PurePosixPath(urlsplit(url).path).name
    if not (archive.is_file() and _sha256(archive) == expected):
        _fetch(url, archive, expected, dest, timeout=timeout, retries=retries, backoff=backoff)
    extract_release(archive, dest)
    if not keep_archive:
        archive.unlink()
    return dest


def extract_release(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack a release tarball into ``dest`` (which must not exist or be empty).

    Every member is checked first: absolute names, ``..``, links pointing outside
    the target and device files are refused. Extraction goes to a temporary folder
    beside ``dest`` (with tarfile's "data" filter as a second guard), then the folder
    holding ``classifications/`` is renamed to ``dest`` in one step.

    Raises:
        BadInputError: unreadable archive, a member that would escape (named in the
            message), no label file inside, or ``dest`` not empty.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BadInputError(dest, "already exists and is not empty.", "remove it or unpack somewhere else.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-unpacking-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(archive, member, tmp)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as error:
            raise BadInputError(archive, f"cannot unpack ({error}).", "delete it and download again.") from error
        release = _find_release_root(tmp)
        if release is None:
            raise BadInputError(
                archive, "holds no classifications/classifications.csv.", f"check that {archive} is the OATH release."
            )
        if dest.exists():
            dest.rmdir()  # empty, checked above; rename cannot replace a folder on every OS
        os.replace(release, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %s into %s", archive, dest)
    return dest


# ---------------------------------------------------------------- checks


def _check_member(archive: Path, member: tarfile.TarInfo, target: Path) -> None:
    def refuse(problem: str) -> None:
        raise BadInputError(
            archive,
            f"archive member '{member.name}' {problem}; refusing to unpack.",
            "this is not the genuine OATH release: delete it and download again from " + OATH_PAGE,
        )

    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        refuse("has an absolute path")
    if ".." in re.split(r"[/\\]", name):
        refuse("climbs out with '..'")
    if not _inside(target, target / name):
        refuse("would land outside the target folder")
    if member.isdev() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        refuse("is a device file or other special file")
    if member.issym():
        link = member.linkname
        if os.path.isabs(link) or not _inside(target, (target / name).parent / link):
            refuse(f"is a symlink to '{link}', outside the target folder")
    if member.islnk() and (os.path.isabs(member.linkname) or not _inside(target, target / member.linkname)):
        refuse(f"is a hard link to '{member.linkname}', outside the target folder")


def _inside(root: Path, path: Path) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def _find_release_root(tmp: Path) -> Path | None:
    """The unpacked folder holding the label file: ``tmp`` itself or one folder down."""
    candidates = [tmp] + sorted(p for p in tmp.iterdir() if p.is_dir())
    for folder in candidates:
        if any((folder / name).is_file() for name in _LABEL_FILES):
            return folder
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- network


def _offline_error(url: str, dest: Path, reason: object) -> BadInputError:
    return BadInputError(
        url,
        f"cannot reach the server ({reason}).",
        f"on a machine with internet, fetch {url} (the page {OATH_PAGE} gives its SHA256), then unpack it "
        f"so that {dest}/classifications/classifications.csv, {dest}/classifications/train_test_split.csv "
        f"and {dest}/images/cropped_scaled/00001.png ... 05824.png exist; or copy the tarball to "
        f"{dest.parent / PurePosixPath(urlsplit(url).path).name} and run again with --sha256.",
    )


def _is_unreachable(error: BaseException) -> bool:
    """True for DNS failures and refused or unroutable connections (no HTTP reply at all)."""
    if not isinstance(error, urllib.error.URLError) or isinstance(error, urllib.error.HTTPError):
        return False
    reason = error.reason
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError)) or getattr(reason, "errno", None) in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
    )


def _expected_sha256(
    url: str, sha256: str | None, sha256_url: str, dest: Path, timeout: float, retries: int, backoff: float
) -> str:
    if sha256 is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
            raise BadInputError("sha256", f"{sha256!r} is not 64 hex digits.", "copy the digest from " + OATH_PAGE)
        return sha256.strip().lower()
    name = PurePosixPath(urlsplit(url).path).name
    fix = f"pass --sha256 <64 hex digits> (the digest published on {OATH_PAGE}), or --sha256-url <checksum list>."
    try:
        text = _with_retries(lambda: _get_text(sha256_url, timeout), retries, backoff, sha256_url)
    except urllib.error.HTTPError as error:
        problem = f"no checksum list there (HTTP {error.code}); refusing an unverified download."
        raise BadInputError(sha256_url, problem, fix) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        if _is_unreachable(error):
            raise _offline_error(url, dest, getattr(error, "reason", error)) from error
        raise BadInputError(sha256_url, f"cannot read the checksum list ({error}).", fix) from error
    digest = _parse_checksums(text, name)
    if digest is None:
        raise BadInputError(sha256_url, f"lists no SHA256 for {name}; refusing an unverified download.", fix)
    return digest


def _parse_checksums(text: str, name: str) -> str | None:
    """The digest for ``name`` in ``sha256sum`` output, or the single digest of a one-line file."""
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for fields in lines:
        if len(fields) >= 2 and re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
            if PurePosixPath(fields[-1].lstrip("*")).name == name:
                return fields[0].lower()
    if len(lines) == 1 and len(lines[0]) == 1 and re.fullmatch(r"[0-9a-fA-F]{64}", lines[0][0]):
        return lines[0][0].lower()
    return None


def _get_text(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read(1 << 20).decode("utf-8", errors="replace")


def _with_retries(call, retries: int, backoff: float, what: str):
    for attempt in range(retries):
        try:
            return call()
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == retries - 1:
                raise
            log.warning("%s: HTTP %s, retrying in %.1f s", what, error.code, backoff * 2**attempt)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            if attempt == retries - 1 or (_is_unreachable(error) and attempt >= 1):
                raise
            log.warning("%s: %s, retrying in %.1f s", what, error, backoff * 2**attempt)
        time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")  # the loop always returns or raises


def _fetch(
    url: str, archive: Path, expected: str, dest: Path, *, timeout: float, retries: int, backoff: float
) -> None:
    """Download ``url`` to ``archive`` via ``archive.part``, resuming, then verify."""
    part = archive.with_name(archive.name + ".part")
    try:
        _with_retries(lambda: _fetch_once(url, part, timeout), retries, backoff, url)
    except urllib.error.HTTPError as error:
        fix = f"check the address; see {OATH_PAGE}."
        raise BadInputError(url, f"the server answered HTTP {error.code}.", fix) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        if _is_unreachable(error):
            raise _offline_error(url, dest, getattr(error, "reason", error)) from error
        raise BadInputError(
            url, f"the download failed after {retries} attempts ({error}).", f"run again: {part} is resumed."
        ) from error
    actual = _sha256(part)
    if actual != expected:
        part.unlink()
        raise BadInputError(
            url,
            f"the download's SHA256 is {actual}, expected {expected}; the file was deleted.",
            "run again; if it persists, check the expected digest on " + OATH_PAGE,
        )
    os.replace(part, archive)


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """One request: append to ``part`` from its current size (restart if Range is ignored)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the part is complete (or wrong; the checksum decides)
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored Range: start over
            log.info("%s ignores Range requests; downloading from the start", url)
            have = 0
        elif have:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if start is None or int(start.group(1)) != have:
                raise urllib.error.URLError(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        length = response.headers.get("Content-Length")
        received = 0
        with open(part, "ab" if have else "wb") as out:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                received += len(block)
        if length is not None and received < int(length):
            raise ConnectionResetError(f"connection closed after {received} of {length} bytes")

"""Finding and fetching THEMIS ASI CDF files in an archive tree, through fsspec.

The archive is laid out like the official one::

    <root>/thg/l1/asi/<site>/<YYYY>/<MM>/thg_l1_asf_<site>_<YYYYMMDDHH>_v01.cdf

``root`` is a local directory, an ``http(s)://`` mirror root or ``s3://bucket/prefix``.
Only the month folders that the asked hours fall in are listed, so a night's run
never lists the whole archive. S3 credentials come from the standard AWS
environment, profile or instance role (s3fs/botocore), never from this code.

Example:
    >>> files = list_archive("/data/themis", sites=["gako"], start="2011-01-06T04", end="2011-01-06T07")
    >>> path = fetch(files[0], cache_dir="/tmp/cache")
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np

from aurora_pipeline.atomic import atomic_file
from aurora_pipeline.errors import BadInputError
from aurora_pipeline.hours import time_range, to_hour  # noqa: F401 - the one hour parser, re-exported for the listing
from aurora_pipeline.source.sites import check_site_codes

ARCHIVE_NAME = re.compile(r"^thg_l1_asf_(?P<site>[a-z0-9]{4})_(?P<hour>\d{10})_v(?P<version>\d{2})\.cdf$")


@dataclass(frozen=True)
class ArchiveFile:
    """One site-hour CDF in the archive."""

    url: str           # full fsspec URL or local path
    site: str          # lower-case four-letter code from the file name
    hour_code: str     # "YYYYMMDDHH" (UT) from the file name
    version: int       # the _vNN of the file name
    size: int | None   # bytes, from the listing

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def hour(self) -> np.datetime64:
        """The file's hour, ``datetime64[h]`` (as ``HourRef.hour``)."""
        return to_hour(self.hour_code)


def relative_path(site: str, hour: np.datetime64 | str, version: int = 1) -> str:
    """The official tree's path of a site-hour file, relative to the archive root."""
    h = np.datetime64(hour, "h").astype(object)
    return f"thg/l1/asi/{site}/{h:%Y}/{h:%m}/thg_l1_asf_{site}_{h:%Y%m%d%H}_v{version:02d}.cdf"


def filesystem(root: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``root`` and the root's path within it (no trailing slash)."""
    fs, path = fsspec.core.url_to_fs(str(root), **(storage_options or {}))
    return fs, path.rstrip("/")


def _months(start: np.datetime64, end: np.datetime64) -> list[np.datetime64]:
    first, last = start.astype("datetime64[M]"), (end - np.timedelta64(1, "h")).astype("datetime64[M]")
    return list(np.arange(first, last + np.timedelta64(1, "M"), dtype="datetime64[M]"))


def _ls(fs, path: str) -> list[dict]:
    try:
        return with_retries(lambda: fs.ls(path, detail=True), what=f"listing {path}")
    except FileNotFoundError:
        return []


def _unprotocol(fs, url: str) -> str:
    return url if "://" in url or isinstance(fs, fsspec.implementations.local.LocalFileSystem) else fs.unstrip_protocol(url)


def list_archive(
    root: str,
    sites: list[str] | None = None,
    start: str | np.datetime64 | None = None,
    end: str | np.datetime64 | None = None,
    storage_options: dict | None = None,
) -> list[ArchiveFile]:
    """List the CDF files of ``sites`` whose hour is in ``[start, end)``.

    With no ``start`` the whole history of each site is listed (the reconcile mode);
    with no ``sites`` every site folder is. When several versions of a site-hour
    exist, the highest ``_vNN`` wins. Files whose names do not follow the official
    pattern are ignored. Returns files sorted by site then hour; ``sites_without_files``
    says which of the asked sites had none.

    Raises:
        BadInputError: an asked site code is not a THEMIS imager's, ``root`` holds no
            ``thg/l1/asi/`` tree, or ``end`` is not after ``start``.
    """
    if sites is not None:
        sites = check_site_codes(sites)
    fs, base = filesystem(root, storage_options)
    asi = f"{base}/thg/l1/asi"
    if not with_retries(lambda: fs.exists(asi), what=f"checking {root}"):
        raise BadInputError(
            str(root), "holds no THEMIS ASI tree (no thg/l1/asi/ folder)",
            "point --archive at the root above thg/, laid out as "
            "thg/l1/asi/<site>/<YYYY>/<MM>/thg_l1_asf_<site>_<YYYYMMDDHH>_v01.cdf",
        )
    t0, t1 = time_range(start, end)  # refuses an empty or reversed range
    # the hours that overlap [start, end): from the start's hour to the hour that holds the end's last instant
    t0 = None if t0 is None else to_hour(t0)
    t1 = None if t1 is None else to_hour(t1 - np.timedelta64(1, "ms")) + np.timedelta64(1, "h")
    if sites is None:
        sites = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in _ls(fs, asi) if e["type"] == "directory")
    found: dict[tuple[str, str], ArchiveFile] = {}
    for site in sites:
        if t0 is not None:
            last = t1 if t1 is not None else _now_hour() + np.timedelta64(1, "h")
            folders = [f"{asi}/{site}/{m.astype(object):%Y}/{m.astype(object):%m}" for m in _months(t0, last)]
        else:
            folders = [m["name"] for y in _ls(fs, f"{asi}/{site}") if y["type"] == "directory" for m in _ls(fs, y["name"]) if m["type"] == "directory"]
        for folder in folders:
            for entry in _ls(fs, folder):
                name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
                match = ARCHIVE_NAME.match(name)
                if not match or match["site"] != site:
                    continue
                f = ArchiveFile(
                    url=_unprotocol(fs, entry["name"]),
                    site=site,
                    hour_code=match["hour"],
                    version=int(match["version"]),
                    size=entry.get("size"),
                )
                if (t0 is not None and f.hour < t0) or (t1 is not None and f.hour >= t1):
                    continue
                key = (site, f.hour_code)
                if key not in found or found[key].version < f.version:
                    found[key] = f
    return sorted(found.values(), key=lambda f: (f.site, f.hour_code))


def sites_without_files(sites: list[str] | None, files: list[ArchiveFile]) -> list[str]:
    """The asked ``sites`` (None: none asked) for which ``files`` holds nothing, in asked order."""
    found = {f.site for f in files}
    return [s for s in dict.fromkeys(str(x).strip().lower() for x in (sites or [])) if s not in found]


def _now_hour() -> np.datetime64:
    return np.datetime64("now", "h")


TRANSIENT = (OSError, TimeoutError, ConnectionError)


def with_retries(call, *, what: str, attempts: int = 4, backoff_s: float = 0.5):
    """Run ``call()`` and retry transient I/O errors with exponential backoff.

    ``FileNotFoundError`` and ``PermissionError`` are not transient and are raised at once.
    """
    for attempt in range(attempts):
        try:
            return call()
        except (FileNotFoundError, PermissionError):
            raise
        except TRANSIENT as err:
            if attempt == attempts - 1:
                raise OSError(f"{what}: failed {attempts} times, last error: {err}") from err
            time.sleep(backoff_s * 2**attempt)
        except Exception as err:  # aiohttp / botocore errors that are not OSErrors
            if attempt == attempts - 1 or not _looks_transient(err):
                raise
            time.sleep(backoff_s * 2**attempt)


def _looks_transient(err: Exception) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return any(word in text for word in ("timeout", "503", "502", "500", "connection", "throttl", "slowdown"))


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def fetch(file: ArchiveFile, cache_dir: str | Path, storage_options: dict | None = None) -> Path:
    """Copy a remote archive file to ``cache_dir`` and return its local path.

    Local files are returned as they are. A download is written to a temporary name
    beside its target and renamed only when complete, so a killed download never
    leaves a truncated file under the final name. Transient errors are retried with
    backoff.
    """
    if is_local(file.url):
        return Path(file.url.removeprefix("file://"))
    target = Path(cache_dir) / file.site / file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    fs, path = fsspec.core.url_to_fs(file.url, **(storage_options or {}))

    def download() -> None:
        with atomic_file(target) as out, fs.open(path, "rb") as src:
            while chunk := src.read(8 << 20):
                out.write(chunk)

    try:
        with_retries(download, what=f"downloading {file.url}")
    except FileNotFoundError:
        raise BadInputError(file.url, "disappeared from the archive between listing and reading", "rerun the ingest") from None
    return target


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a local file (``hashlib.file_digest``: read into one small buffer that stays in
    cache, 0.074 -> 0.065 s for a 114 MB hour file against fresh 8 MiB blocks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()

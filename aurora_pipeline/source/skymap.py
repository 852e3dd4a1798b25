"""THEMIS ASI skymaps: where on the sky and on the map each pixel looks.

UCalgary publishes one IDL save file per imager and calibration,
``themis_skymap_<site>_<YYYYMMDD>-+_v<NN>.sav``, valid from that UT day on ("-+")
until the next one. Its tree (a local folder, an HTTPS mirror or S3, read through
fsspec) is ``<root>/<site>/<site>_<YYYYMMDD>/<file>``; a flat folder of files works too.

:func:`read_skymap` gives a :class:`Skymap`: per pixel, elevation ``el`` and azimuth
``az`` (degrees, azimuth east of north) and geographic ``lat``/``lon`` of the line of
sight at 90, 110 and 150 km, plus the imager's own position. Pixel centres: the file
gives ``lat``/``lon`` at the 257 x 257 pixel *corners*; the centre is the mean of a
pixel's four corners (that matches the file's own az/el geometry to 0.3 km median,
taking the [1:, 1:] corner as asilib does is off by 1.6 km). Longitudes come out in
-180..180 (the file has 0..360).

Orientation: arrays come out the way :func:`aurora_pipeline.source.cdf.read_asi_cdf`
returns frames, pixel for pixel: row index growing northward, column index growing
eastward (drawn with ``origin="lower"``, north is up and east is right). That is the
file's arrays, as ``scipy.io.readsav`` returns them, turned by 180 degrees
(``[::-1, ::-1]``). It was checked on the real Gakona file
``thg_l1_asf_gako_2011010617_v01.cdf`` against 22 bright stars: turned by 180 degrees,
18 of them sit within 2.5 degrees (median 0.95) of a star in the frame; used as
``readsav`` returns them (as asilib 0.x and themisasi do), none does
(tests/source/test_skymap.py keeps this check). The synthetic archive draws its skies the
same way (north = +row, east = +column).

    >>> files = list_skymaps("/data/skymaps", "gako")
    >>> chosen = choose_skymap(files, "gako", "2011-03-06T04")
    >>> sky = read_skymap(fetch(chosen, "/tmp/cache"))
    >>> sky.el.shape, sky.lat_at(110).shape
    ((256, 256), (256, 256))
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.hours import to_day, to_hour
from aurora_pipeline.source.archive import filesystem, is_local, sha256_of, with_retries
from aurora_pipeline.source.sites import ALTITUDES_KM, DEFAULT_ALTITUDE_KM
from aurora_pipeline.source.archive import fetch

SKYMAP_NAME = re.compile(
    r"^themis_skymap_(?P<site>[a-z0-9]{4})_(?P<date>\d{8})-\+_v(?P<version>[0-9A-Za-z]{2})\.sav$")
_FIX_FILE = "Download the skymap file again from the UCalgary skymap tree."


@dataclass(frozen=True)
class SkymapFile:
    """One skymap file in a skymap tree (from its name, before reading it)."""

    url: str                 # full fsspec URL or local path
    site: str                # four-letter code
    valid_from: np.datetime64  # datetime64[D], the UT day the file starts being valid
    version: str             # the vNN of the name ("02", or "XX" in some old files)
    size: int | None = None  # bytes, from the listing

    @property
    def name(self) -> str:
        """The file name, decoded (mirrors list the "+" of "-+" as %2B)."""
        return urllib.parse.unquote(self.url.rstrip("/").rsplit("/", 1)[-1])

    @property
    def _rank(self) -> tuple:
        # newest day first; on one day a numbered version beats "XX", a higher number a lower one
        return (self.valid_from, self.version.isdigit(), self.version)


@dataclass(frozen=True, eq=False)
class Skymap:
    """A skymap on the frames' pixel grid (row northward, column eastward; see the module docstring).

    Attributes:
        site: four-letter code. imager: the camera's id in the file (e.g. ``themis20``).
        file: file name. url: where it was read from. sha256: hex checksum of the file.
        valid_from: datetime64[D] from the file name.
        valid_interval_start: datetime64[h] from the file's GENERATION_INFO, or NaT.
        site_lat, site_lon, site_alt_m: the imager's geodetic position (deg, deg in
            -180..180, metres).
        el, az: float32 (y, x), degrees; NaN where the lens sees no sky.
        altitudes_km: mapping altitudes of ``lat``/``lon`` (90, 110, 150).
        lat, lon: float32 (altitude, y, x) pixel centres, degrees (lon in -180..180).
    """

    site: str
    imager: str
    file: str
    url: str
    sha256: str
    valid_from: np.datetime64
    valid_interval_start: np.datetime64
    site_lat: float
    site_lon: float
    site_alt_m: float
    el: np.ndarray
    az: np.ndarray
    altitudes_km: tuple[int, ...]
    lat: np.ndarray
    lon: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.el.shape

    def _altitude_index(self, altitude_km: float) -> int:
        for i, alt in enumerate(self.altitudes_km):
            if abs(alt - float(altitude_km)) < 1e-6:
                return i
        raise BadInputError(f"altitude_km={altitude_km!r}", f"{self.file} maps lat/lon at "
                            f"{', '.join(map(str, self.altitudes_km))} km only.",
                            f"Use one of {', '.join(map(str, self.altitudes_km))}.")

    def lat_at(self, altitude_km: float = DEFAULT_ALTITUDE_KM) -> np.ndarray:
        """float32 (y, x) latitude of each pixel's line of sight at ``altitude_km``."""
        return self.lat[self._altitude_index(altitude_km)]

    def lon_at(self, altitude_km: float = DEFAULT_ALTITUDE_KM) -> np.ndarray:
        """float32 (y, x) longitude (-180..180) at ``altitude_km``."""
        return self.lon[self._altitude_index(altitude_km)]

    def zenith(self) -> tuple[int, int]:
        """(row, column) of the pixel with the highest elevation."""
        return tuple(int(i) for i in np.unravel_index(np.nanargmax(self.el), self.el.shape))

    def to_dataset(self):
        """The skymap as an ``xarray.Dataset`` on (y, x) (and ``altitude`` for lat/lon), CF attributes."""
        # xarray: the source side stays free of xarray (only to_dataset needs it)
        import xarray as xr

        return xr.Dataset(
            {"el": (("y", "x"), self.el, coordinate_attrs("el")),
             "az": (("y", "x"), self.az, coordinate_attrs("az")),
             "lat": (("altitude", "y", "x"), self.lat, coordinate_attrs("lat")),
             "lon": (("altitude", "y", "x"), self.lon, coordinate_attrs("lon"))},
            coords={"altitude": ("altitude", np.asarray(self.altitudes_km, np.float32),
                                 {"units": "km", "long_name": "mapping altitude of lat and lon"})},
            attrs=self.provenance(),
        )

    def provenance(self) -> dict:
        """Prefixed attributes naming the skymap (for the store and for figures)."""
        start = "" if np.isnat(self.valid_interval_start) else str(self.valid_interval_start)
        return {"skymap_file": self.file, "skymap_sha256": self.sha256, "skymap_url": self.url,
                "skymap_site": self.site, "skymap_imager": self.imager,
                "skymap_valid_from": str(self.valid_from), "skymap_valid_interval_start": start,
                "skymap_site_lat": self.site_lat, "skymap_site_lon": self.site_lon,
                "skymap_site_alt_m": self.site_alt_m,
                "skymap_orientation": "row index grows northward, column index eastward (as the CDF frames)"}


_COORD_ATTRS = {
    "el": {"units": "degree", "long_name": "elevation of the pixel's line of sight above the horizon"},
    "az": {"units": "degree", "long_name": "azimuth of the pixel's line of sight, east of geographic north"},
    "lat": {"units": "degrees_north", "standard_name": "latitude",
            "long_name": "geodetic latitude where the line of sight meets the mapping altitude"},
    "lon": {"units": "degrees_east", "standard_name": "longitude",
            "long_name": "longitude where the line of sight meets the mapping altitude"},
}


def coordinate_attrs(name: str, altitude_km: float | None = None) -> dict:
    """CF attributes of the skymap coordinate ``el``, ``az``, ``lat`` or ``lon``."""
    attrs = dict(_COORD_ATTRS[name])
    if altitude_km is not None and name in ("lat", "lon"):
        attrs["mapping_altitude_km"] = float(altitude_km)
        attrs["long_name"] += f" ({altitude_km:g} km)"
    return attrs


def parse_skymap_name(filename: str | os.PathLike) -> tuple[str, np.datetime64, str]:
    """(site, valid_from datetime64[D], version) of ``themis_skymap_<site>_<YYYYMMDD>-+_v<NN>.sav``.

    Raises:
        BadInputError: not named like a skymap, or an impossible date.
    """
    name = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    match = SKYMAP_NAME.match(name)
    if match is None:
        raise BadInputError(str(filename), "is not named like a THEMIS skymap file.",
                            "Expected themis_skymap_<site>_<YYYYMMDD>-+_v<NN>.sav, "
                            "e.g. themis_skymap_gako_20110305-+_vXX.sav.")
    d = match["date"]
    try:
        day = to_day(d)
    except BadInputError:
        raise BadInputError(str(filename), f"has an impossible date {d}.", "Rename it with its real UT date.") from None
    return match["site"], day, match["version"]


def list_skymaps(root: str, site: str, storage_options: dict | None = None) -> list[SkymapFile]:
    """The skymap files of ``site`` under ``root``, oldest first (one per day: the best version).

    Looks in ``root``, ``root/<site>`` and its ``<site>_<YYYYMMDD>`` folders (the
    UCalgary tree), never deeper. Names that are not skymaps of ``site`` are ignored.

    Raises:
        BadInputError: ``root`` does not exist, or holds no skymap of ``site``.
    """
    fs, base = filesystem(root, storage_options)
    if not with_retries(lambda: fs.exists(base), what=f"checking {root}"):
        raise BadInputError(str(root), "does not exist.", "Point --skymaps at a folder, https:// mirror or s3:// "
                            "prefix holding themis_skymap_<site>_<YYYYMMDD>-+_v<NN>.sav files.")
    folders = [base, f"{base}/{site}"]
    folders += [e["name"].rstrip("/") for e in _ls(fs, f"{base}/{site}")
                if e["type"] == "directory" and e["name"].rstrip("/").rsplit("/", 1)[-1].startswith(f"{site}_")]
    best: dict[np.datetime64, SkymapFile] = {}
    for folder in folders:
        for entry in _ls(fs, folder):
            name = urllib.parse.unquote(entry["name"].rstrip("/").rsplit("/", 1)[-1])
            match = SKYMAP_NAME.match(name)
            if entry.get("type") == "directory" or match is None or match["site"] != site:
                continue
            _, day, version = parse_skymap_name(name)
            f = SkymapFile(_url(fs, entry["name"], root), site, day, version, entry.get("size"))
            if day not in best or best[day]._rank < f._rank:
                best[day] = f
    if not best:
        raise BadInputError(str(root), f"holds no skymap file of site {site!r} (looked in {root}, {site}/ and "
                            f"{site}/{site}_<YYYYMMDD>/).",
                            f"Download the site's skymaps (themis_skymap_{site}_<YYYYMMDD>-+_v<NN>.sav) there.")
    return sorted(best.values(), key=lambda f: f.valid_from)


def choose_skymap(files: list[SkymapFile], site: str, hour: str | np.datetime64) -> SkymapFile:
    """The skymap valid at ``hour``: the newest of ``site``'s files that starts at or before it.

    A file counts from 00 UT of the day in its name.

    Raises:
        BadInputError: no file of ``site``, or ``hour`` is before the site's first skymap
            (the message names the site, the hour and the first skymap's date).
    """
    when = to_hour(hour)
    mine = sorted((f for f in files if f.site == site), key=lambda f: f._rank)
    if not mine:
        raise BadInputError(f"site {site!r}", "has no skymap file in the list.", "Add the site's skymaps.")
    valid = [f for f in mine if f.valid_from.astype("datetime64[h]") <= when]
    if not valid:
        first = min(f.valid_from for f in mine)
        raise BadInputError(f"{site} {when}", f"is before the first skymap of site {site!r}, which is valid from "
                            f"{first} ({min(mine, key=lambda f: f.valid_from).name}).",
                            "Find an older skymap for this site, or ingest this hour without --skymaps.")
    return valid[-1]


def skymaps_for_hours(files: list[SkymapFile], site: str, hours) -> dict[np.datetime64, SkymapFile]:
    """``choose_skymap`` for each hour (datetime64[h] keys); raises on the first hour without one."""
    return {to_hour(h): choose_skymap(files, site, h) for h in hours}


def skymaps_for_files(files, root: str, storage_options: dict | None = None
                      ) -> tuple[dict[str, SkymapFile], dict[str, BadInputError]]:
    """The skymap valid at each archive file's hour, listing each site's skymaps once.

    Args:
        files: archive files (anything with ``.site``, ``.hour`` (datetime64) and ``.url``).
        root: the skymap tree (folder, https:// mirror or s3:// prefix).

    Returns:
        ({file url: SkymapFile}, {file url: BadInputError}): a file whose site has no
        skymap, or whose hour is before the site's first one, gets its error (record it
        as that file's failure; the others go on).
    """
    chosen: dict[str, SkymapFile] = {}
    errors: dict[str, BadInputError] = {}
    listed: dict[str, list[SkymapFile] | BadInputError] = {}
    for f in files:
        if f.site not in listed:
            try:
                listed[f.site] = list_skymaps(root, f.site, storage_options)
            except BadInputError as err:
                listed[f.site] = err
        found = listed[f.site]
        if isinstance(found, BadInputError):
            errors[f.url] = found
            continue
        try:
            chosen[f.url] = choose_skymap(found, f.site, f.hour)
        except BadInputError as err:
            errors[f.url] = err
    return chosen, errors


def read_skymap(source: str | os.PathLike | bytes, *, name: str | None = None, url: str | None = None) -> Skymap:
    """Read one UCalgary skymap IDL save file into a :class:`Skymap` on the frames' grid.

    Args:
        source: a local path or the file's bytes.
        name: the file name (needed with bytes; defaults to the path's name). It must
            follow the skymap naming pattern: the valid-from date comes from it.
        url: where the file came from (recorded; defaults to the path).

    Raises:
        BadInputError: not an IDL save file, no ``skymap`` structure, missing or
            misshapen fields, or a file of another site than its name says.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        handle, tmp = tempfile.mkstemp(suffix=".sav", prefix="aurora_skymap_")
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(source)
            return _read_path(Path(tmp), label, url or label)
        finally:
            os.unlink(tmp)
    path = Path(source)
    if not path.is_file():
        raise BadInputError(str(source), "file not found.", "Check the path, or list the skymaps again.")
    return _read_path(path, name or path.name, url or str(source))


def _read_path(path: Path, label: str, url: str) -> Skymap:
    site, valid_from, _ = parse_skymap_name(label)
    raw = _readsav(path, label)
    el, az = _field(raw, "FULL_ELEVATION", label, 2), _field(raw, "FULL_AZIMUTH", label, 2)
    corners_lat = _field(raw, "FULL_MAP_LATITUDE", label, 3)
    corners_lon = _field(raw, "FULL_MAP_LONGITUDE", label, 3)
    altitudes = np.atleast_1d(_field(raw, "FULL_MAP_ALTITUDE", label, 1)) / 1000.0
    ny, nx = el.shape
    if az.shape != el.shape or corners_lat.shape != (len(altitudes), ny + 1, nx + 1) \
            or corners_lon.shape != corners_lat.shape:
        raise BadInputError(label, f"has mismatched skymap arrays: el {el.shape}, az {az.shape}, "
                            f"lat {corners_lat.shape}, lon {corners_lon.shape}, {len(altitudes)} altitudes; "
                            f"expected lat/lon of ({len(altitudes)}, {ny + 1}, {nx + 1}) pixel corners.", _FIX_FILE)
    file_site = _text(raw, "SITE_UID").lower()
    if file_site and file_site != site:
        raise BadInputError(label, f"holds the skymap of site {file_site!r} but its name says {site!r}.",
                            "Rename the file after its site, or fetch the right one.")
    site_lat = float(_field(raw, "SITE_MAP_LATITUDE", label, 0))
    site_lon = float(_wrap(np.float64(_field(raw, "SITE_MAP_LONGITUDE", label, 0))))
    lat, lon = _pixel_centres(to_frame_orientation(corners_lat), to_frame_orientation(corners_lon), site_lon)
    return Skymap(
        site=site, imager=_text(raw, "IMAGER_UID"), file=label.rsplit("/", 1)[-1],
        url=url, sha256=sha256_of(path), valid_from=valid_from, valid_interval_start=_valid_interval_start(raw),
        site_lat=site_lat, site_lon=site_lon, site_alt_m=float(_field(raw, "SITE_MAP_ALTITUDE", label, 0)),
        el=np.ascontiguousarray(to_frame_orientation(el), np.float32),
        az=np.ascontiguousarray(to_frame_orientation(az), np.float32),
        altitudes_km=tuple(int(round(a)) for a in altitudes), lat=lat, lon=lon,
    )


def to_frame_orientation(array: np.ndarray) -> np.ndarray:
    """A skymap array as ``readsav`` returns it (last two axes y, x) turned to the frames' orientation.

    The 180-degree turn established against the stars of the real Gakona file (module docstring).
    """
    return np.asarray(array)[..., ::-1, ::-1]


def elevation_mask(skymap: Skymap | np.ndarray, min_elevation: float) -> np.ndarray:
    """bool (y, x): True where the elevation is at least ``min_elevation`` degrees (NaN: False)."""
    el = skymap.el if isinstance(skymap, Skymap) else np.asarray(skymap)
    if not 0.0 <= float(min_elevation) < 90.0:
        raise BadInputError(f"min_elevation={min_elevation!r}", "must be in [0, 90) degrees.",
                            "Use e.g. 13.5 (the paper's 15% crop of the radius).")
    with np.errstate(invalid="ignore"):
        return np.isfinite(el) & (el >= np.float32(min_elevation))


def _ls(fs, path: str) -> list[dict]:
    try:
        return with_retries(lambda: fs.ls(path, detail=True), what=f"listing {path}")
    except FileNotFoundError:
        return []


def _url(fs, path: str, root: str) -> str:
    """A listed path as the URL a later fetch needs (local paths stay paths)."""
    return path if is_local(str(root)) or "://" in path else fs.unstrip_protocol(path)


def _readsav(path: Path, label: str):
    # scipy: only when a skymap .sav file is read
    import scipy.io

    try:
        with warnings.catch_warnings():
            # the UCalgary files are written with a header byte count scipy cannot verify
            warnings.simplefilter("ignore", UserWarning)
            content = scipy.io.readsav(str(path), python_dict=True, verbose=False)
    except Exception as err:  # scipy raises ValueError, EOFError, struct.error... on damaged files
        raise BadInputError(label, f"is not a readable IDL save file ({type(err).__name__}: {err}).",
                            _FIX_FILE) from err
    if "skymap" not in content:
        raise BadInputError(label, f"has no `skymap` structure (variables: {', '.join(content) or 'none'}).",
                            "This is not a UCalgary skymap file.")
    return content["skymap"]


def _field(raw, key: str, label: str, ndim: int) -> np.ndarray:
    names = raw.dtype.names or ()
    if key not in names:
        raise BadInputError(label, f"skymap structure has no {key} field.", _FIX_FILE)
    value = np.asarray(raw[key][0])
    if value.ndim != ndim:
        raise BadInputError(label, f"{key} is {value.ndim}-d {value.shape}, expected {ndim}-d.", _FIX_FILE)
    return value.astype(np.float64) if value.dtype.kind in "iuf" else value


def _text(raw, key: str) -> str:
    if key not in (raw.dtype.names or ()):
        return ""
    value = raw[key][0]
    return value.decode("ascii", "replace").strip() if isinstance(value, bytes) else str(value).strip()


def _valid_interval_start(raw) -> np.datetime64:
    try:
        stamp = raw["GENERATION_INFO"][0][0]["VALID_INTERVAL_START"].decode("ascii").strip()
        return to_hour(stamp[:10])
    except (KeyError, IndexError, ValueError, AttributeError, TypeError, BadInputError):
        return np.datetime64("NaT", "h")


def _wrap(lon: np.ndarray) -> np.ndarray:
    """Longitudes to [-180, 180)."""
    return (np.asarray(lon) + 180.0) % 360.0 - 180.0


def _pixel_centres(corner_lat: np.ndarray, corner_lon: np.ndarray, site_lon: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each pixel's four corners (altitude, y+1, x+1) -> (altitude, y, x), float32.

    Longitudes are averaged as offsets from the site, so a pixel across the date line
    or the 0/360 seam is not averaged to the far side of the Earth.
    """
    def mean4(a):
        return 0.25 * (a[:, :-1, :-1] + a[:, 1:, :-1] + a[:, :-1, 1:] + a[:, 1:, 1:])

    lat = mean4(corner_lat.astype(np.float64))
    offset = _wrap(corner_lon.astype(np.float64) - site_lon)
    lon = _wrap(mean4(offset) + site_lon)
    return np.ascontiguousarray(lat, np.float32), np.ascontiguousarray(lon, np.float32)


def read_skymap_file(file: SkymapFile, cache_dir: str | os.PathLike, storage_options: dict | None = None) -> Skymap:
    """Fetch ``file`` (local files are read in place) and read it; the checksum is of the bytes read."""
    local = fetch(file, cache_dir, storage_options)
    return read_skymap(local, name=file.name, url=file.url)


__all__ = ["ALTITUDES_KM", "DEFAULT_ALTITUDE_KM", "Skymap", "SkymapFile", "choose_skymap", "coordinate_attrs",
           "elevation_mask", "list_skymaps", "parse_skymap_name", "read_skymap", "read_skymap_file",
           "skymaps_for_files", "skymaps_for_hours", "to_frame_orientation"]

"""The store object: open once, know the layout, format and preprocessing setting, hand it down.

    >>> st = Store.open("store.zarr", mode="a")
    >>> st.sites(), st.years("gako"), st.preprocess
    (['gako'], [2011], {'image_size': 128, ...})

Library code opens a store through ``open_store`` (the one edge: a path or URL is opened,
a ``Store`` is handed on as it is), once per public call, and hands the object down.
Modes: ``"r"`` an existing store, ``"r+"`` an existing store for writing (nothing is
made), ``"a"`` for writing, made if absent. ``Store.open`` refuses a store of another
format (the old one-group-per-hour layout included) and paths that cannot be a store,
with the fix in the message. Creation of the root, of site-year groups and of new
arrays happens under the store's locks, so two runs creating a store at once both succeed.
"""

from __future__ import annotations

import datetime as _dt
import os

import fsspec
import numpy as np
import xarray as xr
import zarr
import zarr.codecs
import zarr.errors
import zarr.storage

from aurora_pipeline import __version__
from aurora_pipeline.errors import NoStoreError, StoreError
from aurora_pipeline.ingest.config import recorded_setting
from aurora_pipeline.store import layout
from aurora_pipeline.store.damage import damage_error
from aurora_pipeline.store.facts import FACTS, facts_template
from aurora_pipeline.store.formats import format_problem
from aurora_pipeline.store.locks import store_lock

ROOT_ATTRS = {
    "title": "THEMIS ASI frames labelled with a SimCLR encoder",
    "Conventions": "CF-1.10",
    "source": "THEMIS ground-based all-sky imagers, Level-1 full-resolution CDF (thg_l1_asf)",
    "institution": "aurora-pipeline",
}
FRAMES_ATTRS = {
    "units": "1",
    "long_name": "all-sky image brightness after the eq. 1 stretch, scaled to 0-255",
    "valid_range": [0, 255],
    "comment": "brightness in [0, 1] is frames / 255; as in the source CDF, the row index (y) grows northward and "
               "the column index (x) eastward: drawn with origin='lower', north is up and east is right",
}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """An opened store: its location, format, preprocessing setting and catalogue of site-years."""

    def __init__(self, url: str, zs, local_path: str | None, fs, fs_root: str, storage_options: dict, mode: str):
        self.url, self.zs, self.local_path, self.fs, self.fs_root = url, zs, local_path, fs, fs_root
        self.storage_options, self.mode = storage_options, mode
        self._years: dict[tuple[str, int], zarr.Group] = {}

    # --- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, store: "StoreLike", storage_options: dict | None = None, mode: str = "r") -> "Store":
        """Open ``store`` (a path, an fsspec URL such as ``s3://bucket/store.zarr``, or a Store).

        ``mode="r"`` needs an existing store; ``mode="r+"`` an existing store, opened for
        writing; ``mode="a"`` creates an empty one where there is none. Raises StoreError for
        a path that is a file, an unwritable location, a store of another format, or
        (``"r"``, ``"r+"``: NoStoreError) no store at all.
        """
        if mode not in MODES:
            raise ValueError(f"Store.open: mode {mode!r} is not one of {MODES}")
        if isinstance(store, Store):
            return store if _serves(store, mode) else cls.open(store.url, store.storage_options, mode)
        url, options = str(store), dict(storage_options or {})
        read_only = mode != "a"  # "r+" checks the format read-only first: a writable LocalStore makes its folder
        if "://" in url and not url.startswith("file://"):
            fs, root = fsspec.core.url_to_fs(url, **options)
            zs = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=read_only)
            st = cls(url, zs, None, fs, root.rstrip("/"), options, mode)
        else:
            path = os.path.abspath(url.removeprefix("file://"))
            _check_local_path(path, mode)
            zs = zarr.storage.LocalStore(path, read_only=read_only)
            st = cls(url, zs, path, fsspec.filesystem("file"), path, options, mode)
        st._check_format(create=mode == "a")
        if mode == "r+":
            st.zs = st.zs.with_read_only(False)
        return st

    def _check_format(self, create: bool) -> None:
        attrs = self._root_attrs()
        if attrs is None and not create:
            raise NoStoreError(f"{self.url}: no such store. Fix: run `aurora-pipeline ingest --store {self.url}` first.")
        if create and layout.FORMAT_ATTR not in (attrs or {}):
            # another run may be creating it right now: decide under the catalogue lock, which that run holds
            with store_lock(self, "catalogue"):
                attrs = self._root_attrs()
                if attrs is None:  # the root's metadata is written once, with its attributes (one atomic object)
                    zarr.open_group(self.zs, mode="a", attributes={
                        **ROOT_ATTRS, layout.FORMAT_ATTR: layout.STORE_FORMAT_VERSION, "aurora_sites": {},
                        "aurora_pipeline_version": __version__,
                        "history": f"{utc_now()} aurora-pipeline {__version__}: store created"})
                    attrs = self._root_attrs()
        found = attrs.get(layout.FORMAT_ATTR)
        if found != layout.STORE_FORMAT_VERSION:
            raise StoreError(format_problem(self, found))

    def _root_attrs(self) -> dict | None:
        try:
            return dict(zarr.open_group(self.zs, mode="r").attrs)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
            return None
        except PermissionError as err:
            raise StoreError(f"{self.url}: cannot be read ({err}). Fix: check the path's permissions.") from None
        except (ValueError, UnicodeDecodeError):  # zarr.json not JSON (JSONDecodeError is a ValueError)
            raise_if_damaged(self)
            raise

    # --- the catalogue ---------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return self._root_attrs() or {}

    def sites(self) -> list[str]:
        """Sites with data, from the store's own record of them (root attribute ``aurora_sites``)."""
        return sorted(self.attrs.get("aurora_sites", {}))

    def years(self, site: str) -> list[int]:
        return sorted(int(y) for y in self.attrs.get("aurora_sites", {}).get(site, []))

    @property
    def preprocess(self) -> dict | None:
        """The store's one preprocessing setting (``PreprocessConfig`` fields), or None before the first ingest
        (a setting recorded before a key was added reads with the value it was made with: ``recorded_setting``)."""
        return recorded_setting(self.attrs.get("aurora_preprocess"))

    def set_preprocess(self, setting: dict, described: dict) -> None:
        """Record the preprocessing setting, or refuse one that differs from the store's."""
        with store_lock(self, "catalogue"):
            have = self.preprocess
            if have is None:
                zarr.open_group(self.zs, mode="r+").attrs.update({"aurora_preprocess": setting, **described})
            elif have != setting:
                diff = ", ".join(f"{k}={have.get(k)!r} (asked {setting.get(k)!r})" for k in sorted(set(have) | set(setting))
                                 if have.get(k) != setting.get(k))
                raise StoreError(f"{self.url}: this store holds frames preprocessed with another setting: {diff}. "
                                 "One store holds one preprocessing setting. Fix: ingest with the store's setting "
                                 "(e.g. --image-size " f"{have.get('image_size')}), or into a new store.")

    def encoder_checkpoints(self) -> dict[str, str]:
        """``{model id: checkpoint location}`` of the encoders that embedded this store (as ``embed`` recorded them)."""
        return dict(self.attrs.get("aurora_encoder_checkpoints", {}))

    def record_checkpoint(self, model_id: str, location: str) -> None:
        """Record where the checkpoint of encoder ``model_id`` is (root attribute ``aurora_encoder_checkpoints``)."""
        with store_lock(self, "catalogue"):
            root = zarr.open_group(self.zs, mode="r+")
            known = dict(root.attrs.get("aurora_encoder_checkpoints", {}))
            if known.get(model_id) != location:
                root.attrs["aurora_encoder_checkpoints"] = {**known, model_id: location}

    @property
    def skymaps(self) -> str | None:
        """Where this store's skymaps come from (the tree its last skymap ingest used), or None."""
        return self.attrs.get("aurora_skymaps") or None

    def set_skymaps(self, root: str) -> None:
        """Record the skymap tree (folder, https:// mirror or s3://) an ingest used, for the next runs."""
        with store_lock(self, "catalogue"):
            attrs = zarr.open_group(self.zs, mode="r+").attrs
            if attrs.get("aurora_skymaps") != root:
                attrs["aurora_skymaps"] = root

    def add_history(self, action: str) -> None:
        with store_lock(self, "catalogue"):
            root = zarr.open_group(self.zs, mode="r+")
            line = f"{utc_now()} aurora-pipeline {__version__}: {action}"
            root.attrs["history"] = (str(root.attrs.get("history", "")) + "\n" + line).strip()

    # --- site-year groups ------------------------------------------------------------------------
    def year_group(self, site: str, year: int, *, create: bool = False) -> zarr.Group | None:
        """The site-year group (None when absent and not ``create``); creating it needs the preprocess setting.

        A site-year exists once the catalogue (root ``aurora_sites``) lists it, which happens
        after all its arrays are created: a creation killed half way is redone.
        """
        key = (site, int(year))
        if key in self._years:
            return self._years[key]
        if int(year) not in self.years(site):
            if not create:
                return None
            self._create_year(site, int(year))
        try:
            group = zarr.open_group(self.zs, path=layout.year_path(site, year), mode="r" if self.mode == "r" else "r+")
        except (ValueError, UnicodeDecodeError):
            raise_if_damaged(self)
            raise
        self._years[key] = group
        return group

    def _create_year(self, site: str, year: int) -> None:
        setting = self.preprocess
        if not setting:
            raise StoreError(f"{self.url}: no preprocessing setting recorded yet; ingest records it first.")
        with store_lock(self, site):
            if year in self.years(site):
                return  # created by another writer meanwhile
            image_size = int(setting["image_size"])
            _write_template(self.zs, layout.year_path(site, year), _year_template(site, year, image_size),
                            _year_encoding(year, image_size), layout.hours_in_year(year) * layout.SLOTS_PER_HOUR, mode="w")
            with store_lock(self, "catalogue"):
                root = zarr.open_group(self.zs, mode="r+")
                sites = dict(root.attrs.get("aurora_sites", {}))
                sites[site] = sorted(set(sites.get(site, [])) | {year})
                root.attrs["aurora_sites"] = sites

    def ensure_variables(self, site: str, year: int, template: xr.Dataset, encoding: dict, *, replace: bool = False) -> zarr.Group:
        """Add the (slot-long) variables of ``template`` to a site-year group unless present.

        With ``replace``, existing arrays of those names are removed first (a new class list,
        a new embedding width); the caller clears the facts that described them.
        """
        group = self.year_group(site, year, create=True)
        missing = [name for name in template.data_vars if name not in group]
        if not missing and not replace:
            return group
        with store_lock(self, site):
            group = zarr.open_group(self.zs, path=layout.year_path(site, year), mode="r+")
            if replace:  # the arrays and their own coordinates (class, feature); never the shared slot axis
                for name in template.variables:
                    if name != "slot" and name in group:
                        del group[name]
            names = [n for n in template.data_vars if n not in group]
            if names:
                keep = template[names]
                _write_template(self.zs, layout.year_path(site, year), keep,
                                {k: v for k, v in encoding.items() if k in keep.variables},
                                layout.hours_in_year(year) * layout.SLOTS_PER_HOUR, mode="a")
        self._years.pop((site, int(year)), None)
        return self.year_group(site, year)


StoreLike = str | os.PathLike | Store  # what a public function takes as `store`: a path, an fsspec URL or a Store
MODES = ("r", "r+", "a")  # read an existing store; write an existing store; write, creating it if absent


def open_store(store: StoreLike, storage_options: dict | None = None, mode: str = "r") -> Store:
    """The one edge where a store is opened: a path or URL becomes a ``Store`` (``Store.open``),
    a ``Store`` is handed on as it is, without opening anything (it is reopened only when it
    was opened read-only and ``mode`` asks for writing)."""
    if isinstance(store, Store):
        return store if _serves(store, mode) else Store.open(store.url, store.storage_options, mode)
    return Store.open(store, storage_options, mode)


def open_existing_store(store: StoreLike, storage_options: dict | None = None, mode: str = "r+") -> Store | None:
    """``store`` opened (for writing by default) if there is one; None, and nothing created, if not
    (a first run that settles its settings before it makes the store)."""
    try:
        return open_store(store, storage_options, mode)
    except NoStoreError:
        return None


def store_location(store: StoreLike) -> str:
    """The path or URL of ``store``, to name it in a message or a summary."""
    return store.url if isinstance(store, Store) else str(store)


def _serves(st: Store, mode: str) -> bool:
    """Whether the opened ``st`` can be used as asked by ``mode`` (a writable one serves every mode)."""
    return mode == "r" or st.mode != "r"


def raise_if_damaged(st: Store) -> None:
    """Raise the BadInputError that names the store's damaged metadata, if any is (see damage.py)."""
    err = damage_error(st)
    if err is not None:
        raise err from None


def _check_local_path(path: str, mode: str) -> None:
    if os.path.isfile(path):
        raise StoreError(f"{path}: is a regular file, not a store. Fix: pass a directory path for the store "
                         "(e.g. store.zarr) that does not exist yet or holds an aurora-pipeline store.")
    if mode == "a" or (mode == "r+" and os.path.exists(path)):  # "r+" of no store is NoStoreError, later
        parent = path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            raise StoreError(f"{path}: cannot be written ({parent} is read-only for this user). "
                             "Fix: choose a writable location for the store, or fix its permissions.")


def _write_template(zs, path: str, template: xr.Dataset, encoding: dict, n_slots: int, mode: str) -> None:
    """Create the arrays of ``template`` (one slot long, fill values) with xarray's metadata, then
    grow their ``slot`` axis to ``n_slots``: only metadata is written, no chunk is stored."""
    template.to_zarr(zs, group=path, mode=mode, consolidated=False, encoding=encoding)
    group = zarr.open_group(zs, path=path, mode="r+")
    for name, var in template.variables.items():
        if var.dims and var.dims[0] == "slot":
            group[name].resize((n_slots,) + tuple(var.shape[1:]))


def _year_template(site: str, year: int, image_size: int) -> xr.Dataset:
    time = np.array([np.datetime64("NaT", "ms")])
    frames = np.zeros((1, image_size, image_size), dtype=np.uint8)
    ds = xr.Dataset({"frames": (("slot", "y", "x"), frames, FRAMES_ATTRS)},
                    coords={"time": ("slot", time, {"standard_name": "time", "long_name": "frame time (UT)"})},
                    attrs={"site": site, "year": year, "aurora_slots_per_hour": layout.SLOTS_PER_HOUR})
    return ds.merge(facts_template(year))


def _year_encoding(year: int, image_size: int) -> dict:
    enc = {"time": {"units": layout.TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int64",
                    "_FillValue": -1, "fill_value": -1, "chunks": (layout.small_chunk(),)},
           "frames": {"chunks": (layout.frames_chunk(image_size), image_size, image_size), "fill_value": 0,
                      "compressors": (zarr.codecs.ZstdCodec(level=layout.FRAMES_ZSTD_LEVEL),)}}
    n_hours = layout.hours_in_year(year)
    for name, (dtype, fill, _attrs) in FACTS.items():
        enc[f"hour_{name}"] = {"chunks": (n_hours,)} | ({"fill_value": fill} if dtype != "str" else {})
    return enc

"""Naming the damaged object of a store whose Zarr metadata is not readable.

Zarr keeps each group's and array's metadata in a ``zarr.json`` file. A file cut short
(a disk filled up, a copy interrupted) makes zarr raise a bare ``JSONDecodeError`` that
names no file. ``damaged_metadata`` finds the files that are not JSON; ``damage_error``
turns them into the one-line ``BadInputError`` a user can act on.
"""

from __future__ import annotations

import json

import fsspec

from aurora_pipeline.errors import BadInputError

LOCKS_FOLDER = ".aurora-locks"


def damaged_metadata(store, storage_options: dict | None = None) -> list[str]:
    """The ``zarr.json`` files under ``store`` (path or URL) that are not a JSON object, relative to its root."""
    fs, root = fsspec.core.url_to_fs(str(getattr(store, "url", store)).removeprefix("file://"),
                                     **(storage_options or getattr(store, "storage_options", None) or {}))
    root = root.rstrip("/")
    try:
        found = [p for p in fs.find(root) if p.rsplit("/", 1)[-1] == "zarr.json" and f"/{LOCKS_FOLDER}/" not in p]
    except (FileNotFoundError, NotADirectoryError):
        return []
    bad = []
    for path in sorted(found):
        try:
            ok = isinstance(json.loads(fs.cat_file(path)), dict)
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
            ok = False
        if not ok:
            bad.append(path[len(root):].lstrip("/"))
    return bad


def damage_error(store, storage_options: dict | None = None) -> BadInputError | None:
    """A BadInputError naming the store's damaged metadata files and what to do, or None when none is."""
    bad = damaged_metadata(store, storage_options)
    if not bad:
        return None
    url = str(getattr(store, "url", store)).rstrip("/")
    objects = [_object_name(p) for p in bad]
    shown = "; ".join(f"{url}/{p} ({o})" for p, o in zip(bad[:3], objects[:3])) + ("; ..." if len(bad) > 3 else "")
    return BadInputError(shown, f"the store's metadata is damaged: {len(bad)} zarr.json file(s) are not valid JSON "
                         "(cut short?)", "restore those files from a backup or copy of the store; without one, ingest "
                         "the archive again into a new store (the store's other files are left as they are)")


def _object_name(path: str) -> str:
    parts = path.split("/")[:-1]
    if not parts:
        return "the store's root group"
    if len(parts) == 1:
        return f"site group {parts[0]}"
    if len(parts) == 2:
        return f"site-year group {parts[0]}/{parts[1]}"
    return f"array {parts[-1]} of {parts[0]}/{parts[1]}" if len(parts) == 3 else f"object {'/'.join(parts)}"

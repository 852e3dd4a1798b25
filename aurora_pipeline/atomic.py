"""Writing a file so that a reader sees the old file or the whole new one, never a part.

The one way this package writes a finished file: the content goes to a temporary
file with a unique name in the target's folder (hidden, ``.NAME.XXXXXXXX.tmp``, so two
processes or threads writing the same file never share one), is flushed to disk
(fsync), and is renamed onto the target in one step (``os.replace``). On any error
the temporary file is removed and the target is left as it was.

Example:
    >>> atomic_write(run_dir / "loss.json", json.dumps(losses))
    >>> with atomic_path(out / "loss.png") as tmp:      # for writers that want a path
    ...     figure.savefig(tmp, format="png")
    >>> with atomic_file(target) as fh:                 # for writers that stream
    ...     shutil.copyfileobj(source, fh)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A unique temporary path beside ``path``, renamed onto ``path`` when the block succeeds.

    The temporary file exists (empty) when the block starts; a writer that insists on
    creating its file itself may delete it first. ``suffix`` ends the temporary name,
    for writers that go by it (``np.savez`` adds ``.npz`` unless the name ends so; the
    CDF writer wants ``.cdf``). The written file is fsynced before the rename.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle whose content becomes ``path`` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_file(path) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


__all__ = ["atomic_file", "atomic_path", "atomic_write"]

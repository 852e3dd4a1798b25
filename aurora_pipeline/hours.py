"""The one hour parser: user times, archive hour stamps and store positions all come through here.

Times are UT. An hour is a ``numpy.datetime64`` with unit ``h``; the archive names an
hour ``YYYYMMDDHH`` (``2011010617``), users write ISO 8601 (``2011-01-06T17``).

    >>> to_hour("2011-01-06T17:30")
    numpy.datetime64('2011-01-06T17','h')
    >>> to_hour("2011010617")
    numpy.datetime64('2011-01-06T17','h')
"""

from __future__ import annotations

import re

import numpy as np

from aurora_pipeline.errors import BadInputError

_STAMP = re.compile(r"^(\d{4})(\d{2})(\d{2})T?(\d{2})$")


def to_hour(value: str | np.datetime64 | None) -> np.datetime64 | None:
    """Parse a time (ISO 8601, ``YYYYMMDDHH`` or a datetime64) to its hour, or None for None/"".

    Raises BadInputError naming the value when it is not a time.
    """
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, np.datetime64):
        return np.datetime64(value, "h")
    text = str(value).strip().rstrip("Z")
    match = _STAMP.match(text)
    if match:
        text = "{}-{}-{}T{}".format(*match.groups())
    try:
        return np.datetime64(np.datetime64(text), "h")
    except ValueError as err:
        raise BadInputError(str(value), f"is not a time ({err})", "use ISO 8601 such as 2011-01-06T04") from None


def to_time(value: str | np.datetime64 | None) -> np.datetime64 | None:
    """Parse a time to millisecond precision (ISO 8601 or datetime64), or None."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, np.datetime64):
        return np.datetime64(value, "ms")
    text = str(value).strip().rstrip("Z")
    if _STAMP.match(text):
        return np.datetime64(to_hour(text), "ms")
    try:
        return np.datetime64(np.datetime64(text), "ms")
    except ValueError as err:
        raise BadInputError(str(value), f"is not a time ({err})", "use ISO 8601 such as 2011-01-06T04:00:03") from None


def to_day(stamp: str) -> np.datetime64:
    """The day of a ``YYYYMMDD`` stamp (the skymap file names), as ``datetime64[D]``.

    Raises BadInputError naming the stamp when it is not a real date.
    """
    return np.datetime64(to_hour(f"{stamp}00"), "D")


def hour_stamp(hour: str | np.datetime64) -> str:
    """The archive's ``YYYYMMDDHH`` for an hour."""
    h = to_hour(hour).astype(object)
    return f"{h:%Y%m%d%H}"


def hour_range(hour: str | np.datetime64) -> tuple[np.datetime64, np.datetime64]:
    """``[start, end)`` of an hour in milliseconds."""
    start = np.datetime64(to_hour(hour), "ms")
    return start, start + np.timedelta64(3_600_000, "ms")

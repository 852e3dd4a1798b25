"""The one hour parser: user times, archive hour stamps and store positions all come through here.

Times are UT. An hour is a ``numpy.datetime64`` with unit ``h``; the archive names an
hour ``YYYYMMDDHH`` (``2011010617``), users write ISO 8601 (``2011-01-06T17``). A time
with a UTC offset (``2011-01-06T22:00+05:00``, ``...Z``) is converted to UT. A range
``[start, end)`` from a user goes through ``time_range``, which every command and
library entry point uses, so all of them refuse the same empty or reversed ranges.

    >>> to_hour("2011-01-06T17:30")
    numpy.datetime64('2011-01-06T17','h')
    >>> to_hour("2011010617")
    numpy.datetime64('2011-01-06T17','h')
    >>> time_range("2011-01-06T22:00+05:00", "2011-01-06T18")
    (numpy.datetime64('2011-01-06T17:00:00.000'), numpy.datetime64('2011-01-06T18:00:00.000'))
"""

from __future__ import annotations

import re

import numpy as np

from aurora_pipeline.errors import BadInputError

_STAMP = re.compile(r"^(\d{4})(\d{2})(\d{2})T?(\d{2})$")
# a UTC offset after the time of day: Z, +05, +0530, +05:30 (never the "-06" of a bare date)
_OFFSET = re.compile(r"^(?P<local>.*[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d+)?)?)?)\s*"
                     r"(?:(?P<z>Z)|(?P<sign>[+-])(?P<hh>\d{2}):?(?P<mm>\d{2})?)$", re.IGNORECASE)


def _parse(value, unit: str, example: str) -> np.datetime64 | None:
    """``value`` as a UT datetime64 of ``unit`` (a UTC offset converted), None for None/""."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, np.datetime64):
        return np.datetime64(value, unit)
    text = str(value).strip()
    offset = np.timedelta64(0, "m")
    match = _OFFSET.match(text)
    if match:
        text = match["local"]
        if not match["z"]:
            hh, mm = int(match["hh"]), int(match["mm"] or 0)
            if hh > 14 or mm > 59:
                raise BadInputError(str(value), f"has a UTC offset {match['sign']}{match['hh']}:{mm:02d} "
                                    "outside -14:00..+14:00", f"write the time in UT, e.g. {example}")
            offset = np.timedelta64((hh * 60 + mm) * (1 if match["sign"] == "+" else -1), "m")
    stamp = _STAMP.match(text)
    if stamp:
        text = "{}-{}-{}T{}".format(*stamp.groups())
    try:
        local = np.datetime64(text)
    except ValueError as err:
        raise BadInputError(str(value), f"is not a time ({err})", f"use ISO 8601 in UT such as {example}") from None
    if np.isnat(local):
        raise BadInputError(str(value), "is not a time (NaT)", f"use ISO 8601 in UT such as {example}")
    return np.datetime64(np.datetime64(local, "ms") - offset, unit)


def to_hour(value: str | np.datetime64 | None) -> np.datetime64 | None:
    """Parse a time (ISO 8601, ``YYYYMMDDHH`` or a datetime64) to its UT hour, or None for None/"".

    Raises BadInputError naming the value when it is not a time.
    """
    return _parse(value, "h", "2011-01-06T04")


def to_time(value: str | np.datetime64 | None) -> np.datetime64 | None:
    """Parse a time to millisecond precision in UT (ISO 8601, ``YYYYMMDDHH`` or datetime64), or None."""
    return _parse(value, "ms", "2011-01-06T04:00:03")


def time_range(start, end) -> tuple[np.datetime64 | None, np.datetime64 | None]:
    """``[start, end)`` in UT to the millisecond (None: open on that side), checked.

    The one time-range parser of every command (``--start``/``--end``) and library entry
    point. Raises BadInputError naming both values when either is not a time, or when the
    range is reversed or empty (the end is exclusive, so ``end == start`` holds nothing).
    """
    t0, t1 = to_time(start), to_time(end)
    if t0 is not None and t1 is not None and t1 <= t0:
        problem = (f"the time range is empty: the end equals the start ({t0} UT) and is exclusive" if t1 == t0
                   else f"the time range is reversed: the end ({t1} UT) is before the start ({t0} UT)")
        raise BadInputError(f"{start} .. {end}", problem,
                            "give an end (--end) later than the start (--start), e.g. "
                            "--start 2011-01-06T04 --end 2011-01-06T06")
    return t0, t1


def range_text(start, end) -> tuple[str | None, str | None]:
    """``time_range`` as ISO 8601 UT text (what a command hands its flow as parameters)."""
    return tuple(None if t is None else str(t) for t in time_range(start, end))


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

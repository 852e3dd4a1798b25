"""Checks of counts and sizes a user gives, shared by the command line, the flows and the library.

Time ranges are checked by ``aurora_pipeline.hours.time_range`` and site codes by
``aurora_pipeline.source.sites.parse_sites``; this module holds what is neither: whole
numbers that must be positive (a count of frames, a number of days). ``0`` is a value
here, never "unset": only None means "not given".
"""

from __future__ import annotations

import numbers

from aurora_pipeline.errors import BadInputError


def positive_int(value, name: str, example: str = "") -> int:
    """``value`` as an int when it is a whole number >= 1; else BadInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise BadInputError(name, f"must be a positive whole number, got {value!r}",
                            example or f"give {name} 1 or more")
    return int(value)


def optional_positive_int(value, name: str, example: str = "") -> int | None:
    """``positive_int`` that lets None through (None: not given, the default applies)."""
    return None if value is None else positive_int(value, name, example)

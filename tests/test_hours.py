"""aurora_pipeline.hours is the one hour parser: no module slices YYYYMMDDHH by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from aurora_pipeline.hours import to_day, to_hour
from aurora_pipeline.source.archive import ArchiveFile

PACKAGE = Path(__file__).resolve().parents[1] / "aurora_pipeline"


def _slice_bounds(node: ast.AST) -> tuple | None:
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        s = node.slice
        return tuple(b.value if isinstance(b, ast.Constant) else None for b in (s.lower, s.upper))
    return None


def test_no_module_slices_hour_stamps_by_hand():
    """An f-string built from [4:6]-style slices of one string is a hand-made date parser."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                bounds = {_slice_bounds(v.value) for v in node.values if isinstance(v, ast.FormattedValue)}
                if (4, 6) in bounds and (None, 4) in bounds and path.name != "hours.py":
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_archive_file_hour_goes_through_the_one_parser():
    f = ArchiveFile(url="x/thg_l1_asf_gako_2011010617_v01.cdf", site="gako", hour_code="2011010617", version=1, size=None)
    assert f.hour == to_hour("2011-01-06T17") == np.datetime64("2011-01-06T17", "h")
    assert to_hour("20110106T17") == f.hour  # the old store's hour-group names


def test_to_day_reads_skymap_dates_and_refuses_impossible_ones():
    import pytest

    from aurora_pipeline.errors import BadInputError

    assert to_day("20110305") == np.datetime64("2011-03-05")
    with pytest.raises(BadInputError, match="20110231"):
        to_day("20110231")

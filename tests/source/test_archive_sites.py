"""Asked site codes: unknown ones refused before any listing, asked ones with no files named."""

from __future__ import annotations

import numpy as np
import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.source.archive import check_site_codes, list_archive, relative_path, sites_without_files
from aurora_pipeline.synth.archive import render_site_hour, write_asi_cdf


def test_unknown_site_codes_are_refused_with_the_known_ones():
    assert check_site_codes(["GAKO", " gill", "gako"]) == ["gako", "gill"]
    with pytest.raises(BadInputError, match=r"unknown THEMIS ASI site code\(s\) \['gakk'\]") as err:
        check_site_codes(["gako", "gakk"], "--sites")
    assert err.value.source == "--sites" and "gako" in err.value.fix and "inuv" in err.value.fix


def test_listing_refuses_a_misspelt_site_and_names_asked_sites_without_files(tmp_path):
    hour = np.datetime64("2011-01-06T05", "h")
    times, images, _ = render_site_hour("gako", hour, 2, 0, size=32)
    write_asi_cdf(tmp_path / relative_path("gako", hour), "gako", times, images)
    with pytest.raises(BadInputError, match="gakk"):
        list_archive(tmp_path, sites=["gakk"])
    files = list_archive(tmp_path, sites=["gako", "inuv", "rank"])
    assert [f.site for f in files] == ["gako"]
    assert sites_without_files(["gako", "inuv", "rank"], files) == ["inuv", "rank"]
    assert sites_without_files(None, files) == []

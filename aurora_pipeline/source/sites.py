"""THEMIS all-sky-imager site codes.

The four-letter lower-case codes are the ones used in the archive tree
(``thg/l1/asi/<site>/...``), in the file names (``thg_l1_asf_<site>_...``) and in the
CDF variable names (``thg_asf_<site>``).

The first 24 entries are the THEMIS ground-based observatory imagers as listed by
SPEDAS (``asi_is_site``) and asilib (``asi_locations.csv``). ``loyw`` and ``lyrs`` are
later additions that appear in the archive tree; their station names were not checked
against an official list.
"""

from __future__ import annotations

from aurora_pipeline.errors import BadInputError

ALTITUDES_KM = (90, 110, 150)  # the altitudes at which the UCalgary skymaps map each pixel's lat/lon
DEFAULT_ALTITUDE_KM = 110      # asilib's default, and the 557.7 nm auroral emission's height

SITES: dict[str, str] = {
    "atha": "Athabasca",
    "chbg": "Chibougamau",
    "ekat": "Ekati",
    "fsim": "Fort Simpson",
    "fsmi": "Fort Smith",
    "fykn": "Fort Yukon",
    "gako": "Gakona",
    "gbay": "Goose Bay",
    "gill": "Gillam",
    "inuv": "Inuvik",
    "kapu": "Kapuskasing",
    "kian": "Kiana",
    "kuuj": "Kuujjuaq",
    "mcgr": "McGrath",
    "nrsq": "Narsarsuaq",
    "pgeo": "Prince George",
    "pina": "Pinawa",
    "rank": "Rankin Inlet",
    "snap": "Snap Lake",
    "snkq": "Sanikiluaq",
    "talo": "Taloyoak",
    "tpas": "The Pas",
    "whit": "Whitehorse",
    "yknf": "Yellowknife",
    "loyw": "loyw (station name not verified)",
    "lyrs": "Longyearbyen (station name not verified)",
}


def check_site_codes(sites, source: str = "sites") -> list[str]:
    """The asked site codes, lower-cased, each checked against the THEMIS imagers' codes.

    Raises:
        BadInputError: a code that is not one of ``SITES`` (a typo such as ``gakk``), or no codes.
    """
    if isinstance(sites, str):
        sites = [sites]
    codes = [str(s).strip().lower() for s in sites]
    unknown = [c for c in codes if c not in SITES]
    if unknown:
        raise BadInputError(source, f"unknown THEMIS ASI site code(s) {unknown}",
                            f"use four-letter codes from: {', '.join(sorted(SITES))}")
    if not codes:
        raise BadInputError(source, "is an empty list of sites", "name at least one site, or leave it out for all")
    return list(dict.fromkeys(codes))


def parse_sites(value: str | list[str] | None, source: str = "--sites") -> list[str] | None:
    """The one site-list parser: ``"gako,gill"`` (or a list of codes) -> checked codes; None -> None (all).

    Raises BadInputError for an unknown code or a list with no code (``--sites ,``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [s for s in value.split(",") if s.strip()]
    return check_site_codes(value, source)


def check_site(code: str, source: str = "--site") -> str:
    """One site code, lower-cased and checked (a typo or a path such as ``../x`` is refused)."""
    if not isinstance(code, str) or "," in code:
        raise BadInputError(source, f"must be one four-letter site code, got {code!r}", "e.g. gako")
    return check_site_codes([code], source)[0]

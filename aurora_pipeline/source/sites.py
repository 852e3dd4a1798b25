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

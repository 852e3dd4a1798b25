"""The preprocessing setting (``PreprocessConfig``): the one place of its defaults, light to import.

The numbers that decide a store's frames (field of view, eq. 1's percentiles, output size),
recorded in the store through ``as_attrs()``; the steps themselves are in
:mod:`aurora_pipeline.ingest.preprocess`, which re-exports the class. This module imports
neither numpy nor the store, so the command line builds its options from it cheaply.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.source.sites import ALTITUDES_KM, DEFAULT_ALTITUDE_KM

FOV_KINDS = ("oath", "circle", "elevation")
# how fov="oath" resizes its uint8 frames: "pil", PIL's own fixed-point bilinear (the bytes of
# ``Image.resize(..., BILINEAR)``, the same on every CPU); "float64", the float64 products the
# first OATH-framed stores were made with (within 1 level of PIL's). A recorded OATH setting
# without the key is one of those stores (or encoders) and reads as "float64".
OATH_RESIZE_KINDS = ("pil", "float64")
OATH_RESIZE_BEFORE = "float64"


@dataclass(frozen=True)
class PreprocessConfig:
    fov: str = "oath"              # "oath": OATH's framing (no crop); "circle": inscribed circle, cropped;
                                   # "elevation": skymap el >= min_elevation, cropped
    fov_shrink: float = 0.15       # fraction of the field-of-view radius removed at the horizon (paper: 15%)
    fov_radius: float | None = None  # radius of the imager's circular field of view in pixels; None = half the frame
    min_elevation: float = 13.5    # degrees, with fov="elevation": the paper's 15% crop as an elevation (0.15 * 90)
    map_altitude_km: float = float(DEFAULT_ALTITUDE_KM)  # with fov="elevation": the altitude of the stored lat/lon (90, 110 or 150)
    low_percentile: float = 1.0    # m in eq. 1
    high_percentile: float = 99.0  # M in eq. 1 is this percentile of x - m
    image_size: int = 128          # output frames are image_size x image_size
    oath_resize: str = "pil"       # with fov="oath": "pil" (PIL's integer bilinear) or "float64" (stores made before it)
    block_frames: int = 16         # frames processed at once (bounds memory, not results; 16 stay in cache)

    def __post_init__(self):
        if self.fov not in FOV_KINDS:
            raise BadInputError("fov", f"must be one of {FOV_KINDS}, got {self.fov!r}",
                                "use 'oath' or 'circle' (no skymap), or 'elevation' (with --skymaps)")
        if self.oath_resize not in OATH_RESIZE_KINDS:
            raise BadInputError("oath_resize", f"must be one of {OATH_RESIZE_KINDS}, got {self.oath_resize!r}",
                                "use 'pil' (PIL's bilinear, the default of new stores)")
        if not 0.0 <= self.min_elevation < 90.0:
            raise BadInputError("min_elevation", f"must be in [0, 90) degrees, got {self.min_elevation}",
                                "use the paper's 13.5 (15% of the radius of an equidistant fisheye)")
        if float(self.map_altitude_km) not in ALTITUDES_KM:
            raise BadInputError("map_altitude_km", f"must be one of {ALTITUDES_KM} km, got {self.map_altitude_km}",
                                "use 110 (the skymaps map lat/lon at 90, 110 and 150 km)")
        if not 0.0 <= self.fov_shrink < 1.0:
            raise BadInputError("fov_shrink", f"must be in [0, 1), got {self.fov_shrink}", "use e.g. 0.15")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise BadInputError(
                "percentiles",
                f"need 0 <= low < high <= 100, got {self.low_percentile}, {self.high_percentile}",
                "use the paper's 1 and 99",
            )
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, numbers.Integral) \
                or not 8 <= self.image_size <= 512:
            raise BadInputError("image_size", f"must be a whole number of pixels in 8..512, got {self.image_size!r}",
                                "use 128 (THEMIS frames are 256 x 256; more only interpolates)")

    def setting(self) -> dict:
        """The parameters that decide the output frames, as a plain dict (the store's one setting).

        ``oath_resize`` only with ``fov="oath"``: the other framings resize float values, the same way either way."""
        unused = {"block_frames"} | ({"oath_resize"} if self.fov != "oath" else set())
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}

    def as_attrs(self) -> dict:
        """The parameters as flat attributes prefixed ``preprocess_`` (for the store)."""
        out = {f"preprocess_{key}": "none" if value is None else value for key, value in self.setting().items()}
        if self.fov == "oath":
            out["preprocess_method"] = (
                "framed like OATH (Clausen & Nickisch 2018) and the published Aurora-FM encoder's input: the whole "
                "frame, no crop; eq. 1 of Johnson et al.: a = x - p_low(x), a = a / p_high(a) (percentiles over the "
                "whole frame; a / max(a) where p_high(a) is 0), clip to [0, 1]; 0 outside the centred circle "
                "sqrt((x-c)^2 + (y-c)^2) <= int((1 - fov_shrink) * c), c = half the frame side; uint8 = "
                "floor(255 * value); bilinear antialiased resize of those uint8 values to image_size, "
                + ("PIL's Image.resize(BILINEAR) to the byte (its fixed-point integers)" if self.oath_resize == "pil"
                   else "in float64, rounded (within 1 level of PIL's)"))
            return out
        if self.fov == "circle":
            fov = ("field of view: the frame's inscribed circle (no skymap) shrunk by fov_shrink of its radius, "
                   "outside set to 0, cropped to the circle's bounding square")
        else:
            fov = ("field of view: the skymap's pixels with elevation >= min_elevation degrees, outside set to 0, "
                   "cropped to the square around their bounding box; el/az/lat/lon (lat/lon at map_altitude_km) "
                   "resampled bilinearly at each output pixel's centre")
        out["preprocess_method"] = (
            f"{fov}; eq. 1 of Johnson et al.: clip((x - p_low) / p_high(x - p_low), 0, 1) over pixels inside the "
            "field of view; bilinear antialiased resize to image_size; uint8 = round(255 * value)"
        )
        return out

    @classmethod
    def from_attrs(cls, attrs: dict) -> "PreprocessConfig":
        kwargs = {}
        for field in dataclasses.fields(cls):
            key = f"preprocess_{field.name}"
            if key in attrs:
                value = attrs[key]
                kwargs[field.name] = None if value == "none" else value
        return cls(**recorded_setting(kwargs))


def recorded_setting(setting: dict | None) -> dict | None:
    """A setting as a store or a checkpoint recorded it, with the values of keys added since
    then filled in as the code that recorded it worked: an OATH setting without
    ``oath_resize`` was resized in float64 (``OATH_RESIZE_BEFORE``). None stays None."""
    if setting is None:
        return None
    if setting.get("fov") == "oath" and "oath_resize" not in setting:
        return {**setting, "oath_resize": OATH_RESIZE_BEFORE}
    return dict(setting)

"""Where everything sits in the store (format 2): site-year groups with fixed slots.

::

    STORE/                       root: aurora_store_format = 2, aurora_preprocess (the one setting),
                                 aurora_sites ({site: [years]}), CF title/source/history
      <site>/<YYYY>/             one group per site-year
        frames    (slot, y, x)   uint8, chunks of whole hours (FRAMES_CHUNK_BYTES each at most)
        embedding (slot, feature) float32, EMBEDDING_CHUNK slots a chunk (never spans two hours)
        time      (slot)         int64 ms since 1970, _FillValue -1      } written by the driver only,
        label     (slot)         int8, _FillValue -1, CF flags          } in chunks of SMALL_CHUNK_HOURS
        label_probability (slot, class) float32, NaN fill               } hours (one writer: no sharing)
        cluster   (slot)         int16, _FillValue -1                   }
        hour_*    (hour)         the per-hour facts (see facts.py), one chunk per site-year
      failures/  runs/           append-only tables (see tables.py)

Hour ``h`` of the year (hours since 1 January 00 UT) owns slots ``[h*C, (h+1)*C)`` with
``C = SLOTS_PER_HOUR``; frame ``i`` of the hour's archive file sits at slot ``h*C + i``.
Every write is keyed by that position: a late hour, a rerun or a re-issued file writes
its own slots and nothing else moves. Unwritten chunks are never stored (fill values).

Why the small per-frame arrays span several hours: each chunk is one object to open
(about 1.5 ms each on the 2-core development machine, several requests on S3), so one
chunk per hour would make every read O(hours). They are written only by the run's
driver, under the site's lock, so no two writers ever share one of their chunks; the
big arrays (frames, embedding), written in parallel by workers, keep whole-hour chunks.
"""

from __future__ import annotations

import calendar

import numpy as np

from aurora_pipeline.hours import to_hour

STORE_FORMAT_VERSION = 2
FORMAT_ATTR = "aurora_store_format"
SLOTS_PER_HOUR = 1536        # capacity C of an hour: 1,200 frames at 3 s cadence plus 28% headroom
FRAMES_CHUNK_BYTES = 2 << 20  # frames chunks of at most 2 MiB (a whole number of them per hour)
# zstd level of the frames of a new store (a store keeps the codec it was made with). On the real Gakona
# frames level 2 stores 34.2% of the raw bytes against 34.1% at zarr's default 3 (32.4 / 31.6% on the
# synthetic archive) for 37% less CPU (0.037 against 0.058 s an hour file); level 1 costs +4% bytes.
FRAMES_ZSTD_LEVEL = 2
EMBEDDING_CHUNK = 256        # embedding slots a chunk: 512 KiB of float32 at 512 features, 6 chunks an hour
SMALL_CHUNK_HOURS = 96       # time/label/probability/cluster: 4 days of slots a chunk
TIME_UNITS = "milliseconds since 1970-01-01"


def hours_in_year(year: int) -> int:
    return 8784 if calendar.isleap(int(year)) else 8760


def year_path(site: str, year: int) -> str:
    return f"{site}/{int(year):04d}"


def hour_position(hour) -> tuple[int, int]:
    """``(year, hour index within the year)`` of an hour (any form ``to_hour`` takes)."""
    h = to_hour(hour)
    year = int(str(h)[:4])
    first = np.datetime64(f"{year:04d}-01-01T00", "h")
    return year, int((h - first).astype(int))


def hour_at(year: int, hour_of_year: int | np.ndarray) -> np.ndarray:
    """The hour(s) (datetime64[h]) at ``hour_of_year`` of ``year`` (0 is its first hour)."""
    return np.datetime64(f"{int(year):04d}-01-01T00", "h") + np.asarray(hour_of_year).astype("timedelta64[h]")


def hour_slots(hour_of_year: int) -> slice:
    """The slots an hour owns."""
    return slice(hour_of_year * SLOTS_PER_HOUR, (hour_of_year + 1) * SLOTS_PER_HOUR)


def frames_chunk(image_size: int) -> int:
    """Frames per chunk: the largest divisor of C whose chunk stays within FRAMES_CHUNK_BYTES."""
    per_frame = int(image_size) ** 2
    for n in sorted((d for d in range(1, SLOTS_PER_HOUR + 1) if SLOTS_PER_HOUR % d == 0), reverse=True):
        if n * per_frame <= FRAMES_CHUNK_BYTES:
            return n
    return 1


def small_chunk() -> int:
    return SMALL_CHUNK_HOURS * SLOTS_PER_HOUR


def frame_id(site_number: int, year: int, slot: int | np.ndarray) -> np.ndarray:
    """Pack a frame's position into one int64: site number (< 2^20), year, slot (< 2^24)."""
    return (np.int64(site_number) << np.int64(40)) | (np.int64(year) << np.int64(24)) | np.asarray(slot, dtype=np.int64)


def split_frame_id(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``frame_id``: (site numbers, years, slots)."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> 40, (ids >> 24) & 0xFFFF, ids & 0xFFFFFF

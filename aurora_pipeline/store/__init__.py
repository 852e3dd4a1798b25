"""The Zarr side: layout and format, region writes, per-hour facts, reads and tables (no models).

    >>> from aurora_pipeline.store import Store, open_site, open_sites, read_inventory
    >>> st = open_store("store.zarr")              # refuses other formats with the fix
    >>> ds = open_site(st, "gako", "2011-01-06T04", "2011-01-06T06")

See layout.py for where everything sits and writer.py for the write protocol.
"""

from aurora_pipeline.store.core import Store, StoreLike, open_store
from aurora_pipeline.store.layout import SLOTS_PER_HOUR, frame_id, split_frame_id
from aurora_pipeline.store.read import hour_facts, open_site, open_sites, read_hour, read_inventory, read_slots

__all__ = ["SLOTS_PER_HOUR", "Store", "StoreLike", "frame_id", "open_store", "hour_facts", "open_site", "open_sites", "read_hour",
           "read_inventory", "read_slots", "split_frame_id"]

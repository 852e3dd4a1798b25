"""A short, human-readable summary of a store (sites, frames, time span, variables)."""

from __future__ import annotations

from aurora_pipeline.store.failures import read_failures
from aurora_pipeline.store.zarr_layout import list_hours, list_sites, open_site, zarr_store


def describe_store(store, storage_options: dict | None = None) -> dict:
    """Per-site frame counts, time spans and variables, plus the number of recorded failures."""
    zs = zarr_store(store, storage_options, read_only=True)
    sites = {}
    lines = []
    for site in list_sites(zs):
        if not list_hours(zs, site):
            continue
        ds = open_site(store, site, storage_options=storage_options)
        first, last = str(ds.time.values[0])[:23], str(ds.time.values[-1])[:23]
        sites[site] = {"frames": int(ds.sizes["time"]), "first": first, "last": last,
                       "hours": int(ds.attrs["aurora_hours"]), "variables": sorted(ds.data_vars)}
        lines.append(f"{site}: {ds.sizes['time']} frames in {ds.attrs['aurora_hours']} hour(s), "
                     f"{first} .. {last}; variables: {', '.join(sorted(ds.data_vars))}")
    failures = read_failures(zs)
    lines.append(f"failures recorded: {len(failures)}")
    return {"sites": sites, "failures": int(len(failures)), "lines": lines}


def run_summary_markdown(summary: dict) -> str:
    """A nightly run's summary as a markdown table (for the Prefect artifact)."""
    lines = ["| item | value |", "|---|---|"]
    for key, value in summary.items():
        if isinstance(value, (list, dict)):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else f"{len(value)}: " + "; ".join(map(str, value[:20]))
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)

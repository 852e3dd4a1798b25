"""A short, human-readable summary of a store (sites, frames, time span, stages done) and of a nightly run."""

from __future__ import annotations

from aurora_pipeline.store import hour_facts, open_site, open_store
from aurora_pipeline.store.failures import read_failures
from aurora_pipeline.store.core import StoreLike

# hour facts that say a stage is done for an hour ("" = not yet), and the stage's name
_STAGES = {"embedding_model": "embedded", "classifier": "labelled", "centroids": "clustered"}


def describe_store(store: StoreLike, storage_options: dict | None = None) -> dict:
    """Per-site frame counts, time spans, variables and hours done per stage, plus the number of
    files still failing. Returns ``{"sites": {site: {...}}, "failures": n, "lines": [str]}``."""
    st = open_store(store, storage_options)
    sites, lines = {}, []
    for site in st.sites():
        facts = hour_facts(st, site)
        if facts.empty:
            continue
        ds = open_site(st, site)
        first, last = str(ds.time.values[0])[:23], str(ds.time.values[-1])[:23]
        stages = {name: int((facts[fact] != "").sum()) for fact, name in _STAGES.items() if fact in facts}
        sites[site] = {"frames": int(ds.sizes["time"]), "first": first, "last": last, "hours": int(len(facts)),
                       "variables": sorted(ds.data_vars), "hours_done": stages}
        done = ", ".join(f"{n} {name}" for name, n in stages.items())
        lines.append(f"{site}: {ds.sizes['time']} frames in {len(facts)} hour(s), {first} .. {last}; "
                     f"variables: {', '.join(sorted(ds.data_vars))}; hours {done}")
    failures = read_failures(st)
    lines.append(f"failures recorded: {len(failures)}")
    return {"sites": sites, "failures": int(len(failures)), "lines": lines}


def run_summary_markdown(summary: dict) -> str:
    """A nightly run's summary as a markdown table (for the Prefect artifact).

    Lists show their length and up to 20 items; an empty list or mapping shows "none"."""
    lines = ["| item | value |", "|---|---|"]
    for key, value in summary.items():
        lines.append(f"| {key} | {_cell(value)} |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    elif isinstance(value, (list, tuple)):
        text = f"{len(value)}: " + "; ".join(map(str, value[:20])) if value else "none"
        if len(value) > 20:
            text += f"; ... ({len(value) - 20} more)"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")  # a cell stays one table cell

"""The nightly run's summary artifact: every item on one row, empty lists and mappings as "none"."""

from aurora_pipeline.summary import run_summary_markdown


def test_a_night_with_nothing_new_renders_its_time_and_no_failures_as_none():
    summary = {"archive": "demo_out/archive", "files_new": 0, "failures": [], "label_counts": {},
               "find_seconds": 0.12, "total_seconds": 0.31}
    rows = run_summary_markdown(summary).splitlines()
    assert rows[:2] == ["| item | value |", "|---|---|"]
    assert "| failures | none |" in rows and "| label_counts | none |" in rows
    assert "| total_seconds | 0.31 |" in rows
    assert not any("0:" in row for row in rows)


def test_long_lists_are_cut_and_cells_stay_cells():
    summary = {"failures": [f"f{i}.cdf: truncated | bad" for i in range(25)], "label_counts": {"arc": 3, "clear": 1}}
    rows = run_summary_markdown(summary).splitlines()
    failures = next(r for r in rows if r.startswith("| failures |"))
    assert failures.startswith("| failures | 25: f0.cdf: truncated \\| bad;") and failures.endswith("(5 more) |")
    assert "| label_counts | arc: 3, clear: 1 |" in rows

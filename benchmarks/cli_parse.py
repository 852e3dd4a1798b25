"""The command line's parse path, this tree beside a baseline tree: what a command pays before any work.

Three things, each a fresh process, the two trees alternating (ABBA order) so a change in the
machine's load falls on both:

- ``python -c "import aurora_cli.main"``: what a command the warm runner takes pays before it
  hands over;
- ``aurora-pipeline server status --help``: the import, the options built from the stage
  configs, the parse;
- ``aurora-pipeline server status``: the same, the value checks, and the status of the local
  server (none running: a new, empty PREFECT_HOME each run; exit code 1).

The trees are put first on PYTHONPATH, so the same interpreter and packages run both; the
baseline is any other checkout, e.g. ``git worktree add /tmp/old 2d0dbf9``. Also printed: the
heavy libraries each tree's parse leaves in ``sys.modules``.

    cd benchmarks && PYTHONPATH=$PWD/.. ../.venv/bin/python cli_parse.py --baseline /tmp/old [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import command_line

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "faiss", "sklearn", "matplotlib", "prefect", "scipy", "dask", "numpy", "pandas", "xarray", "zarr")
PROBE = ("import json, sys\nimport aurora_cli.main as cli\nargs = cli.build_parser().parse_args(['server', 'status'])\n"
         "cli.check_values(args)\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (HEAVY,))
CASES = {
    "python -c 'import aurora_cli.main'": [sys.executable, "-c", "import aurora_cli.main"],
    "aurora-pipeline server status --help": [str(BIN / "aurora-pipeline"), "server", "status", "--help"],
    "aurora-pipeline server status": [str(BIN / "aurora-pipeline"), "server", "status"],
}


def _env(tree: Path, home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the local server's status, not another's
    return {**env, "PYTHONPATH": str(tree), "PREFECT_HOME": home}


def run_once(tree: Path, argv: list[str]) -> float:
    """Wall seconds of ``argv`` run on ``tree`` with a new, empty Prefect home."""
    with tempfile.TemporaryDirectory(prefix="cli-parse-home-") as home:
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=tree, env=_env(tree, home), capture_output=True, text=True)
        took = time.perf_counter() - started
    if done.returncode not in (0, 1):  # `server status` with no server: 1
        raise SystemExit(f"{' '.join(argv)} on {tree} failed ({done.returncode}):\n{done.stderr}")
    return took


def heavy_modules(tree: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="cli-parse-home-") as home:
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=tree, env=_env(tree, home), capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this tree": HERE}
    print(command_line())
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; trees: " +
          ", ".join(f"{k} {v}" for k, v in trees.items()))
    times = {(case, name): [] for case in CASES for name in trees}
    for r in range(args.repeats):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for case, argv in CASES.items():
            for name in order:
                times[case, name].append(run_once(trees[name], argv))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"\n| | baseline median of {args.repeats} (s) | this tree (s) | ratio |\n|---|---:|---:|---:|")
    for case in CASES:
        old, new = (statistics.median(times[case, name]) for name in trees)
        print(f"| `{case}` | {old:.3f} | {new:.3f} | {new / old:.2f}x |")
    for name, tree in trees.items():
        print(f"{name}: the parse of `server status` imports {heavy_modules(tree) or 'none'} of {', '.join(HEAVY)}")
    print("\nruns (s): " + json.dumps({f"{case} / {name}": [round(t, 3) for t in ts]
                                       for (case, name), ts in times.items()}))


if __name__ == "__main__":
    main()

"""Every concrete command line the READMEs print parses as the program would take it.

The README's shell blocks are not all runnable here (`make demo` takes minutes; `prefect
deploy` schedules real downloads), so this test checks what can drift silently between
a README and the code: each ``aurora-pipeline ...`` line (not the synopsis lines, which use
``[...]`` and ``a|b``) is parsed by the CLI's own parser, and each ``prefect deployment run
FLOW/DEPLOYMENT -p key=value`` names a deployment of deployments/prefect.yaml and only
parameters of its flow. The Python blocks marked for it run on the demo's store
(tests/flows/test_demo.py).
"""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

from aurora_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "deployments" / "README.md"]


def shell_lines(readme: Path) -> list[tuple[int, str]]:
    """(line number, command) of every command in the ```bash blocks, continuations joined, comments cut."""
    out, block, joined, start = [], False, "", 0
    for number, line in enumerate(readme.read_text().splitlines(), 1):
        text = line.strip()
        if text.startswith("```"):
            block = text == "```bash"
            continue
        if not block or (not joined and (not text or text.startswith("#"))):
            continue
        code = re.sub(r"\s+#\s.*$", "", text)  # a trailing comment
        start = start or number
        if code.endswith("\\"):
            joined += code[:-1] + " "
            continue
        out.append((start, (joined + code).strip().rstrip("&").strip()))
        joined, start = "", 0
    return out


def _commands(prefix: str) -> list[tuple[str, str]]:
    found = []
    for readme in READMES:
        for number, command in shell_lines(readme):
            words = shlex.split(command)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value before the command
                words = words[1:]
            if words and words[0].endswith(prefix.split()[0]) and " ".join(words[: len(prefix.split())]).endswith(prefix):
                found.append((f"{readme.relative_to(ROOT)}:{number}", words))
    return found


CLI_LINES = [(where, words) for where, words in _commands("aurora-pipeline")
             if not any(mark in " ".join(words) for mark in ("[", "|", "..", "(", "<"))]
RUN_LINES = _commands("prefect deployment run")


def test_the_readmes_show_commands_to_check():
    assert len(CLI_LINES) >= 10 and len(RUN_LINES) >= 2, (CLI_LINES, RUN_LINES)


@pytest.mark.parametrize("where,words", CLI_LINES, ids=[w for w, _ in CLI_LINES])
def test_each_command_line_parses(where, words):
    parser = build_parser()
    try:
        parser.parse_args(words[1:])
    except SystemExit as stop:  # argparse's way of refusing; the message went to stderr
        pytest.fail(f"{where}: `{' '.join(words)}` is refused by the CLI's parser (exit {stop.code})")


def _deployments() -> dict[str, str]:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    out = {}
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        out[f"{flow.name}/{deployment['name']}"] = flow
    return out


@pytest.mark.parametrize("where,words", RUN_LINES, ids=[w for w, _ in RUN_LINES])
def test_each_deployment_run_names_a_deployment_and_its_parameters(where, words):
    deployments = _deployments()
    target = words[3]
    assert target in deployments, f"{where}: no deployment {target} in deployments/prefect.yaml ({sorted(deployments)})"
    parameters = set(inspect.signature(deployments[target].fn).parameters)
    given = [words[i + 1].split("=", 1)[0] for i, w in enumerate(words) if w in ("-p", "--param")]
    unknown = sorted(set(given) - parameters)
    assert not unknown, f"{where}: {target} has no parameter(s) {unknown}; it takes {sorted(parameters)}"

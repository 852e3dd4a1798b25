"""The README's code blocks that run on the demo's store, extracted and run as a user would.

A fenced ```python block right after the line ``<!-- run on the demo's store -->`` is one of
them. They run in order, in one Python process (a later block uses the names of an earlier
one, as in a user's session), with ``demo_out/`` pointing at the demo folder given. A block
that prints shows what it printed as comment lines after its code (``# ...``);
``printed_shape`` masks the decimal figures, which depend on the short pretraining, so a
test compares the rest (row and column names, which rows exist) with a run on its own demo.

    python tests/readme_blocks.py README.md demo_out    # prints each block's output (to paste)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MARK = "<!-- run on the demo's store -->"
_SEPARATOR = "----- aurora-pipeline README block {} -----"
_RUNNER = """
import json, sys
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__readme__"}
for i, code in enumerate(blocks):
    print(%r.format(i), flush=True)
    exec(compile(code, f"README block {i}", "exec"), namespace)
""" % _SEPARATOR


@dataclass(frozen=True)
class Block:
    line: int             # 1-based line of the README where the code starts
    code: str             # the block's text, comment lines included
    printed: list[str]    # the comment lines after the block's last code line, without "# "


def demo_store_blocks(readme: str | Path) -> list[Block]:
    """The marked python blocks of ``readme``, in order."""
    lines = Path(readme).read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
            raise ValueError(f"{readme}:{i + 1}: {MARK} must be followed by a ```python block")
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        body = lines[i + 2:end]
        last_code = max((k for k, text in enumerate(body) if text.strip() and not text.lstrip().startswith("#")),
                        default=-1)
        printed = [text.lstrip()[2:] if text.lstrip().startswith("# ") else text.lstrip()[1:]
                   for text in body[last_code + 1:] if text.lstrip().startswith("#")] \
            if any("print(" in text for text in body) else []
        blocks.append(Block(i + 3, "\n".join(body), printed))
    return blocks


def run_blocks(blocks: list[Block], demo_dir: str | Path, *, python: str = sys.executable,
               timeout_s: float = 600) -> list[list[str]]:
    """Run ``blocks`` in one process with ``demo_out/`` meaning ``demo_dir``; each block's printed lines.

    Raises:
        AssertionError: a block raised (its traceback is in the message).
    """
    codes = [b.code.replace("demo_out/", f"{Path(demo_dir).as_posix()}/") for b in blocks]
    done = subprocess.run([python, "-c", _RUNNER], input=json.dumps(codes), capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode == 0, f"a README block failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    out: list[list[str]] = []
    for line in done.stdout.splitlines():
        if re.fullmatch(_SEPARATOR.format(r"\d+"), line):
            out.append([])
        elif out:
            out[-1].append(line)
    return out


def printed_shape(lines: list[str]) -> list[list[str]]:
    """``lines`` as words, with every decimal figure (0.43, 1.0, nan) replaced by ``#``."""
    return [[re.sub(r"^-?(\d+\.\d*|nan)$", "#", word) for word in line.split()] for line in lines if line.strip()]


if __name__ == "__main__":
    readme, demo = sys.argv[1:3]
    found = demo_store_blocks(readme)
    for block, printed in zip(found, run_blocks(found, demo)):
        print(f"README line {block.line}:")
        print("\n".join(f"# {line}" for line in printed))

"""Command-line options built from the stage configs' fields: one place for each default.

``config_option(parser, PretrainConfig, "epochs")`` adds ``--epochs`` with the field's type,
its default and, as help, the comment beside the field in the dataclass (with the
default appended). A boolean field that defaults to true becomes ``--no-NAME``. The
configs imported here import no torch (``aurora_pipeline.encoder.config``,
``aurora_pipeline.embed.config``...), so building the parser stays light.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
FIRST_HOUR_HELP = "first hour, ISO 8601 UT, e.g. 2011-01-06T04"
_NO_DEFAULT = object()


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in ``cls``'s source: the text after ``#`` on its line and on the
    comment-only lines that follow it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(token.start[0])
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line, parts = node.lineno, []
            while line in comments and (line == node.lineno or line not in code_lines):
                parts.append(comments[line])
                line += 1
            out[node.target.id] = " ".join(parts)
    return out


def field_type(cls: type, name: str) -> type:
    """The Python type of field ``name`` for argparse: int, float, str or bool (``X | None`` is X)."""
    annotation = str({f.name: f for f in dataclasses.fields(cls)}[name].type)
    base = [part.strip() for part in annotation.split("|") if part.strip() != "None"]
    return _TYPES.get(base[0], str) if len(base) == 1 else str


def field_default(cls: type, name: str):
    """The default of field ``name`` of the dataclass ``cls``."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def config_option(parser: argparse.ArgumentParser, cls: type, name: str, *flags: str, help: str | None = None,
                  default=_NO_DEFAULT, **kwargs) -> argparse.Action:
    """Add the option for field ``name`` of ``cls``: ``--name-with-dashes`` unless ``flags`` are
    given, ``dest=name``, the field's type and default (``default`` only where the command
    means something else by leaving it out, e.g. "the store's setting"), help from the field's
    comment unless ``help`` is given. A true-by-default boolean becomes ``--no-name``."""
    value = field_default(cls, name) if default is _NO_DEFAULT else default
    text = (help if help is not None else field_comments(cls).get(name, "")).replace("%", "%%")
    kind = field_type(cls, name)
    if kind is bool:
        flag = flags or (f"--{'no-' if value else ''}{name.replace('_', '-')}",)
        return parser.add_argument(*flag, dest=name, action="store_false" if value else "store_true",
                                   default=value, help=text, **kwargs)
    flag = flags or (f"--{name.replace('_', '-')}",)
    shown = "none" if value is None else value
    kwargs.setdefault("type", kind)
    return parser.add_argument(*flag, dest=name, default=value,
                               help=f"{text} (default {shown})" if default is _NO_DEFAULT else text, **kwargs)


def add_range(parser: argparse.ArgumentParser, start_help: str = FIRST_HOUR_HELP) -> None:
    """``--sites``, ``--start`` and ``--end``: which sites and which span of UT a command works on
    (checked once, at the edge, by ``aurora_cli.main.check_values``)."""
    parser.add_argument("--sites", help="comma-separated four-letter site codes, e.g. gako,gill (default: all)")
    parser.add_argument("--start", help=start_help)
    parser.add_argument("--end", help="end (exclusive), ISO 8601 UT")

"""The ProX program language and its parser.

A program is one call per line. Calls (with the aliases seen upstream):

- document level: ``drop_doc()``, ``keep_doc()``;
- chunk level: ``remove_lines(line_start=<int>, line_end=<int>)`` (also ``start=``/``end=``,
  or two positional integers), ``normalize(source_str="<text>", target_str="<text>")``
  (keyword or positional, either quote style), and the no-op ``keep_chunk()`` /
  ``skip_chunk()`` / ``untouch_doc()``.

Each line is parsed with Python's ``ast`` in expression mode and accepted only if it is a
call of a whitelisted name with literal arguments; nothing is evaluated. A line that is not
such a call is one *error* (counted as upstream counts them); the other lines still count.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

NOOPS = ("keep_chunk", "skip_chunk", "untouch_doc")
MAX_LINE = 10_000  # characters of one call; longer lines are errors, not parsed
MAX_LINES = 2_000


@dataclass(frozen=True)
class Call:
    name: str  # canonical: drop_doc, keep_doc, remove_lines, normalize, noop
    args: tuple = ()


@dataclass
class Program:
    calls: list[Call] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def ops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.calls:
            out[c.name] = out.get(c.name, 0) + 1
        return out


class ProgramError(ValueError):
    """One call could not be accepted; the message says why."""


_SIGNATURES = {
    "remove_lines": (("line_start", "start"), ("line_end", "end")),
    "normalize": (("source_str", "source"), ("target_str", "target")),
}


def _literal(node: ast.AST) -> int | str:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, int) and not isinstance(node.operand.value, bool):
        return -node.operand.value
    raise ProgramError(f"argument {ast.dump(node)[:60]} is not an integer or string literal")


def parse_call(line: str) -> Call:
    """One line → one :class:`Call`, or :class:`ProgramError`."""
    text = line.strip()
    if len(text) > MAX_LINE:
        raise ProgramError(f"call longer than {MAX_LINE} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ProgramError(f"not a call: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ProgramError(f"not a call: {type(exc).__name__}") from None
    node = tree.body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ProgramError("not a call of a known function")
    name = node.func.id
    if name in ("drop_doc", "keep_doc") or name in NOOPS:
        if node.args or node.keywords:
            raise ProgramError(f"{name}() takes no arguments")
        return Call("noop" if name in NOOPS else name)
    if name not in _SIGNATURES:
        raise ProgramError(f"unknown function {name}()")
    params = _SIGNATURES[name]
    if len(node.args) > len(params):
        raise ProgramError(f"{name}() takes {len(params)} arguments")
    values: list[int | str | None] = [None] * len(params)
    for i, arg in enumerate(node.args):
        values[i] = _literal(arg)
    for kw in node.keywords:
        slot = next((i for i, names in enumerate(params) if kw.arg in names), None)
        if slot is None:
            raise ProgramError(f"{name}() has no argument {kw.arg!r}")
        if values[slot] is not None:
            raise ProgramError(f"{name}() got {params[slot][0]} twice")
        values[slot] = _literal(kw.value)
    if any(v is None for v in values):
        raise ProgramError(f"{name}() needs {', '.join(p[0] for p in params)}")
    if name == "remove_lines":
        if not all(isinstance(v, int) for v in values):
            raise ProgramError("remove_lines() takes integers")
        if values[0] < 0 or values[1] < values[0]:
            raise ProgramError(f"remove_lines({values[0]}, {values[1]}): not a range of line numbers")
    elif not all(isinstance(v, str) for v in values):
        raise ProgramError("normalize() takes strings")
    elif values[0] == "":
        raise ProgramError("normalize() with an empty source_str")
    return Call(name, tuple(values))


def parse_program(text: str) -> Program:
    """Every non-empty line parsed on its own; bad lines become errors, never exceptions."""
    program = Program()
    if not isinstance(text, str):
        program.errors.append("program is not text")
        return program
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > MAX_LINES:
        program.errors.append(f"more than {MAX_LINES} calls; the rest ignored")
        lines = lines[:MAX_LINES]
    for ln in lines:
        try:
            program.calls.append(parse_call(ln))
        except ProgramError as exc:
            program.errors.append(str(exc))
    return program


def render(calls: list[Call]) -> str:
    """Calls back to program text (keyword form, double quotes, JSON-style escapes)."""
    import json

    out = []
    for c in calls:
        if c.name == "remove_lines":
            out.append(f"remove_lines(line_start={c.args[0]}, line_end={c.args[1]})")
        elif c.name == "normalize":
            out.append(f"normalize(source_str={json.dumps(c.args[0], ensure_ascii=False)}, "
                       f"target_str={json.dumps(c.args[1], ensure_ascii=False)})")
        elif c.name == "noop":
            out.append("keep_chunk()")
        else:
            out.append(f"{c.name}()")
    return "\n".join(out)

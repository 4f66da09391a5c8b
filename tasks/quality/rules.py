"""Include/exclude rules over attributes and metadata: a small expression language.

An expression is parsed with Python's ``ast`` (never executed) and compiled, node by
whitelisted node, into a ``pyarrow.compute`` expression that Arrow evaluates over a table of
the values the rule may name. Anything outside the whitelist is a :class:`RuleError` that
names the rule. The language (documented in docs/quality.md):

- names: ``id``, ``source``, ``text``, ``chars``, ``words``, ``lines``, any attribute of the
  stage (e.g. ``quality__lid__score``; a span-valued attribute stands for the score of its
  first span), and ``metadata.key`` or ``metadata["key"]`` (a field of the JSON metadata);
- literals: numbers, strings in either quote style, ``True``, ``False``, ``None`` (only in
  ``== None`` / ``!= None``), lists or tuples of literals after ``in`` / ``not in``;
- operators: ``and or not``, comparisons (chains too), ``+ - * /`` (``/`` is true division);
- functions: ``contains(x, "s")``, ``startswith(x, "s")``, ``endswith(x, "s")``,
  ``matches(x, "re2 regex")``, ``lower(x)``, ``length(x)``, ``is_null(x)``, ``abs(x)``.

A comparison with a missing value (null) is false, and so is ``x in [...]``: an ``exclude`` rule
never drops a document for a value it lacks (except through ``not in``); an ``include`` rule does.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

MAX_LENGTH = 4000
MAX_NODES = 400
BUILTIN_NAMES = ("id", "source", "text", "chars", "words", "lines")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class RuleError(ValueError):
    """A rule cannot be parsed, names something unknown, or cannot be evaluated."""


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    mode: str  # "include" or "exclude"
    expr: pc.Expression
    names: frozenset[str]


_COMPARE = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}
_ARITH = {ast.Add: pc.add_checked, ast.Sub: pc.subtract_checked, ast.Mult: pc.multiply_checked}


class _Compiler:
    def __init__(self, rule: str):
        self.rule = rule
        self.names: set[str] = set()

    def fail(self, node: ast.AST | None, msg: str) -> RuleError:
        where = f" (column {node.col_offset + 1})" if node is not None and hasattr(node, "col_offset") else ""
        return RuleError(f"rule {self.rule!r}: {msg}{where}")

    def literal(self, node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
                and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
            return -node.operand.value
        raise self.fail(node, "expected a literal number or string here")

    def string(self, node: ast.AST) -> str:
        value = self.literal(node)
        if not isinstance(value, str):
            raise self.fail(node, "expected a string literal here")
        return value

    def name(self, name: str) -> pc.Expression:
        self.names.add(name)
        return pc.field(name)

    def metadata_key(self, node: ast.AST) -> str:
        key = node.attr if isinstance(node, ast.Attribute) else self.string(node.slice)
        if not _KEY_RE.match(key):
            raise self.fail(node, f"metadata key {key!r} must match {_KEY_RE.pattern}")
        return f"metadata.{key}"

    def compile(self, node: ast.AST) -> pc.Expression:
        if isinstance(node, ast.BoolOp):
            parts = [self.compile(v) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return ~self.compile(node.operand)
            if isinstance(node.op, ast.USub):
                if isinstance(node.operand, ast.Constant):
                    return pc.scalar(self.literal(node))
                return pc.negate_checked(self.compile(node.operand))
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BinOp):
            left, right = self.compile(node.left), self.compile(node.right)
            if isinstance(node.op, ast.Div):
                return pc.divide(left.cast(pa.float64()), right.cast(pa.float64()))
            if type(node.op) in _ARITH:
                return _ARITH[type(node.op)](left, right)
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Constant):
            if node.value is None:
                raise self.fail(node, "None is only allowed in '== None' or '!= None'")
            return pc.scalar(self.literal(node))
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node.value, ast.Name) and node.value.id == "metadata":
                return self.name(self.metadata_key(node))
            raise self.fail(node, "only metadata.<key> or metadata[\"<key>\"] may be looked up")
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"{type(node).__name__} is not allowed in a rule")

    def compare(self, node: ast.Compare) -> pc.Expression:
        out = None
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right_node, (ast.List, ast.Tuple, ast.Set)):
                    raise self.fail(right_node, "'in' needs a list of literals, e.g. ['en', 'de']")
                values = [self.literal(v) for v in right_node.elts]
                if len({type(v) for v in values}) > 1:
                    raise self.fail(right_node, "the values after 'in' must all have one type")
                test = self.compile(left_node).isin(pa.array(values))
                part = ~test if isinstance(op, ast.NotIn) else test
            elif isinstance(op, (ast.Eq, ast.NotEq)) and _is_none(right_node):
                test = self.compile(left_node).is_null()
                part = test if isinstance(op, ast.Eq) else ~test
            elif type(op) in _COMPARE:
                part = _COMPARE[type(op)](self.compile(left_node), self.compile(right_node))
            else:
                raise self.fail(node, f"comparison {type(op).__name__} is not allowed")
            out = part if out is None else (out & part)
            left_node = right_node
        return out

    def call(self, node: ast.Call) -> pc.Expression:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only the listed functions may be called")
        if node.keywords:
            raise self.fail(node, f"{node.func.id}() takes no keyword arguments")
        fn, args = node.func.id, node.args
        one = {"lower": pc.utf8_lower, "length": pc.utf8_length, "abs": pc.abs_checked}
        pattern = {"contains": pc.match_substring, "startswith": pc.starts_with, "endswith": pc.ends_with,
                   "matches": pc.match_substring_regex}
        if fn in one or fn == "is_null":
            if len(args) != 1:
                raise self.fail(node, f"{fn}() takes one argument")
            arg = self.compile(args[0])
            return arg.is_null() if fn == "is_null" else one[fn](arg)
        if fn in pattern:
            if len(args) != 2:
                raise self.fail(node, f"{fn}() takes a value and a string literal")
            text = self.string(args[1])
            if fn == "matches":
                try:  # Arrow's regular expressions are RE2: linear time, no backreferences
                    pc.match_substring_regex(pa.array([""]), pattern=text)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise self.fail(args[1], f"bad regular expression: {exc}") from None
            return pattern[fn](self.compile(args[0]), pattern=text)
        raise self.fail(node, f"unknown function {fn}(); known: contains, startswith, endswith, matches, lower, "
                        "length, is_null, abs")


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def compile_rule(name: str, text: str, mode: str = "exclude") -> Rule:
    """Parse and compile one rule; raises :class:`RuleError` (naming the rule) and nothing else."""
    if mode not in ("include", "exclude"):
        raise RuleError(f"rule {name!r}: mode must be include or exclude, not {mode!r}")
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"rule {name!r}: the expression is empty")
    if len(text) > MAX_LENGTH:
        raise RuleError(f"rule {name!r}: the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"rule {name!r}: syntax error at column {exc.offset}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise RuleError(f"rule {name!r}: cannot parse: {type(exc).__name__}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise RuleError(f"rule {name!r}: the expression has more than {MAX_NODES} parts")
    compiler = _Compiler(name)
    try:
        expr = compiler.compile(tree.body)
    except RecursionError:
        raise RuleError(f"rule {name!r}: the expression is nested too deeply") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise RuleError(f"rule {name!r}: {exc}") from None
    return Rule(name, text, mode, expr, frozenset(compiler.names))


def check_names(rule: Rule, available: set[str]) -> None:
    unknown = sorted(n for n in rule.names if n not in available and not n.startswith("metadata."))
    if unknown:
        raise RuleError(f"rule {rule.name!r}: unknown name(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(available))}, metadata.<key>")


def _rule_value(column: pa.Array) -> pa.Array:
    """What a rule sees of an attribute: span lists stand for their first span's score."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_list(column.type) and pa.types.is_struct(column.type.value_type):
        first = pc.list_element(pc.if_else(pc.greater(pc.list_value_length(column), 0), column, pa.nulls(
            len(column), column.type)), 0)
        return pc.struct_field(first, "score")
    return column


def metadata_column(metadata: pa.Array, key: str) -> pa.Array:
    values = []
    for raw in metadata.to_pylist():
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            obj = None
        v = obj.get(key) if isinstance(obj, dict) else None
        values.append(v if isinstance(v, (int, float, str, bool)) else None)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def rule_table(docs: pa.Table, attributes: dict[str, pa.Array], rules: list[Rule]) -> pa.Table:
    """The values the rules name, one row per document."""
    needed = set().union(*(r.names for r in rules)) if rules else set()
    text = docs.column("text")
    cols: dict[str, pa.Array] = {"__row": pa.array(range(docs.num_rows), pa.int64())}
    builtin = {
        "id": lambda: docs.column("id"), "source": lambda: docs.column("source"), "text": lambda: text,
        "chars": lambda: pc.utf8_length(text),
        "words": lambda: pc.list_value_length(pc.utf8_split_whitespace(text)),
        "lines": lambda: pc.add(pc.count_substring(text, pattern="\n"), 1),
    }
    for name in sorted(needed):
        if name in attributes:
            cols[name] = _rule_value(attributes[name])
        elif name in builtin:
            cols[name] = builtin[name]()
        elif name.startswith("metadata."):
            cols[name] = metadata_column(docs.column("metadata"), name.removeprefix("metadata."))
    return pa.table(cols)


def matches(rule: Rule, table: pa.Table) -> pa.Array:
    """Boolean mask: the rows the rule's expression is true for (null counts as false)."""
    try:
        hit = table.filter(rule.expr).column("__row")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise RuleError(f"rule {rule.name!r} ({rule.source!r}) cannot be evaluated: {exc}") from None
    mask = pc.is_in(table.column("__row"), value_set=hit)
    return mask

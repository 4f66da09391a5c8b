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

A metadata value of the wrong type counts as missing. The type a rule expects of
``metadata.key`` comes from how the rule uses it (compared with a number, a string or a bool,
given to a string function or to arithmetic); a document whose value has another type (the
string ``"n/a"`` where ``metadata.score < 0.05`` expects a number) is "no match" for that
comparison, and is counted per rule in the manifest (``quality.type_mismatches``). Where the
rule does not say (``metadata.a < metadata.b``), the type most values of the shard have wins.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

import numpy as np
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
    names: frozenset[str]  # metadata names carry the kind the rule expects: metadata.score:number


KINDS = ("number", "string", "bool")
_NUMERIC_NAMES = ("chars", "words", "lines")
_STRING_NAMES = ("id", "source", "text")
_STRING_FUNCTIONS = ("contains", "startswith", "endswith", "matches", "lower", "length")


def _literal_kind(value) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else None


def _metadata_ref(node: ast.AST) -> str | None:
    """The key of ``metadata.key`` / ``metadata["key"]``, or None."""
    if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.value, ast.Name) \
            and node.value.id == "metadata":
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            return node.slice.value
    return None


def kind_of(node: ast.AST, names: dict[str, str] | None = None) -> str | None:
    """What an expression evaluates to, where the syntax tells: "number", "string", "bool"
    or None. ``names``: kinds of the attribute names known to the caller."""
    if isinstance(node, ast.Constant):
        return _literal_kind(node.value)
    if isinstance(node, ast.UnaryOp):
        return "bool" if isinstance(node.op, ast.Not) else "number"
    if isinstance(node, ast.BinOp):
        return "number"
    if isinstance(node, (ast.Compare, ast.BoolOp)):
        return "bool"
    if isinstance(node, ast.Name):
        if node.id in _NUMERIC_NAMES:
            return "number"
        if node.id in _STRING_NAMES:
            return "string"
        return (names or {}).get(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return {"lower": "string", "length": "number", "abs": "number"}.get(node.func.id, "bool")
    return None


def expected_metadata_kinds(tree: ast.AST) -> dict[str, str | None]:
    """For each metadata key a rule names, the kind its uses expect (None: no use says, or
    two uses disagree)."""
    seen: dict[str, set[str]] = {}

    def expect(node: ast.AST, kind: str | None) -> None:
        key = _metadata_ref(node)
        if key is not None:
            seen.setdefault(key, set()).update([kind] if kind else [])

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for left, op, right in _pairs(node):
                if isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                    kinds = {_literal_kind(v.value) for v in right.elts if isinstance(v, ast.Constant)}
                    expect(left, kinds.pop() if len(kinds) == 1 else None)
                elif not _is_none(right):
                    expect(left, kind_of(right))
                    expect(right, kind_of(left))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            if node.func.id in _STRING_FUNCTIONS:
                expect(node.args[0], "string")
            elif node.func.id == "abs":
                expect(node.args[0], "number")
        elif isinstance(node, ast.BinOp):
            expect(node.left, "number")
            expect(node.right, "number")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            expect(node.operand, "number")
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                expect(v, "bool")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            expect(node.operand, "bool")
    for node in _bare_metadata(tree):
        expect(node, "bool")
    # two uses that disagree, or none that tells: the shard's values decide
    return {key: next(iter(kinds)) if len(kinds) == 1 else None for key, kinds in seen.items()}


def _bare_metadata(tree: ast.AST) -> list[ast.AST]:
    """A rule that is only ``metadata.flag`` tests it as a bool."""
    body = tree.body if isinstance(tree, ast.Expression) else tree
    return [body] if _metadata_ref(body) is not None else []


_COMPARE = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}
# Arithmetic is done in float64: an integer product beyond 64 bits becomes a large float (and
# compares as one) instead of an overflow error in the middle of a run.
_ARITH = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply}


def _exact(value):
    """An integer literal a float cannot hold exactly is compared as a float: Arrow refuses
    to compare a float column (the result of arithmetic) with such an integer."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return float(value)
    return value


def _num(expr: pc.Expression) -> pc.Expression:
    return expr.cast(pa.float64())


class _Compiler:
    def __init__(self, rule: str, kinds: dict[str, str | None] | None = None):
        self.rule = rule
        self.names: set[str] = set()
        self.kinds = kinds or {}

    def fail(self, node: ast.AST | None, msg: str) -> RuleError:
        where = f" (column {node.col_offset + 1})" if node is not None and hasattr(node, "col_offset") else ""
        return RuleError(f"rule {self.rule!r}: {msg}{where}")

    def literal(self, node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return _exact(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
                and isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
            return _exact(-node.operand.value)
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
                return pc.negate(_num(self.compile(node.operand)))
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BinOp):
            left, right = self.compile(node.left), self.compile(node.right)
            if isinstance(node.op, ast.Div):
                return pc.divide(left.cast(pa.float64()), right.cast(pa.float64()))
            if type(node.op) in _ARITH:
                return _ARITH[type(node.op)](_num(left), _num(right))
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Constant):
            if node.value is None:
                raise self.fail(node, "None is only allowed in '== None' or '!= None'")
            return pc.scalar(self.literal(node))
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node.value, ast.Name) and node.value.id == "metadata":
                key = self.metadata_key(node)
                kind = self.kinds.get(key.removeprefix("metadata."))
                return self.name(f"{key}:{kind}" if kind else key)
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
        one = {"lower": pc.utf8_lower, "length": pc.utf8_length, "abs": lambda x: pc.abs(_num(x))}
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


def _pairs(node: ast.Compare) -> list[tuple[ast.expr, ast.cmpop, ast.expr]]:
    """The operand pairs of a (chained) comparison: ``a < b < c`` is (a, <, b), (b, <, c)."""
    operands = [node.left, *node.comparators]
    return list(zip(operands, node.ops, operands[1:], strict=False))


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
    try:
        compiler = _Compiler(name, expected_metadata_kinds(tree))
        expr = compiler.compile(tree.body)
    except RecursionError:
        raise RuleError(f"rule {name!r}: the expression is nested too deeply") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise RuleError(f"rule {name!r}: {exc}") from None
    return Rule(name, text, mode, expr, frozenset(compiler.names))


def _compatible(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b or {a, b} == {"number", "bool"}


def check_types(rule: Rule, kinds: dict[str, str]) -> None:
    """What can be known before any data: a string compared with a number, a string function
    given a number, arithmetic on a string, a rule that is not a condition. ``kinds``: the
    kind of every known name (metadata values are data, checked per document instead)."""
    tree = ast.parse(rule.source.strip(), mode="eval")

    def k(node: ast.AST) -> str | None:
        return None if _metadata_ref(node) is not None else kind_of(node, kinds)

    def fail(node: ast.AST, msg: str) -> RuleError:
        return RuleError(f"rule {rule.name!r}: {msg} (column {getattr(node, 'col_offset', 0) + 1})")

    if k(tree.body) not in (None, "bool"):
        raise fail(tree.body, f"a rule must be a condition, not a {k(tree.body)}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for left, op, right in _pairs(node):
                if isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                    values = {_literal_kind(v.value) for v in right.elts if isinstance(v, ast.Constant)}
                    if any(not _compatible(k(left), v) for v in values):
                        raise fail(node, f"compares a {k(left)} with a list of {values.pop()}s")
                elif not _is_none(right) and not _compatible(k(left), k(right)):
                    raise fail(node, f"compares a {k(left)} with a {k(right)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            arg = k(node.args[0])
            if node.func.id in _STRING_FUNCTIONS and arg not in (None, "string"):
                raise fail(node, f"{node.func.id}() needs a string, got a {arg}")
            if node.func.id == "abs" and arg == "string":
                raise fail(node, "abs() needs a number, got a string")
        elif isinstance(node, ast.BinOp):
            for side in (node.left, node.right):
                if k(side) == "string":
                    raise fail(node, "arithmetic on a string")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and k(node.operand) == "string":
            raise fail(node, "arithmetic on a string")
        elif isinstance(node, ast.BoolOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
            for v in (node.values if isinstance(node, ast.BoolOp) else [node.operand]):
                if k(v) in ("number", "string"):
                    raise fail(v, f"'and' / 'or' / 'not' need conditions, got a {k(v)}")


def check_names(rule: Rule, available: set[str]) -> None:
    unknown = sorted(n for n in rule.names if n not in available and not n.startswith("metadata."))
    if unknown:
        raise RuleError(f"rule {rule.name!r}: unknown name(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(available))}, metadata.<key>")


def rule_value(column: pa.Array) -> pa.Array:
    """What a rule sees of an attribute: span lists stand for their first span's score."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_list(column.type) and pa.types.is_struct(column.type.value_type):
        first = pc.list_element(pc.if_else(pc.greater(pc.list_value_length(column), 0), column, pa.nulls(
            len(column), column.type)), 0)
        return pc.struct_field(first, "score")
    return column


def _value_kind(v) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "string" if isinstance(v, str) else ("other" if v is not None else None)


_ARROW_KIND = {"number": pa.float64(), "string": pa.string(), "bool": pa.bool_()}


def metadata_column(metadata: pa.Array, key: str, kind: str | None = None) -> tuple[pa.Array, np.ndarray]:
    """The values of ``metadata.key`` as one Arrow column of ``kind`` (default: the kind most
    values have), and a mask of the rows whose value had another type (null in the column)."""
    values = []
    for raw in metadata.to_pylist():
        try:
            obj = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            obj = None
        values.append(obj.get(key) if isinstance(obj, dict) else None)
    kinds = [_value_kind(v) for v in values]
    if kind is None:
        counts = {k: kinds.count(k) for k in KINDS}
        kind = max(KINDS, key=lambda k: counts[k]) if any(counts.values()) else "string"
    wrong = np.array([k is not None and k != kind for k in kinds], dtype=bool)
    kept = []
    for i, v in enumerate(values):
        if wrong[i] or v is None:
            kept.append(None)
        elif kind == "number":
            try:
                kept.append(float(v))
            except OverflowError:  # an integer beyond any float: not a number a rule can compare
                wrong[i] = True
                kept.append(None)
        else:
            kept.append(v)
    return pa.array(kept, _ARROW_KIND[kind]), wrong


def rule_table(docs: pa.Table, attributes: dict[str, pa.Array], rules: list[Rule]) -> pa.Table:
    """The values the rules name, one row per document."""
    return rule_table_checked(docs, attributes, rules)[0]


def rule_table_checked(docs: pa.Table, attributes: dict[str, pa.Array],
                       rules: list[Rule]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """:func:`rule_table` and, per metadata name, the rows whose value had the wrong type."""
    wrong: dict[str, np.ndarray] = {}
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
            cols[name] = rule_value(attributes[name])
        elif name in builtin:
            cols[name] = builtin[name]()
        elif name.startswith("metadata."):
            key, _, kind = name.removeprefix("metadata.").partition(":")
            cols[name], wrong[name] = metadata_column(docs.column("metadata"), key, kind or None)
    return pa.table(cols), wrong


def type_mismatches(rule: Rule, wrong: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The rows for which ``rule`` saw a metadata value of the wrong type."""
    out = np.zeros(n, dtype=bool)
    for name in rule.names:
        if name in wrong:
            out |= wrong[name]
    return out


def matches(rule: Rule, table: pa.Table) -> pa.Array:
    """Boolean mask: the rows the rule's expression is true for (null counts as false)."""
    try:
        hit = table.filter(rule.expr).column("__row")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise RuleError(f"rule {rule.name!r} ({rule.source!r}) cannot be evaluated: {exc}") from None
    mask = pc.is_in(table.column("__row"), value_set=hit)
    return mask

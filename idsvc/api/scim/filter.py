"""SCIM filter expressions (RFC 7644 §3.4.2.2): a bounded tokenizer, a recursive-descent parser
and an evaluator over SCIM JSON resources (plain dicts).

What it does: parses ``attrPath op value``, ``attrPath pr``, ``and`` / ``or`` (``and`` binds
tighter), ``not (…)``, parentheses and value paths ``emails[type eq "work"]``, including the form
``emails[type eq "work"].value eq "x"`` that Entra ID sends (it means: some element of ``emails``
matches the bracket filter *and* has ``value eq "x"``). Attribute names may carry a schema URN
(``urn:ietf:params:scim:schemas:core:2.0:User:userName``) and are compared case-insensitively.
:func:`evaluate` applies a parsed filter to one resource; :func:`equalities` lists the top-level
``eq`` conjuncts so a caller can use an index instead of a scan.

What it does not do: know the schema. String comparison is case-insensitive except for the
attribute names given in ``case_exact``; ordering compares like types only (strings, numbers).

How it fails: every malformed input raises :class:`FilterError` (mapped to SCIM ``invalidFilter``)
with a short message; input longer than :data:`MAX_FILTER` characters, more than
:data:`MAX_TOKENS` tokens or nesting deeper than :data:`MAX_DEPTH` is refused before evaluation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from idsvc.errors import InvalidInput

MAX_FILTER = 1024
MAX_TOKENS = 256
MAX_DEPTH = 16

COMPARE_OPS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
Scalar = str | int | float | bool | None


class FilterError(InvalidInput):
    """The filter is not a valid SCIM filter (SCIM ``scimType: invalidFilter``)."""


@dataclass(frozen=True, slots=True)
class AttrPath:
    """``[schema ":"] attr ["." sub]``; ``attr``/``sub`` keep the client's spelling."""

    attr: str
    sub: str | None = None
    schema: str | None = None

    def __str__(self) -> str:
        text = self.attr if self.sub is None else f"{self.attr}.{self.sub}"
        return text if self.schema is None else f"{self.schema}:{text}"


@dataclass(frozen=True, slots=True)
class Compare:
    path: AttrPath
    op: str
    value: Scalar


@dataclass(frozen=True, slots=True)
class Present:
    path: AttrPath


@dataclass(frozen=True, slots=True)
class And:
    left: Filter
    right: Filter


@dataclass(frozen=True, slots=True)
class Or:
    left: Filter
    right: Filter


@dataclass(frozen=True, slots=True)
class Not:
    inner: Filter


@dataclass(frozen=True, slots=True)
class ValuePath:
    """Some element of the multi-valued ``path`` satisfies ``inner`` (evaluated on the element)."""

    path: AttrPath
    inner: Filter


Filter = Compare | Present | And | Or | Not | ValuePath

# -- tokenizer ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t]+)
  | (?P<punct>[()\[\]])
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\.)*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9_:.$-]))
  | (?P<word>[A-Za-z0-9_:.$-]+)
    """,
    re.VERBOSE,
)
_NAME = re.compile(r"\$ref|[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # punct | string | number | word
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FilterError(f"unexpected character at position {pos + 1}")
        kind = m.lastgroup or ""
        if kind != "space":
            out.append(_Tok(kind, m.group(), pos))
            if len(out) > MAX_TOKENS:
                raise FilterError(f"filter has more than {MAX_TOKENS} tokens")
        pos = m.end()
    return out


def parse_attr_path(text: str) -> AttrPath:
    """Parse ``[urn:…:]attr[.sub]`` (also used for PATCH paths and ``attributes``)."""
    if not text or len(text) > 512:
        raise FilterError("empty or over-long attribute path")
    schema: str | None = None
    rest = text
    if ":" in text:
        schema, _, rest = text.rpartition(":")
        if not schema.lower().startswith("urn:"):
            raise FilterError(f"invalid attribute path {text[:64]!r}")
    attr, dot, sub = rest.partition(".")
    if not _NAME.fullmatch(attr) or (dot and not _NAME.fullmatch(sub)):
        raise FilterError(f"invalid attribute path {text[:64]!r}")
    return AttrPath(attr, sub if dot else None, schema)


# -- parser -------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.toks = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise FilterError(f"filter ends early; expected {what}")
        self.i += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok.kind == "word" and tok.text.lower() in words:
            self.i += 1
            return tok.text.lower()
        return None

    def expect(self, punct: str) -> None:
        tok = self.next(f"'{punct}'")
        if tok.text != punct or tok.kind != "punct":
            raise FilterError(f"expected '{punct}' at position {tok.pos + 1}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"filter nested deeper than {MAX_DEPTH}")

    def parse_or(self) -> Filter:
        self.enter()
        node = self.parse_and()
        while self.keyword("or"):
            node = Or(node, self.parse_and())
        self.depth -= 1
        return node

    def parse_and(self) -> Filter:
        node = self.parse_unary()
        while self.keyword("and"):
            node = And(node, self.parse_unary())
        return node

    def parse_unary(self) -> Filter:
        tok = self.peek()
        if tok is not None and tok.kind == "word" and tok.text.lower() == "not":
            follow = self.toks[self.i + 1] if self.i + 1 < len(self.toks) else None
            if follow is not None and follow.text == "(":
                self.i += 1
                self.expect("(")
                inner = self.parse_or()
                self.expect(")")
                return Not(inner)
        if tok is not None and tok.kind == "punct" and tok.text == "(":
            self.i += 1
            inner = self.parse_or()
            self.expect(")")
            return inner
        return self.parse_attr_expr()

    def parse_attr_expr(self) -> Filter:
        tok = self.next("an attribute name")
        if tok.kind != "word":
            raise FilterError(f"expected an attribute name at position {tok.pos + 1}")
        path = parse_attr_path(tok.text)
        nxt = self.peek()
        if nxt is not None and nxt.kind == "punct" and nxt.text == "[":
            if path.sub is not None:
                raise FilterError("a value filter applies to an attribute, not a sub-attribute")
            self.i += 1
            inner = self.parse_or()
            self.expect("]")
            after = self.peek()
            if after is not None and after.kind == "word" and after.text.startswith("."):
                self.i += 1
                sub = parse_attr_path(after.text[1:])
                if sub.sub is not None or sub.schema is not None:
                    raise FilterError("invalid sub-attribute after a value filter")
                return ValuePath(path, And(inner, self.parse_operation(AttrPath(sub.attr))))
            return ValuePath(path, inner)
        return self.parse_operation(path)

    def parse_operation(self, path: AttrPath) -> Filter:
        op_tok = self.next("an operator")
        op = op_tok.text.lower()
        if op_tok.kind != "word" or (op != "pr" and op not in COMPARE_OPS):
            raise FilterError(f"unknown operator at position {op_tok.pos + 1}")
        if op == "pr":
            return Present(path)
        return Compare(path, op, self.parse_value())

    def parse_value(self) -> Scalar:
        tok = self.next("a value")
        if tok.kind == "string":
            try:
                value = json.loads(tok.text)
            except ValueError as exc:
                raise FilterError(f"bad string at position {tok.pos + 1}") from exc
            assert isinstance(value, str)
            return value
        if tok.kind == "number":
            number = float(tok.text)
            return int(number) if number.is_integer() and "." not in tok.text else number
        if tok.kind == "word":
            word = tok.text.lower()
            if word in ("true", "false"):
                return word == "true"
            if word == "null":
                return None
        raise FilterError(f"expected a value (string, number, true, false, null) at {tok.pos + 1}")


def parse(text: str) -> Filter:
    """Parse a SCIM filter or raise :class:`FilterError`."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("empty filter")
    if len(text) > MAX_FILTER:
        raise FilterError(f"filter longer than {MAX_FILTER} characters")
    parser = _Parser(_tokens(text))
    node = parser.parse_or()
    extra = parser.peek()
    if extra is not None:
        raise FilterError(f"unexpected {extra.text[:20]!r} at position {extra.pos + 1}")
    return node


# -- evaluation ---------------------------------------------------------------------------------


def lookup(data: Mapping[str, Any], name: str) -> Any:
    """``data[name]`` with a case-insensitive key match; None when absent."""
    if name in data:
        return data[name]
    low = name.lower()
    for key, value in data.items():
        if key.lower() == low:
            return value
    return None


def _scope(resource: Mapping[str, Any], path: AttrPath) -> Mapping[str, Any]:
    """The object a path's attribute lives in: the resource, or the extension object its URN
    names (a URN naming the resource's core schema stays on the resource)."""
    if path.schema is None:
        return resource
    ext = lookup(resource, path.schema)
    if isinstance(ext, Mapping):
        return ext
    schemas = [str(s).lower() for s in resource.get("schemas", ())]
    return resource if path.schema.lower() in schemas[:1] else {}


def _values(resource: Mapping[str, Any], path: AttrPath) -> list[Any]:
    """Every value a path designates (multi-valued attributes fan out)."""
    top = lookup(_scope(resource, path), path.attr)
    items = top if isinstance(top, list) else [top]
    out: list[Any] = []
    for item in items:
        if path.sub is not None:
            if isinstance(item, Mapping):
                out.append(lookup(item, path.sub))
        elif isinstance(item, Mapping) and isinstance(top, list):
            out.append(lookup(item, "value"))  # "emails eq x" compares the primary value
        else:
            out.append(item)
    return [v for v in out if v is not None]


def _compare(actual: Any, op: str, expected: Scalar, exact: bool) -> bool:
    if expected is None:
        return (actual is None) == (op == "eq") if op in ("eq", "ne") else False
    if isinstance(expected, bool) or isinstance(actual, bool):
        if not (isinstance(expected, bool) and isinstance(actual, bool)) or op not in ("eq", "ne"):
            return False
        return (actual == expected) == (op == "eq")
    if isinstance(expected, str):
        if not isinstance(actual, str):
            return False
        a, e = (actual, expected) if exact else (actual.lower(), expected.lower())
    elif isinstance(actual, int | float):
        a, e = actual, expected  # type: ignore[assignment]
    else:
        return False
    if op == "eq":
        return bool(a == e)
    if op == "ne":
        return bool(a != e)
    if op in ("co", "sw", "ew"):
        if not isinstance(a, str) or not isinstance(e, str):
            return False
        return e in a if op == "co" else a.startswith(e) if op == "sw" else a.endswith(e)
    if op == "gt":
        return bool(a > e)
    if op == "ge":
        return bool(a >= e)
    if op == "lt":
        return bool(a < e)
    return bool(a <= e)  # le


def evaluate(node: Filter, resource: Mapping[str, Any], case_exact: Collection[str] = ()) -> bool:
    """Does ``resource`` (a SCIM JSON object) satisfy ``node``? ``case_exact`` holds lower-case
    attribute names (``externalid``, ``id``) whose strings compare case-sensitively."""
    if isinstance(node, And):
        return evaluate(node.left, resource, case_exact) and evaluate(
            node.right, resource, case_exact
        )
    if isinstance(node, Or):
        return evaluate(node.left, resource, case_exact) or evaluate(
            node.right, resource, case_exact
        )
    if isinstance(node, Not):
        return not evaluate(node.inner, resource, case_exact)
    if isinstance(node, Present):
        return any(v not in ("", [], {}) for v in _values(resource, node.path))
    if isinstance(node, ValuePath):
        items = lookup(_scope(resource, node.path), node.path.attr)
        if not isinstance(items, list):
            items = [] if items is None else [items]
        return any(
            isinstance(item, Mapping) and evaluate(node.inner, item, case_exact) for item in items
        )
    name = (node.path.sub or node.path.attr).lower()
    exact = name in case_exact
    values = _values(resource, node.path)
    if node.op == "ne":
        return not any(_compare(v, "eq", node.value, exact) for v in values)
    if not values:
        return node.op == "eq" and node.value is None
    return any(_compare(v, node.op, node.value, exact) for v in values)


def _conjuncts(node: Filter) -> Iterator[Filter]:
    if isinstance(node, And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def equalities(node: Filter) -> list[tuple[str, Scalar]]:
    """``eq`` comparisons that every match must satisfy, as ``(path, value)`` with the path in
    lower case without a schema URN: ``userName eq "a"`` → ``("username", "a")`` and
    ``emails[type eq "work"].value eq "x"`` → ``("emails.value", "x")``. Used to pick an index."""
    out: list[tuple[str, Scalar]] = []
    for part in _conjuncts(node):
        if isinstance(part, Compare) and part.op == "eq":
            out.append((_plain(part.path), part.value))
        elif isinstance(part, ValuePath):
            for inner in _conjuncts(part.inner):
                if isinstance(inner, Compare) and inner.op == "eq" and inner.path.sub is None:
                    out.append((f"{part.path.attr}.{inner.path.attr}".lower(), inner.value))
    return out


def _plain(path: AttrPath) -> str:
    return (path.attr if path.sub is None else f"{path.attr}.{path.sub}").lower()

"""CometBFT's event query language: parsing, and matching a query against a set of events.

A query is conditions joined by `AND`: `tag op operand` or `tag EXISTS`, where a tag is an
event type and attribute key (`order_filled.maker`) or a reserved name (`tm.event`, `tx.hash`,
`tx.height`, `block.height`); `op` is `=`, `<`, `<=`, `>`, `>=` or `CONTAINS`; an operand is a
quoted string (`'abc'`), a number (`10`, `3.25`), `TIME 2026-12-05T10:00:00Z` or
`DATE 2026-12-05`. Strings take `=` and `CONTAINS`; numbers, times and dates take `=` and the
order operators. A number condition reads the leading number of an attribute value (`"100stake"`
is 100), as CometBFT does; beyond CometBFT's grammar, numbers may be negative (funding rates are).

`Query.matches` is the subscription semantics: a map of tag to values, a condition holds when
one of its tag's values satisfies it. The indexer (`node.indexer`) adds the rule that conditions
on attributes of one event type hold in one event.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from primitives.timefmt import parse_rfc3339

MAX_QUERY_BYTES = 512
"""the longest query accepted (CometBFT's maxQueryLength)"""

EVENT_TYPE_TAG = "tm.event"
TX_HASH_TAG = "tx.hash"
TX_HEIGHT_TAG = "tx.height"
BLOCK_HEIGHT_TAG = "block.height"


class QueryError(ValueError):
    """A query that does not parse; the message says where and what was expected."""


class Op(enum.Enum):
    EQ = "="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    CONTAINS = "CONTAINS"
    EXISTS = "EXISTS"


class Kind(enum.Enum):
    """What an operand is, and so how an attribute value compares with it."""

    STRING = "string"
    NUMBER = "number"
    TIME = "time"
    DATE = "date"


_ORDER = (Op.LT, Op.LE, Op.GT, Op.GE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    tag: str
    op: Op
    kind: Kind | None = None
    """None for EXISTS"""
    text: str = ""
    """the operand as written (the string's content without quotes)"""
    number: Fraction = Fraction(0)
    """a NUMBER operand's value, or a TIME/DATE operand's nanoseconds since the epoch"""

    def __str__(self) -> str:
        if self.op is Op.EXISTS:
            return f"{self.tag} EXISTS"
        match self.kind:
            case Kind.STRING:
                operand = f"'{self.text}'"
            case Kind.NUMBER:
                operand = self.text
            case Kind.TIME:
                operand = f"TIME {self.text}"
            case Kind.DATE:
                operand = f"DATE {self.text}"
            case None:
                raise AssertionError("an operand-less condition is EXISTS")
        return f"{self.tag} {self.op.value} {operand}"

    def holds(self, value: str) -> bool:
        """Whether one attribute value satisfies this condition."""
        if self.op is Op.EXISTS:
            return True
        if self.kind is Kind.STRING:
            return value == self.text if self.op is Op.EQ else self.text in value
        found = _value_number(value) if self.kind is Kind.NUMBER else _value_time(value)
        if found is None:
            return False
        return _compare(self.op, found, self.number)


def _compare(op: Op, left: Fraction, right: Fraction) -> bool:
    match op:
        case Op.EQ:
            return left == right
        case Op.LT:
            return left < right
        case Op.LE:
            return left <= right
        case Op.GT:
            return left > right
        case Op.GE:
            return left >= right
        case Op.CONTAINS | Op.EXISTS:
            raise AssertionError(f"{op.value} does not order")


_LEADING_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)


def _value_number(value: str) -> Fraction | None:
    found = _LEADING_NUMBER.match(value)
    return None if found is None else Fraction(found.group())


def _value_time(value: str) -> Fraction | None:
    try:
        if len(value) == 10:
            return Fraction(parse_rfc3339(value + "T00:00:00Z"))
        return Fraction(parse_rfc3339(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Query:
    conditions: tuple[Condition, ...]

    def __str__(self) -> str:
        return " AND ".join(str(c) for c in self.conditions)

    def matches(self, events: Mapping[str, Sequence[str]]) -> bool:
        """Whether every condition holds for some value of its tag in `events`."""
        for condition in self.conditions:
            values = events.get(condition.tag)
            if not values or not any(condition.holds(v) for v in values):
                return False
        return True


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'[^']*')
    | (?P<time>TIME\s+[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?
               (?:[-+][0-9]{2}:[0-9]{2}|Z))
    | (?P<date>DATE\s+[0-9]{4}-[0-9]{2}-[0-9]{2})
    | (?P<op><=|>=|<|>|=)
    | (?P<word>CONTAINS|EXISTS|AND)(?![\w.])
    | (?P<number>-?[0-9]+(?:\.[0-9]+)?)(?![\w.])
    | (?P<tag>\w+(?:\.\w+)*)
    )""",
    re.VERBOSE | re.ASCII,
)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, offset) of each token; QueryError at the first character that starts none."""
    tokens: list[tuple[str, str, int]] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        found = _TOKEN.match(text, at)
        if found is None or found.lastgroup is None:
            start = len(text) - len(text[at:].lstrip())
            raise QueryError(f"unexpected {text[start : start + 10]!r} at offset {start}")
        kind = found.lastgroup
        tokens.append((kind, found.group(kind), found.start(kind)))
        at = found.end()
    return tokens


def parse(text: str) -> Query:
    """The query `text`; QueryError if it is empty, too long or not in the grammar."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a JSON \u escape can spell a lone surrogate; no UTF-8 text holds it
        raise QueryError("query is not text (a lone UTF-16 surrogate)") from None
    if size > MAX_QUERY_BYTES:
        raise QueryError(f"query is {size} bytes, longer than {MAX_QUERY_BYTES}")
    tokens = _tokens(text)
    if not tokens:
        raise QueryError("empty query")
    conditions: list[Condition] = []
    at = 0

    def take(*kinds: str) -> tuple[str, str, int]:
        nonlocal at
        if at >= len(tokens):
            raise QueryError(f"query ends where {' or '.join(kinds)} was expected")
        token = tokens[at]
        if token[0] not in kinds:
            raise QueryError(f"expected {' or '.join(kinds)} at offset {token[2]}, got {token[1]!r}")
        at += 1
        return token

    while True:
        _, tag, _ = take("tag")
        kind, word, offset = take("op", "word")
        if word == "EXISTS":
            conditions.append(Condition(tag=tag, op=Op.EXISTS))
        elif word == "CONTAINS":
            conditions.append(_operand(tag, Op.CONTAINS, take("string")))
        elif kind == "op":
            conditions.append(_operand(tag, Op(word), take("string", "number", "time", "date")))
        else:
            raise QueryError(f"expected an operator at offset {offset}, got {word!r}")
        if at == len(tokens):
            return Query(tuple(conditions))
        _, word, offset = tokens[at]
        if word != "AND":
            raise QueryError(f"expected AND at offset {offset}, got {word!r}")
        at += 1


def _operand(tag: str, op: Op, token: tuple[str, str, int]) -> Condition:
    kind, text, offset = token
    if kind == "string":
        if op in _ORDER:
            raise QueryError(f"{op.value} at offset {offset} compares numbers, times or dates, not strings")
        return Condition(tag=tag, op=op, kind=Kind.STRING, text=text[1:-1])
    if kind == "number":
        return Condition(tag=tag, op=op, kind=Kind.NUMBER, text=text, number=Fraction(text))
    body = text[4:].strip()
    try:
        if kind == "time":
            return Condition(tag=tag, op=op, kind=Kind.TIME, text=body, number=Fraction(parse_rfc3339(body)))
        return Condition(
            tag=tag, op=op, kind=Kind.DATE, text=body, number=Fraction(parse_rfc3339(body + "T00:00:00Z"))
        )
    except ValueError as exc:
        raise QueryError(f"at offset {offset}: {exc}") from exc

"""The event query language (`node.query`): what parses, what is refused and why, and how a
condition compares an attribute value."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.query import MAX_QUERY_BYTES, Condition, Kind, Op, Query, QueryError, parse

EVENTS = {
    "tm.event": ["Tx"],
    "tx.height": ["7"],
    "transfer.amount": ["100stake", "5"],
    "funding.rate_ppm": ["-12"],
    "order_placed.owner": ["ab12cd"],
    "ev.at": ["2026-12-05T10:00:00Z"],
    "ev.day": ["2026-12-05"],
}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("tm.event = 'Tx'", True),
        ("tm.event='NewBlock'", False),
        ("tx.height = 7", True),
        ("tx.height >= 8", False),
        ("tx.height > 6.5 AND tx.height < 7.5", True),
        ("transfer.amount > 99", True),  # the leading number of "100stake"
        ("transfer.amount = 5", True),  # any of the tag's values
        ("transfer.amount = '100stake'", True),
        ("transfer.amount CONTAINS 'stake'", True),
        ("transfer.amount CONTAINS 'atom'", False),
        ("funding.rate_ppm < -10", True),
        ("funding.rate_ppm > 0", False),
        ("order_placed.owner EXISTS", True),
        ("order_filled.maker EXISTS", False),
        ("order_placed.owner = 'AB12CD'", False),  # strings compare exactly
        ("order_placed.owner = 'ab12'", False),  # the whole value, not a part of it
        ("order_placed.owner CONTAINS 'ab12'", True),
        ("ev.at > TIME 2026-12-05T09:59:59Z", True),
        ("ev.at < TIME 2026-12-05T11:00:00+02:00", False),  # 09:00 UTC
        ("ev.at >= DATE 2026-12-05", True),
        ("ev.day = DATE 2026-12-05", True),
        ("ev.day < DATE 2026-12-05", False),
        ("order_placed.owner = 5", False),  # not a number
        ("tm.event = 'Tx' AND tx.height = 7 AND transfer.amount EXISTS", True),
        ("tm.event = 'Tx' AND tx.height = 8", False),
    ],
)
def test_matching(text: str, matches: bool) -> None:
    assert parse(text).matches(EVENTS) is matches


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty query"),
        ("   ", "empty query"),
        ("tm.event", "query ends where op or word was expected"),
        ("tm.event =", "query ends where string or number or time or date was expected"),
        ("a.b < 'x'", "compares numbers, times or dates, not strings"),
        ("a.b CONTAINS 5", "expected string at offset 13, got '5'"),
        ("a.b = 1 OR c.d = 2", "expected AND at offset 8, got 'OR'"),
        ("a.b = 1 AND", "query ends where tag was expected"),
        ("a.b = 'unterminated", 'unexpected "\'untermina" at offset 6'),
        ("a.b = TIME 2026-13-05T10:00:00Z", "not a valid date and time"),
        ("a.b ! 1", "unexpected '! 1' at offset 4"),
        ("a.b = " + "9" * MAX_QUERY_BYTES, f"longer than {MAX_QUERY_BYTES}"),
        ("= 5", "expected tag at offset 0"),
        ("a.b = '\udcff'", "not text"),  # a WebSocket subscribe reached this with a JSON \u escape
    ],
)
def test_refused_with_reason(text: str, error: str) -> None:
    with pytest.raises(QueryError, match=re.escape(error)):
        parse(text)


_tags = st.from_regex(r"[a-z_][a-z0-9_]{0,6}(\.[a-z0-9_]{1,6}){0,2}", fullmatch=True).filter(
    lambda t: t not in ("AND", "CONTAINS", "EXISTS")
)
_numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,3})?", fullmatch=True)
_strings = st.from_regex(r"[^'\x00-\x1f]{0,12}", fullmatch=True)


@st.composite
def _conditions(draw: st.DrawFn) -> Condition:
    tag = draw(_tags)
    kind = draw(st.sampled_from([None, Kind.STRING, Kind.NUMBER, Kind.TIME, Kind.DATE]))
    if kind is None:
        return Condition(tag=tag, op=Op.EXISTS)
    if kind is Kind.STRING:
        op = draw(st.sampled_from([Op.EQ, Op.CONTAINS]))
        return parse(f"{tag} {op.value} '{draw(_strings)}'").conditions[0]
    op = draw(st.sampled_from([Op.EQ, Op.LT, Op.LE, Op.GT, Op.GE]))
    if kind is Kind.NUMBER:
        operand = draw(_numbers)
    elif kind is Kind.TIME:
        operand = "TIME 2026-0{}-1{}T0{}:30:00Z".format(*draw(st.tuples(*[st.integers(1, 9)] * 3)))
    else:
        operand = f"DATE 2026-0{draw(st.integers(1, 9))}-15"
    return parse(f"{tag} {op.value} {operand}").conditions[0]


@given(st.lists(_conditions(), min_size=1, max_size=5))
def test_text_round_trip(conditions: list[Condition]) -> None:
    """A query's text parses back to the same query (what a subscription reports is what it
    matches)."""
    query = Query(tuple(conditions))
    assert parse(str(query)) == query


@given(st.lists(_conditions(), min_size=1, max_size=4), st.dictionaries(_tags, st.lists(_numbers | _strings)))
def test_conjunction(conditions: list[Condition], events: dict[str, list[str]]) -> None:
    """A query matches exactly when each of its conditions does on its own."""
    query = Query(tuple(conditions))
    assert query.matches(events) == all(Query((c,)).matches(events) for c in conditions)

"""Tests of primitives.timefmt: integer nanoseconds and their RFC 3339 text (CometBFT's form)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.timefmt import NS_PER_MS, NS_PER_SECOND, format_rfc3339, parse_rfc3339

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_of(dt: datetime, nanos: int = 0) -> int:
    """Nanoseconds since the epoch of a whole-second aware datetime, plus `nanos`."""
    return int((dt - EPOCH).total_seconds()) * NS_PER_SECOND + nanos


YEAR_1000 = ns_of(datetime(1000, 1, 1, tzinfo=UTC))
YEAR_9999_END = ns_of(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), NS_PER_SECOND - 1)
GO_ZERO_TIME = ns_of(datetime(1, 1, 1, tzinfo=UTC))  # Go's time.Time{}: "0001-01-01T00:00:00Z"

CANONICAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{0,8}[1-9])?Z$")

sane_ns = st.one_of(
    st.integers(YEAR_1000, YEAR_9999_END),
    st.integers(-(10**18), 10**19),
    st.integers(0, 10**12),
)


def test_constants() -> None:
    assert NS_PER_SECOND == 10**9
    assert NS_PER_MS == 10**6


@settings(max_examples=300)
@given(sane_ns)
def test_round_trip(ns: int) -> None:
    text = format_rfc3339(ns)
    assert CANONICAL.match(text), text
    assert parse_rfc3339(text) == ns


@settings(max_examples=200)
@given(st.integers(0, 4 * 10**18))
def test_format_agrees_with_datetime(ns: int) -> None:
    seconds, frac = divmod(ns, NS_PER_SECOND)
    dt = EPOCH + timedelta(seconds=seconds)
    text = format_rfc3339(ns)
    assert text.startswith(dt.strftime("%Y-%m-%dT%H:%M:%S"))
    fraction = text[len("YYYY-MM-DDTHH:MM:SS") : -1]
    if frac:
        assert fraction.startswith(".")
        assert not fraction.endswith("0")
        assert int(fraction[1:].ljust(9, "0")) == frac
    else:
        assert fraction == ""


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.5Z", 500_000_000),
        ("1970-01-01T00:00:00.000000001Z", 1),
        ("1970-01-01T00:00:00.123456789Z", 123_456_789),
        ("1970-01-01T00:00:01Z", NS_PER_SECOND),
        ("1970-01-01T00:00:00.01Z", 10_000_000),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("1969-12-31T23:59:59Z", -NS_PER_SECOND),
        ("2000-02-29T12:00:00Z", 951_825_600 * NS_PER_SECOND),
        ("2026-11-25T09:02:55.123456789Z", 1_795_597_375 * NS_PER_SECOND + 123_456_789),
        ("9999-12-31T23:59:59.999999999Z", YEAR_9999_END),
    ],
)
def test_known_values(text: str, ns: int) -> None:
    assert parse_rfc3339(text) == ns
    assert format_rfc3339(ns) == text


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01T00:00:00.0Z", 0),
        ("1970-01-01T00:00:00.000000000Z", 0),
        ("1970-01-01T00:00:00.500Z", 500_000_000),
        ("1970-01-01T00:00:00.1Z", 100_000_000),
        ("1970-01-01T00:00:00.000001Z", 1_000),
        ("1970-01-01t00:00:00z", 0),
        ("1970-01-01T02:00:00+02:00", 0),
        ("1970-01-01T00:00:00+02:00", -2 * 3600 * NS_PER_SECOND),
        ("1969-12-31T22:00:00-02:00", 0),
        ("1970-01-01T05:30:00.25+05:30", 250_000_000),
        ("1970-01-01T00:00:00-00:30", 1800 * NS_PER_SECOND),
        ("1970-01-01T00:00:00+00:00", 0),
        ("1970-01-01T00:00:00-00:00", 0),
        ("2026-11-25T10:02:55.123456789+01:00", 1_795_597_375 * NS_PER_SECOND + 123_456_789),
    ],
)
def test_parse_non_canonical_forms(text: str, ns: int) -> None:
    assert parse_rfc3339(text) == ns


@settings(max_examples=200)
@given(
    st.integers(YEAR_1000 + 2 * 86400 * NS_PER_SECOND, YEAR_9999_END - 2 * 86400 * NS_PER_SECOND),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
)
def test_offsets(ns: int, offset_minutes: int) -> None:
    seconds, frac = divmod(ns, NS_PER_SECOND)
    zone = timezone(timedelta(minutes=offset_minutes))
    local = (EPOCH + timedelta(seconds=seconds)).astimezone(zone)
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = f"{local.strftime('%Y-%m-%dT%H:%M:%S')}.{frac:09d}{sign}{hours:02d}:{minutes:02d}"
    assert parse_rfc3339(text) == ns


def test_go_zero_time_formats_with_four_digit_year() -> None:
    # CometBFT shows absent commit signatures with Go's zero time, "0001-01-01T00:00:00Z".
    assert format_rfc3339(GO_ZERO_TIME) == "0001-01-01T00:00:00Z"
    assert parse_rfc3339("0001-01-01T00:00:00Z") == GO_ZERO_TIME


@pytest.mark.parametrize("year", [1, 99, 999])
def test_years_below_1000_round_trip(year: int) -> None:
    ns = ns_of(datetime(year, 6, 1, tzinfo=UTC))
    text = format_rfc3339(ns)
    assert text == f"{year:04d}-06-01T00:00:00Z"
    assert parse_rfc3339(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "now",
        "1970-01-01",
        "1970-01-01T00:00:00",
        "1970-01-01T00:00Z",
        "1970-01-01 00:00:00Z",
        "1970-01-01T00:00:00.Z",
        "1970-01-01T00:00:00.1234567890Z",
        "1970-01-01T00:00:00,5Z",
        "1970-1-01T00:00:00Z",
        "70-01-01T00:00:00Z",
        "+1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00UTC",
        "1970-01-01T00:00:00+0200",
        "1970-01-01T00:00:00+02",
        "1970-01-01T00:00:00Zjunk",
        "1970-13-01T00:00:00Z",
        "1970-00-01T00:00:00Z",
        "1970-01-00T00:00:00Z",
        "1970-02-30T00:00:00Z",
        "1971-02-29T00:00:00Z",
        "1970-01-32T00:00:00Z",
        "1970-01-01T24:00:00Z",
        "1970-01-01T00:60:00Z",
        "1970-01-01T00:00:61Z",
        "0000-01-01T00:00:00Z",
    ],
)
def test_invalid_strings_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1970-01-01T00:00:00+25:00", id="offset-hour-25"),
        pytest.param("1970-01-01T00:00:00+99:99", id="offset-99:99"),
        pytest.param("1970-01-01T00:00:00-00:60", id="offset-minute-60"),
        pytest.param("1970-01-01T00:00:00+01:75", id="offset-minute-75"),
    ],
)
def test_out_of_range_offsets_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\u0661\u0669\u0667\u0660-\u0660\u0661-\u0660\u0661T00:00:00Z", id="arabic-indic-date"),
        pytest.param("1970-01-01T00:00:00.\uff15Z", id="fullwidth-fraction"),
        pytest.param("1970-01-01T00:00:00+\uff10\uff12:00", id="fullwidth-offset"),
    ],
)
def test_non_ascii_digits_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)

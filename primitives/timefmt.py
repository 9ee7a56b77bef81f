"""Times as integer nanoseconds since the Unix epoch, and their RFC 3339 text form.

Chain times (block time, vote timestamps, genesis time) are integers of nanoseconds in UTC; the
text form is CometBFT's: `2026-11-25T09:02:55.123456789Z` (fraction trimmed of trailing zeros).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_RFC3339 = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(Z|z|[+-][0-9]{2}:[0-9]{2})$",
    re.ASCII,
)


def format_rfc3339(ns: int) -> str:
    """RFC 3339 UTC text of `ns` nanoseconds since the epoch."""
    seconds, frac = divmod(ns, NS_PER_SECOND)
    dt = _EPOCH + timedelta(seconds=seconds)
    base = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time; ValueError names what is wrong."""
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"not a valid date and time: {text!r}") from exc
    offset = 0
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"UTC offset out of range: {text!r}")
        offset = sign * (hours * 3600 + minutes * 60)
    whole = (dt - _EPOCH) // timedelta(seconds=1) - offset
    nanos = int((frac or "").ljust(9, "0")) if frac else 0
    return whole * NS_PER_SECOND + nanos

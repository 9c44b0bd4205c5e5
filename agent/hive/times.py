"""purchase_time and timezone, as seed 003 writes them. Pure: no clock.

* ``purchase_time`` is ``yyyy-mm-dd hh:mm:ss`` (seed 003's example
  ``2017-02-08 16:34:38``), or an ISO 8601 date-time with a time part
  (``2026-11-22T03:06:36.745Z``). A date alone, a week date or a compact
  date (``20261122``) names no moment of payment and is not a purchase time.
* ``timezone`` is the UTC offset of the record's time values. Understood:
  ``GMT±HH:MM``, ``UTC±HH:MM``, ``±HH:MM`` (or ``±HHMM``), ``GMT±H``,
  ``UTC``, ``GMT`` and ``Z``; written back as ``GMT±HH:MM``.
* Only a *missing* timezone means KST (Hive's own fallback). A timezone that
  is present but not understood is never guessed: :func:`utc_of` refuses it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

KST = "GMT+09:00"
KST_OFFSET = timedelta(hours=9)

_TZ = re.compile(r"(?:GMT|UTC)?([+-])(\d{1,2})(?::?(\d{2}))?")
_PLAIN_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})")
# Extended ISO 8601 only, and a time part is required.
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?")


def timezone_missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_timezone(value: object) -> timedelta | None:
    """The offset a timezone value names, or None when it is not understood (or missing)."""
    if not isinstance(value, str):
        return None
    text = value.strip().upper()
    if text in ("UTC", "GMT", "Z"):
        return timedelta(0)
    m = _TZ.fullmatch(text)
    if not m:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes >= 60 or (hours == 14 and minutes):
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return -delta if m.group(1) == "-" else delta


def format_timezone(offset: timedelta) -> str:
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"GMT{sign}{total // 60:02d}:{total % 60:02d}"


def parse_purchase_time(value: object, record_offset: timedelta | None) -> tuple[str, timedelta | None]:
    """→ (``yyyy-mm-dd hh:mm:ss``, the offset the value itself carried or None). Raises ValueError.

    A value with an offset is written in the record's own timezone when that is
    understood (``record_offset``), else in its own offset, which is returned."""
    if not isinstance(value, str):
        raise ValueError("not a date-time string")
    text = value.strip()
    m = _PLAIN_TIME.fullmatch(text)
    if m:
        year, month, day, hour, minute, second = map(int, m.groups())
        datetime(year, month, day, hour, minute, second)  # a real date and time? (ValueError names what is not)
        return text, None
    if not _ISO_TIME.fullmatch(text):
        raise ValueError("not 'yyyy-mm-dd hh:mm:ss' nor an ISO 8601 date-time with a time part")
    parsed = datetime.fromisoformat(text.replace(",", ".").replace("Z", "+00:00"))
    offset = parsed.utcoffset()
    if offset is None:
        return parsed.strftime("%Y-%m-%d %H:%M:%S"), None
    if record_offset is not None:
        return parsed.astimezone(timezone(record_offset)).strftime("%Y-%m-%d %H:%M:%S"), None
    return parsed.strftime("%Y-%m-%d %H:%M:%S"), offset


def is_real_plain_time(text: str) -> bool:
    """Is ``yyyy-mm-dd hh:mm:ss`` (already shaped so) a real date and time?"""
    try:
        datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), int(text[17:19]))
    except ValueError:
        return False
    return True


def utc_of(purchase_time: object, tz: object) -> datetime:
    """A purchase_time in its record's timezone (KST only when the timezone is missing) → aware
    UTC. Raises ValueError naming what is wrong."""
    if timezone_missing(tz):
        offset = KST_OFFSET
    else:
        found = parse_timezone(tz)
        if found is None:
            raise ValueError(f"timezone {tz!r} is not understood")
        offset = found
    text, _ = parse_purchase_time(purchase_time, offset)  # "yyyy-mm-dd hh:mm:ss" in that offset
    naive = datetime(
        int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), int(text[17:19])
    )
    return naive.replace(tzinfo=timezone(offset)).astimezone(UTC)

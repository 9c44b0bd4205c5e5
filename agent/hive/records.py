"""A normalized purchase as the journal holds it, and as outputs write it.

The hive filter journals the spec's fields (snake_case) and keeps the fields
outside the spec, which Hive would not store but the vendor mirrors need
(appsflyer_id, idfa, the refund flag, …), under :data:`EXTRA_KEY`. This module
is the one place that knows that key:

* :func:`field_of` reads a field wherever the filter put it;
* :func:`render` writes a record in an output's ``key_style``: ``raw`` as
  journaled, ``snake`` with the spec's names and nothing outside the spec
  (what Hive stores), ``camel`` the same with the final store's camelCase
  column names (server_id → serverId).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

from agent.bytesearch import contains
from agent.hive.spec import CAMEL_NAMES

EXTRA_KEY = "_extra"
EXTRA_MARKER = b"\xa6_extra"  # EXTRA_KEY as a msgpack fixstr: a payload without it holds no extras
KeyStyle = Literal["raw", "snake", "camel"]  # the one definition; config/types.py validates it
KEY_STYLES: tuple[str, ...] = ("raw", "snake", "camel")
REFUND_VALUES: tuple[Any, ...] = (True, 1, "1", "Y", "y", "true")
# What a sender writes for "not a refund" (0 == False and 1 == True in Python: refunds are checked first).
NON_REFUND_VALUES: tuple[Any, ...] = (False, 0, "0", "N", "n", "false", "")


def with_extra(record: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The journaled form: the spec's fields, and the rest under EXTRA_KEY."""
    if extra:
        record[EXTRA_KEY] = extra
    return record


def field_of(record: dict[str, Any], name: str) -> Any:
    """A field of a journaled record, from the spec's fields or else from the extras."""
    value = record.get(name)
    if value is None:
        extra = record.get(EXTRA_KEY)
        if isinstance(extra, dict):
            return extra.get(name)
    return value


def is_refund(
    record: dict[str, Any], refund_field: str = "refund", refund_values: tuple[Any, ...] = REFUND_VALUES
) -> bool:
    """Does the sender mark this record as the refund of a purchase (same transaction_id)?"""
    return refund_state(record, refund_field, refund_values) is True


def refund_state(
    record: dict[str, Any], refund_field: str = "refund", refund_values: tuple[Any, ...] = REFUND_VALUES
) -> bool | None:
    """True: a refund; False: a purchase (no refund field, or a value that says "not a refund");
    None: a value that is neither ("yes"): never taken for the purchase again, nor for its refund."""
    value = field_of(record, refund_field)
    if value is None:
        return False
    if value in refund_values:
        return True
    if value in NON_REFUND_VALUES:
        return False
    return None


def render(record: Any, style: str) -> Any:
    """One record in a key style (records that are not maps pass unchanged)."""
    if style == "raw" or not isinstance(record, dict):
        return record
    if style == "camel":
        return {CAMEL_NAMES.get(k, k): v for k, v in record.items() if k != EXTRA_KEY}
    if EXTRA_KEY not in record:
        return record
    return {k: v for k, v in record.items() if k != EXTRA_KEY}


def restyler(style: str) -> Callable[[Any], Any] | None:
    """What turns one record into ``style`` (records that are not maps pass unchanged); None for "raw"."""
    if style == "raw":
        return None
    return functools.partial(render, style=style)


def may_hold_extras(payload: bytes) -> bool:
    """False when a msgpack payload certainly holds no EXTRA_KEY (a byte search, no decode)."""
    return contains(payload, EXTRA_MARKER)

"""Normalizing one record to the Hive purchase_log spec. Pure: no I/O, no clock.

The spec is the table in agent/hive/spec.py; :func:`check_value` is the
validator derived from it, the authority that explains every problem.
Normalizing a record:

1. maps every spelling of a field to the spec's name: snake_case, camelCase,
   the squashed form (``serverid``) and the aliases the sources use (``ip`` →
   ``client_ip``); the spec's own spelling wins over an alias;
2. applies only the coercions the sources need: digit strings to integers
   (``"2414"``), decimal strings to exact floats (``"1.99"``), case
   (``"us"`` → ``"US"``);
3. applies the cross-field rules of agent/hive/spec.py (category from the
   tag, uid or extra_uid, nationality or client_ip, quantity) and the time
   rules of agent/hive/times.py (an ISO 8601 purchase_time, a missing timezone
   means KST, one not understood is kept and warned, never guessed);
4. validates each field by its row of the table. With ``strict`` every violation is an error;
   without it every violation is a warning and the value is kept as sent (the
   mirrors refuse what they cannot send, agent/mirrors/payloads.py).

Fields outside the spec are not sent to Hive (Hive would not store them) but
are kept apart in ``extra`` for the vendor mirrors (appsflyer_id, idfa, …).
The fast paths (agent/hive/fast_path.py) answer first for records that are
already canonical; a property test holds them to this module's answer.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.hive import spec
from agent.hive.fast_path import try_fast
from agent.hive.spec import ALIASES, BY_NAME, Normalized, Problem, spec_name
from agent.hive.times import KST, format_timezone, parse_purchase_time, parse_timezone, timezone_missing

__all__ = ["check_value", "normalize", "normalize_slow", "Normalized", "Problem"]


# -- the coercions the sources need -----------------------------------------------------


def _price(value: Any) -> Any:
    """``"1.99"`` → 1.99, kept exact: refused if the float would not print back the same decimal."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a price")
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?\d+(\.\d+)?", text):
            raise ValueError("not a plain decimal number (no separators or currency symbols)")
        try:
            exact = Decimal(text)
        except InvalidOperation:
            raise ValueError("not a decimal number") from None
        as_float = float(text)
        if Decimal(repr(as_float)) != exact:
            raise ValueError("cannot be kept exact as a float")
        return as_float
    return value


class Invalid(ValueError):
    """A value its row of the table refuses: the rule (the metric's label) and what is wrong."""

    def __init__(self, rule: str, detail: str):
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


# ASCII: int() strips no \x1c-\x1f, which Unicode's \s matches ("0\x1f" raised ValueError).
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)


def _integer(value: Any) -> int:
    """The integers the sources send: ints, digit strings (``"2414"``), whole floats (``2.0``)."""
    if isinstance(value, bool):
        raise Invalid("type", "a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value) and len(value) <= 4300:
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (str, float)):
        raise Invalid("type", "not a valid integer")
    raise Invalid("type", f"an integer is expected, not {type(value).__name__}")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise Invalid("type", "a boolean is not a price")
    try:
        value = _price(value)
    except ValueError as exc:
        raise Invalid("format", str(exc)) from None
    if not isinstance(value, (int, float)):
        raise Invalid("type", f"a number is expected, not {type(value).__name__}")
    return float(value)


def _text(f: spec.Field, value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):  # a msgpack bin of text
        try:
            value = bytes(value).decode()
        except UnicodeDecodeError:
            raise Invalid("type", "not UTF-8 text") from None
    if not isinstance(value, str):
        raise Invalid("type", f"a string is expected, not {type(value).__name__}")
    text: str = value
    if f.case is not None:
        text = text.strip().upper() if f.case == "upper" else text.strip().lower()
    return text


def check_value(f: spec.Field, value: Any) -> Any:
    """``value`` as its row of the table takes it (coerced as the sources need), or Invalid."""
    if f.integer:
        number = _integer(value)
        bounds = f.bounds()
        if not bounds["ge"] <= number <= bounds["le"]:
            raise Invalid("out_of_range", "out of range for its type")
        return number
    if f.kind == "float":
        price = _number(value)
        if not -spec.PRICE_LIMIT <= price <= spec.PRICE_LIMIT:  # NaN is in no range
            raise Invalid("out_of_range", "out of range for its type")
        return price
    if f.values is not None:
        if isinstance(value, str) and value in f.values:
            return value
        raise Invalid("type" if isinstance(value, bool) else "not_allowed", f"not one of {_one_of(f.values)}")
    text = _text(f, value)
    if f.length is not None and len(text) > f.length:
        raise Invalid("too_long", f"longer than {f.length} characters")
    if f.pattern is not None and not _pattern(f.pattern).search(text):
        raise Invalid("format", f"does not match {f.pattern}")
    return text


def _one_of(values: tuple[Any, ...]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _pattern(pattern: str) -> re.Pattern[str]:
    found = _PATTERNS.get(pattern)
    if found is None:
        found = _PATTERNS[pattern] = re.compile(pattern)
    return found


# -- normalizing ------------------------------------------------------------------------


def normalize(
    record: dict[str, Any],
    tag: str,
    *,
    strict: bool = False,
    new_guid: Callable[[], str] = lambda: uuid.uuid4().hex,
    in_place: bool = False,
) -> Normalized:
    """Normalize one purchase record to the spec. Never raises for bad data: reports it.

    ``in_place``: the caller owns ``record`` and lets a canonical one become the result."""
    fast = try_fast(record, tag, in_place=in_place, new_guid=new_guid)
    if fast is not None:
        return fast
    return normalize_slow(record, tag, strict=strict, new_guid=new_guid)


def _spec_names(record: dict[str, Any], advisories: list[Problem]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a record into the spec's fields (by the spec's names) and the rest."""
    if spec.SPEC_SET.issuperset(record):
        return dict(record), {}  # the common case: already spelled as the spec spells it
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    via: dict[str, str] = {}
    for key, value in record.items():
        name = spec_name(key) if isinstance(key, str) else None
        if name is None:
            extra[key] = value
            continue
        if name in out:
            # The spec's own spelling wins over an alias or another spelling.
            if key == name:
                advisories.append(Problem(via.get(name, name), out[name], "alias", f"replaced by {name}"))
                out[name] = value
                via.pop(name, None)
            else:
                advisories.append(Problem(key, value, "alias", f"ignored: {name} is also present"))
            continue
        out[name] = value
        if key != name:
            via[name] = key
    for name, key in via.items():
        if key in ALIASES:
            advisories.append(Problem(key, out[name], "alias", f"alias of {name}; Hive drops {key}"))
        elif key != spec.camel(name):  # serverid, SERVER_ID: repaired to the spec's name, and said
            advisories.append(Problem(key, out[name], "misspelled", f"taken as {name}"))
    return out, extra


def _times(out: dict[str, Any], violations: list[Problem], advisories: list[Problem]) -> None:
    """purchase_time and timezone (agent/hive/times.py): only a missing timezone means KST."""
    tz = out.get("timezone")
    offset = None
    if not timezone_missing(tz):
        offset = parse_timezone(tz)
        if offset is None:
            violations.append(
                Problem(
                    "timezone",
                    tz,
                    "format",
                    "not understood (GMT±HH:MM, UTC±HH:MM, ±HH:MM, GMT±H, UTC, GMT or Z); kept as sent",
                )
            )
        else:
            out["timezone"] = format_timezone(offset)
    if out.get("purchase_time") is not None:
        try:
            out["purchase_time"], own_offset = parse_purchase_time(out["purchase_time"], offset)
            if own_offset is not None and timezone_missing(tz):
                out["timezone"] = tz = format_timezone(own_offset)
        except ValueError as exc:
            violations.append(Problem("purchase_time", out["purchase_time"], "invalid_time", str(exc)))
    if timezone_missing(tz):
        advisories.append(Problem("timezone", tz, "timezone_assumed", f"absent; {KST} assumed"))
        out["timezone"] = KST


def normalize_slow(
    record: dict[str, Any], tag: str, *, strict: bool = False, new_guid: Callable[[], str] = lambda: uuid.uuid4().hex
) -> Normalized:
    """The model's way, for every record: maps, coerces, validates, and explains every problem."""
    violations: list[Problem] = []
    advisories: list[Problem] = []
    out, extra = _spec_names(record, advisories)

    category, finding = spec.category_rule(out.get("category"), tag)
    if finding is not None:
        (advisories if finding.rule == "category_mismatch" else violations).append(finding)
    if category is None:
        out.pop("category", None)
    else:
        out["category"] = category

    _times(out, violations, advisories)
    if not out.get("guid"):
        out["guid"] = new_guid()
    for name in spec.INTEGER_FIELDS.intersection(out):
        if isinstance(out[name], bool):
            violations.append(Problem(name, out[name], "type", "a boolean is not an integer"))

    # Validate field by field so one bad value names itself and keeps the rest.
    bad = {p.field for p in violations if p.field in BY_NAME and p.rule in ("type", "invalid_time", "format")}
    clean: dict[str, Any] = {}
    for name, value in out.items():
        if name in bad or value is None:
            continue
        try:
            clean[name] = check_value(BY_NAME[name], value)
        except Invalid as exc:
            bad.add(name)
            violations.append(Problem(name, value, exc.rule, exc.detail))
    for name in out:
        if name in bad or out[name] is None:
            clean[name] = out[name]  # kept as sent; only a warning lets it through
    # Keep the spec's order of keys as the sender gave it.
    clean = {k: clean[k] for k in out if k in clean}

    for name in spec.missing_required(clean):
        if name not in bad:
            violations.append(Problem(name, clean.get(name), "required", "required by the spec"))
    finding = spec.user_problem(clean.get("uid"), clean.get("extra_uid"))
    if finding is not None:
        violations.append(finding)
    if "quantity" not in bad:
        finding = spec.quantity_problem(clean.get("quantity"))
        if finding is not None:
            (violations if finding.rule == "quantity_not_positive" else advisories).append(finding)
    for f in spec.ADVISED_FIELDS:
        if f.name in clean and f.name not in bad:
            advice = f.advice(clean[f.name])
            if advice is not None:
                advisories.append(Problem(f.name, clean[f.name], *advice))

    if strict:
        return Normalized(record=clean, extra=extra, errors=violations, warnings=advisories)
    return Normalized(record=clean, extra=extra, warnings=violations + advisories)

"""Normalizing one record to the Hive purchase_log spec. Pure: no I/O, no clock.

The spec is the table in agent/hive/spec.py; :class:`PurchaseLog` is the
pydantic model derived from it, the authority that explains every problem.
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
4. validates with the model. With ``strict`` every violation is an error;
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
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model
from pydantic import Field as ModelField

from agent.hive import spec
from agent.hive.fast_path import try_fast
from agent.hive.spec import ALIASES, BY_NAME, FIELDS, Normalized, Problem, spec_name
from agent.hive.times import KST, format_timezone, parse_purchase_time, parse_timezone, timezone_missing

__all__ = ["PurchaseLog", "normalize", "normalize_slow", "Normalized", "Problem"]


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


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _annotation(f: spec.Field) -> Any:
    """The pydantic type of one row of the table."""
    if f.integer:
        # pydantic's lax int takes "2414" and 2.0; booleans are refused before validation.
        return Annotated[int, ModelField(**f.bounds())]
    if f.kind == "float":
        return Annotated[float, BeforeValidator(_price), ModelField(**f.bounds())]
    if f.values is not None:
        return Literal[f.values]
    parts: list[Any] = [str]
    if f.case is not None:
        parts.append(BeforeValidator(_upper if f.case == "upper" else _lower))
    parts.append(ModelField(**f.bounds()))
    return Annotated[tuple(parts)]


PurchaseLog: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "PurchaseLog",
    __config__=ConfigDict(extra="forbid", strict=False),
    **{f.name: (Optional[_annotation(f)], None) for f in FIELDS},  # noqa: UP045 - built at run time
)

_RULES = {
    "string_too_long": "too_long",
    "too_long": "too_long",
    "literal_error": "not_allowed",
    "string_pattern_mismatch": "format",
    "greater_than_equal": "out_of_range",
    "less_than_equal": "out_of_range",
    "value_error": "format",
}


def _problem_of(err: Mapping[str, Any], value: Any) -> Problem:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    rule = "type" if isinstance(value, bool) else _RULES.get(kind, "type")
    if rule == "too_long":
        detail = f"longer than {ctx.get('max_length')} characters"
    elif rule == "not_allowed":
        detail = f"not one of {ctx.get('expected')}"
    elif rule == "format" and kind == "string_pattern_mismatch":
        detail = f"does not match {ctx.get('pattern')}"
    elif rule == "out_of_range":
        detail = "out of range for its type"
    else:
        detail = err["msg"].removeprefix("Value error, ")
    return Problem(str(err["loc"][0]), value, rule, detail)


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
    checked = {k: v for k, v in out.items() if k not in bad and v is not None}
    try:
        clean = PurchaseLog.model_validate(checked).model_dump(exclude_unset=True)
    except ValidationError as exc:
        failed: set[str] = set()
        for err in exc.errors():
            name = str(err["loc"][0])
            failed.add(name)
            violations.append(_problem_of(err, out.get(name)))
        clean = PurchaseLog.model_validate({k: v for k, v in checked.items() if k not in failed}).model_dump(
            exclude_unset=True
        )
        bad |= failed
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

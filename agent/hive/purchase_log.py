"""The Hive purchase_log spec, and normalizing a record to it. Pure: no I/O, no clock.

Source: the Hive analytics purchase_log specification (the Korean original is
``shared/seeds/003_…``; the English summary is HIVE_AND_VENDORS.md §1). Every
field of the spec is a field of :class:`PurchaseLog`, a pydantic v2 model with
the spec's type, length limit and enumeration. Normalizing a record:

1. maps every spelling of a field to the spec's name: snake_case, camelCase,
   the squashed form (``serverid``) and the aliases the sources use (``ip`` →
   ``client_ip``); the spec's own spelling wins over an alias;
2. applies only the coercions the sources need: digit strings to integers
   (``"2414"``), decimal strings to exact floats (``"1.99"``), case
   (``"us"`` → ``"US"``); anything else that does not fit is an error;
3. fills ``category`` from the tag (``ha2union.game.<game>.purchase_log`` →
   ``<game>_purchase_log``) unless the record has a valid one, ``timezone``
   from an ISO 8601 offset or the KST fallback, and ``guid`` when absent;
4. validates with the model. With ``strict`` every problem is an error; without
   it only the fields mirroring needs are, and the rest are warnings.

Fields outside the spec are not sent to Hive (Hive would not store them) but
are kept apart in ``extra`` for the vendor mirrors (appsflyer_id, idfa, …).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

KST = "GMT+09:00"
MIRROR_FIELDS = ("transaction_id", "product_price", "currency", "purchase_time", "platform", "app_id")

CHANNELS = ("C2S", "KAK", "LIN", "WEI", "STE")
PLATFORMS = ("A", "I", "B", "W")
MARKETS = ("TS", "OL", "OZ", "AP", "GO", "SA", "LE", "MM", "SN", "36", "MO", "DN", "NA", "AM", "ON", "FU", "HU",
           "OP", "VI", "XI", "TC", "HS", "ST")
COMPANIES = ("C2S", "GVI")
ALIASES = {"ip": "client_ip"}

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
INT16 = (-(2**15), 2**15 - 1)
PRICE_LIMIT = 1e15  # also keeps NaN and infinities out


# -- coercions (only those the sources need) ----------------------------------

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


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DOTTED_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _ipv4(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not _DOTTED_IPV4.fullmatch(text):
            raise ValueError("not a dotted IPv4 address")
        return text
    return value


# pydantic's lax int takes "2414" and 2.0 natively; booleans are refused before
# validation (normalize), since True is not an id.
Int64 = Annotated[int, Field(ge=INT64[0], le=INT64[1])]
Int32 = Annotated[int, Field(ge=INT32[0], le=INT32[1])]
Int16 = Annotated[int, Field(ge=INT16[0], le=INT16[1])]
IPv4 = Annotated[str, BeforeValidator(_ipv4), Field(max_length=15)]


def Str(n: int | None = None, *, pattern: str | None = None, before=None):
    constraints = {}
    if n is not None:
        constraints["max_length"] = n
    if pattern is not None:
        constraints["pattern"] = pattern
    parts: list = [str]
    if before is not None:
        parts.append(BeforeValidator(before))
    parts.append(Field(**constraints))
    return Annotated[tuple(parts)]


class PurchaseLog(BaseModel):
    """Every field of the Hive purchase_log spec (S-H); types and limits as written there."""

    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)

    category: Str(200, pattern=r"^[A-Za-z0-9_]+_purchase_log$") | None = None
    channel: Literal[CHANNELS] | None = None
    uid: Int64 | None = None
    extra_uid: Str(30) | None = None
    did: Int64 | None = None
    platform: Literal[PLATFORMS] | None = None
    os_version: Str(30) | None = None
    market: Literal[MARKETS] | None = None
    game_index: Int16 | None = None
    app_id: Str(200) | None = None
    version: Str(30) | None = None
    nationality: Str(2, pattern=r"^[A-Z]{2}$", before=_upper) | None = None
    client_ip: IPv4 | None = None
    transaction_id: Str(512) | None = None
    product_id: Str(512) | None = None
    product_name: Str(128) | None = None
    product_price: Annotated[float, BeforeValidator(_price), Field(ge=-PRICE_LIMIT, le=PRICE_LIMIT)] | None = None
    currency: Str(3, pattern=r"^[A-Z]{3}$", before=_upper) | None = None
    quantity: Int32 | None = None
    purchase_time: str | None = None  # normalized before validation
    timezone: Str(pattern=r"^GMT[+-]\d{2}:\d{2}$") | None = None
    path: Literal["gs"] | None = None
    server_ip: IPv4 | None = None
    giftee_uid: Int64 | None = None
    device_name: Str(32) | None = None
    company: Literal[COMPANIES] | None = None
    server_id: Str() | None = None
    server_uid: Int64 | None = None
    level: Int32 | None = None
    character_id: Int64 | None = None
    character_type_id: Int32 | None = None
    character_level: Int32 | None = None
    language: Str(7, pattern=r"^[a-z]{2,3}(-[a-z0-9]+)*$", before=_lower) | None = None
    game_language: Str() | None = None
    device_language: Str() | None = None
    vid: Int64 | None = None
    mac_address: Str(12, pattern=r"^([0-9A-Fa-f]{12})?$") | None = None
    item_send_ok: Literal["Y", "N", ""] | None = None
    is_emulator: Annotated[int, Field(ge=0, le=2)] | None = None  # 0 device, 1 PC emulator, 2 PC build
    guid: Str(64) | None = None
    hiveiap_purchase_test: Str(100) | None = None


SPEC_FIELDS: tuple[str, ...] = tuple(PurchaseLog.model_fields)
_SPEC_SET = frozenset(SPEC_FIELDS)
INTEGER_FIELDS = frozenset(name for name, f in PurchaseLog.model_fields.items()
                           if "int" in repr(f.annotation) and name != "is_emulator") | {"is_emulator"}
# Required by the spec (Y). uid/extra_uid: one of the two.
REQUIRED = ("channel", "did", "platform", "os_version", "market", "game_index", "app_id", "version", "nationality",
            "client_ip", "transaction_id", "product_id", "product_name", "product_price", "currency", "quantity",
            "purchase_time", "timezone", "path", "server_ip", "giftee_uid", "device_name", "company", "server_id",
            "server_uid", "level", "character_id", "character_type_id", "character_level", "language",
            "game_language", "device_language", "item_send_ok")
# giftee_uid: null is a meaningful value ("not a gift"), so present-as-null satisfies it.
NULLABLE_REQUIRED = ("giftee_uid",)
_REQUIRED_SET = frozenset(REQUIRED)
_REQUIRED_ORDER = {name: i for i, name in enumerate(REQUIRED)}


def camel(name: str) -> str:
    """The final store's column name: server_id → serverId, hiveiap_purchase_test → hiveiapPurchaseTest."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _squash(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


_SPELLINGS: dict[str, str] = {_squash(f): f for f in SPEC_FIELDS}
CAMEL_NAMES: dict[str, str] = {f: camel(f) for f in SPEC_FIELDS}


_NAME_CACHE: dict[str, str | None] = {}


def spec_name(key: str) -> str | None:
    """The spec's name for any spelling of a field (snake, camel, squashed, alias), or None."""
    try:
        return _NAME_CACHE[key]
    except KeyError:
        pass
    name = ALIASES[key] if key in ALIASES else _SPELLINGS.get(_squash(key))
    if len(_NAME_CACHE) < 10_000:  # bounded: keys come from senders
        _NAME_CACHE[key] = name
    return name


@dataclass(frozen=True)
class Problem:
    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        return f"{self.field}={self.value!r}: {self.rule}"


@dataclass
class Normalized:
    record: dict[str, Any]  # spec fields, snake_case, valid (or invalid-but-warned when not strict)
    extra: dict[str, Any] = field(default_factory=dict)  # fields outside the spec, for the mirrors
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def category_for_tag(tag: str) -> str | None:
    parts = tag.split(".")
    if len(parts) >= 4 and parts[0] == "ha2union" and parts[1] == "game" and parts[-1] == "purchase_log":
        return f"{parts[2]}_purchase_log"
    return None


_PLAIN_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def _purchase_time(value: Any, record_tz: str | None) -> tuple[str, str | None]:
    """→ ("yyyy-mm-dd hh:mm:ss", timezone to fill or None). Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError("not a date-time string")
    text = value.strip()
    m = _PLAIN_TIME.fullmatch(text)
    if m:
        datetime(*map(int, m.groups()))  # a real date and time? (ValueError names what is not)
        return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]}:{m[6]}", None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("not 'yyyy-mm-dd hh:mm:ss' nor ISO 8601") from None
    if parsed.tzinfo is None:
        return parsed.strftime("%Y-%m-%d %H:%M:%S"), None
    offset = parsed.utcoffset()
    if record_tz is not None:
        tz_offset = parse_timezone(record_tz)
        if tz_offset is not None:
            # Write the time in the record's own timezone.
            local = parsed.astimezone(timezone(tz_offset))
            return local.strftime("%Y-%m-%d %H:%M:%S"), None
    return parsed.strftime("%Y-%m-%d %H:%M:%S"), format_timezone(offset)


def parse_timezone(value: Any) -> timedelta | None:
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(?:GMT|UTC)?\s*([+-])(\d{1,2}):?(\d{2})\s*", value)
    if not m:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3))
    if hours > 14 or minutes >= 60:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return -delta if m.group(1) == "-" else delta


def format_timezone(offset: timedelta) -> str:
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"GMT{sign}{total // 60:02d}:{total % 60:02d}"


def _rule_of(err: dict) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in ("string_too_long", "too_long"):
        return f"longer than {ctx.get('max_length')} characters"
    if kind == "literal_error":
        return f"not one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"does not match {ctx.get('pattern')}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return "out of range for its type"
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    return err["msg"]


def normalize(record: dict, tag: str, *, strict: bool = True, new_guid=lambda: uuid.uuid4().hex,
              in_place: bool = False) -> Normalized:
    """Normalize one purchase record to the spec. Never raises for bad data: reports it.

    ``in_place``: the caller owns ``record`` and lets a canonical one become the result."""
    from agent.hive.fast_path import try_fast
    fast = try_fast(record, tag, in_place=in_place)
    if fast is not None:
        return fast
    return normalize_slow(record, tag, strict=strict, new_guid=new_guid)


def normalize_slow(record: dict, tag: str, *, strict: bool = True, new_guid=lambda: uuid.uuid4().hex) -> Normalized:
    """The model's way, for every record: maps, coerces, validates, and explains every problem."""
    out: dict[str, Any]
    extra: dict[str, Any] = {}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    via_alias: dict[str, str] = {}
    if _SPEC_SET.issuperset(record):
        out = dict(record)  # the common case: already spelled as the spec spells it
    else:
        out = {}
        for key, value in record.items():
            name = spec_name(key) if isinstance(key, str) else None
            if name is None:
                extra[key] = value
                continue
            if name in out:
                # The spec's own spelling wins over an alias or another spelling.
                if key == name:
                    warnings.append(Problem(via_alias.get(name, name), out[name], f"replaced by {name}"))
                    out[name] = value
                    via_alias.pop(name, None)
                else:
                    warnings.append(Problem(key, value, f"ignored: {name} is also present"))
                continue
            out[name] = value
            if key != name:
                via_alias[name] = key
    for name, key in via_alias.items():
        if key in ALIASES:
            warnings.append(Problem(key, out[name], f"alias of {name}; Hive drops {key}"))

    # category: from the tag unless the record carries a valid one.
    from_tag = category_for_tag(tag)
    cat = out.get("category")
    if not (isinstance(cat, str) and re.fullmatch(r"[A-Za-z0-9_]+_purchase_log", cat)):
        if cat is not None:
            warnings.append(Problem("category", cat, f"replaced by {from_tag!r} from the tag"))
        if from_tag is not None:
            out["category"] = from_tag
        else:
            out.pop("category", None)

    # timezone and purchase_time (ISO 8601 with an offset fills the timezone).
    tz = out.get("timezone")
    if "purchase_time" in out and out["purchase_time"] is not None:
        try:
            out["purchase_time"], tz_from_time = _purchase_time(out["purchase_time"], tz if isinstance(tz, str) else None)
            if tz_from_time is not None and (tz is None or tz == ""):
                out["timezone"] = tz = tz_from_time
        except ValueError as exc:
            problems.append(Problem("purchase_time", out["purchase_time"], str(exc)))
            out.pop("purchase_time")
    offset = parse_timezone(tz)
    if offset is None:
        # Hive itself falls back to KST (HIVE_AND_VENDORS.md §1.3, H4).
        rule = "absent" if tz in (None, "") else "not GMT±HH:MM"
        warnings.append(Problem("timezone", tz, f"{rule}; {KST} assumed"))
        out["timezone"] = KST
    else:
        out["timezone"] = format_timezone(offset)

    if not out.get("guid"):
        out["guid"] = new_guid()

    for name in INTEGER_FIELDS.intersection(out):
        if isinstance(out[name], bool):
            problems.append(Problem(name, out.pop(name), "a boolean is not an integer"))

    # Validate field by field so one bad value names itself and keeps the rest.
    try:
        model = PurchaseLog.model_validate(out)
        clean = model.model_dump(exclude_unset=True)
    except ValidationError as exc:
        bad: set[str] = set()
        for err in exc.errors():
            name = str(err["loc"][0])
            bad.add(name)
            problems.append(Problem(name, out.get(name), _rule_of(err)))
        good = {k: v for k, v in out.items() if k not in bad}
        clean = PurchaseLog.model_validate(good).model_dump(exclude_unset=True)
        for name in bad:  # keep the raw value; only warnings let it through
            clean[name] = out[name]

    reported = {p.field for p in problems}
    missing = set(_REQUIRED_SET.difference(clean))
    missing.update(k for k, v in clean.items() if v is None and k in _REQUIRED_SET and k not in NULLABLE_REQUIRED)
    for name in sorted(missing - reported, key=_REQUIRED_ORDER.__getitem__):
        problems.append(Problem(name, clean.get(name), "required by the spec"))
    if clean.get("uid") is None and clean.get("extra_uid") is None:
        problems.append(Problem("uid", None, "required (or extra_uid)"))
    if clean.get("quantity") not in (None, 1):
        warnings.append(Problem("quantity", clean["quantity"], "the spec says always 1"))
    if isinstance(clean.get("product_name"), str) and re.match(r"^u[0-9a-f]{4}", clean["product_name"]):
        warnings.append(Problem("product_name", clean["product_name"], "looks like a \\uXXXX escape that lost its backslash"))

    if strict:
        errors = problems
    else:
        errors = [p for p in problems if p.field in MIRROR_FIELDS]
        warnings.extend(p for p in problems if p.field not in MIRROR_FIELDS)
    # A value that failed its rule is not sent on as if it were valid.
    for p in errors:
        clean.pop(p.field, None)
    return Normalized(record=clean, extra=extra, errors=errors, warnings=warnings)

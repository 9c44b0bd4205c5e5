"""The fast path of normalization: a record already in the spec's own terms.

Most game servers send purchase_log records spelled and typed exactly as the
spec says. For those, the pydantic model (the authority, which also explains
every error) costs more than the rest of the pipeline together, so this
module checks them first with a msgspec Struct of the same rules, validated
in C. It answers only "already canonical and valid: here is the record" or
"not sure": anything it does not accept (an alias, a string number, a missing
field, a value that would warn) goes the slow way, through the model. A
property test holds the two to the same answer.
"""

from __future__ import annotations

import re
import types
from operator import attrgetter
import typing
from datetime import datetime
from typing import Annotated, Literal, Optional

import msgspec
from msgspec import Meta

from agent.hive import purchase_log as spec
from agent.protocol.forward import array_items

Int64 = Annotated[int, Meta(ge=spec.INT64[0], le=spec.INT64[1])]
Int32 = Annotated[int, Meta(ge=spec.INT32[0], le=spec.INT32[1])]
Int16 = Annotated[int, Meta(ge=spec.INT16[0], le=spec.INT16[1])]
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPv4 = Annotated[str, Meta(max_length=15, pattern=rf"^{_OCTET}(?:\.{_OCTET}){{3}}$")]


def Str(n: int | None = None, pattern: str | None = None, min_length: int | None = None):
    meta = {}
    if n is not None:
        meta["max_length"] = n
    if pattern is not None:
        meta["pattern"] = pattern
    if min_length is not None:
        meta["min_length"] = min_length
    return Annotated[str, Meta(**meta)] if meta else str


class Canonical(msgspec.Struct, forbid_unknown_fields=False):
    """The spec's fields, canonical: required ones without defaults, optional ones may be absent."""

    channel: Literal[spec.CHANNELS]
    did: Int64
    platform: Literal[spec.PLATFORMS]
    os_version: Str(30)
    market: Literal[spec.MARKETS]
    game_index: Int16
    app_id: Str(200)
    version: Str(30)
    nationality: Str(2, r"^[A-Z]{2}$")
    client_ip: IPv4
    transaction_id: Str(512)
    product_id: Str(512)
    product_name: Str(128)
    product_price: Annotated[float, Meta(ge=-spec.PRICE_LIMIT, le=spec.PRICE_LIMIT)]
    currency: Str(3, r"^[A-Z]{3}$")
    quantity: Literal[1]
    purchase_time: Str(19, r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
    timezone: Str(9, r"^GMT[+-](0\d|1[0-4]):[0-5]\d$")
    path: Literal["gs"]
    server_ip: IPv4
    giftee_uid: Optional[Int64]
    device_name: Str(32)
    company: Literal[spec.COMPANIES]
    server_id: str
    server_uid: Int64
    level: Int32
    character_id: Int64
    character_type_id: Int32
    character_level: Int32
    language: Str(7, r"^[a-z]{2,3}(-[a-z0-9]+)*$")
    game_language: str
    device_language: str
    item_send_ok: Literal["Y", "N", ""]
    guid: Str(64, min_length=1)
    uid: Optional[Int64] = None
    extra_uid: Optional[Str(30)] = None
    category: Optional[Str(200, r"^[A-Za-z0-9_]+_purchase_log$")] = None
    vid: Optional[Int64] = None
    mac_address: Optional[Str(12, r"^([0-9A-Fa-f]{12})?$")] = None
    is_emulator: Optional[Annotated[int, Meta(ge=0, le=2)]] = None
    hiveiap_purchase_test: Optional[Str(100)] = None


_SPEC_SET = frozenset(spec.SPEC_FIELDS)
_ESCAPE_LOST = re.compile(r"^u[0-9a-f]{4}")


_VALID_DATES: dict[str, bool] = {}


def _real_time(t: str) -> bool:
    """Is "yyyy-mm-dd hh:mm:ss" (already shaped so) a real date and time? Dates are cached."""
    ok = _VALID_DATES.get(t[:10])
    if ok is None:
        try:
            datetime(int(t[:4]), int(t[5:7]), int(t[8:10]))
            ok = True
        except ValueError:
            ok = False
        if len(_VALID_DATES) > 10_000:
            _VALID_DATES.clear()
        _VALID_DATES[t[:10]] = ok
    return ok and t[11:13] <= "23" and t[14:16] <= "59" and t[17:19] <= "59"


def try_fast(record: dict, tag: str, *, in_place: bool = False) -> spec.Normalized | None:
    """The normalized record if ``record`` is already canonical and valid, else None.

    With ``in_place`` the record itself becomes the normalized one (no copy): for
    callers that own it and keep nothing else of it."""
    extra = None
    if not _SPEC_SET.issuperset(record):
        extra = {}
        for key in record:
            if key not in _SPEC_SET:
                if not isinstance(key, str) or spec.spec_name(key) is not None:
                    return None  # another spelling of a spec field: the slow path maps it
                extra[key] = record[key]
    try:
        canonical = msgspec.convert(record, Canonical)
    except msgspec.ValidationError:
        return None
    if canonical.uid is None and canonical.extra_uid is None:
        return None
    if canonical.category is None and record.get("category") is not None:
        return None
    if _ESCAPE_LOST.match(canonical.product_name):
        return None  # a warning: the slow path reports it
    if not _real_time(canonical.purchase_time):
        return None
    category = None
    if canonical.category is None:
        category = spec.category_for_tag(tag)
        if category is None:
            return None
    if in_place:
        clean = record
        if extra:
            for key in extra:
                del clean[key]
    else:
        clean = {k: v for k, v in record.items() if k in _SPEC_SET} if extra is not None else dict(record)
    clean["product_price"] = canonical.product_price  # an int price becomes a float, as the model does
    if category is not None:
        clean["category"] = category
    return spec.Normalized(record=clean, extra=extra or {})


# -- a whole batch at once ----------------------------------------------------------
#
# Straight from the journal-bound msgpack bytes into structs, no dicts: the same
# Canonical rules, except that the regex patterns are checked afterwards against a
# cache of the values already seen (most of those fields take few distinct values,
# and a regex from C costs more than the decode itself). Optional fields are UNSET
# when absent, so they stay absent; an unknown field fails the batch (the per-record
# path keeps it apart for the mirrors). Any doubt: None, and the per-record path runs.

def _without_pattern(t):
    origin = typing.get_origin(t)
    if origin is Annotated:
        base, *metas = typing.get_args(t)
        kept = []
        for m in metas:
            if isinstance(m, Meta) and m.pattern is not None:
                limits = {k: getattr(m, k) for k in ("max_length", "min_length", "ge", "le") if getattr(m, k) is not None}
                if limits:
                    kept.append(Meta(**limits))
            else:
                kept.append(m)
        return Annotated[(base, *kept)] if kept else base
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_without_pattern(a) for a in typing.get_args(t))]
    return t


def _pattern_of(t) -> str | None:
    origin = typing.get_origin(t)
    if origin is Annotated:
        for m in typing.get_args(t)[1:]:
            if isinstance(m, Meta) and m.pattern is not None:
                return m.pattern
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(t):
            found = _pattern_of(a)
            if found:
                return found
    return None


def _entry_struct():
    fields = []
    for f in msgspec.structs.fields(Canonical):
        t = _without_pattern(f.type)
        if f.required:
            fields.append((f.name, t))
        else:
            fields.append((f.name, typing.Union[t, msgspec.UnsetType], msgspec.UNSET))
    return msgspec.defstruct("CanonicalEntry", fields, forbid_unknown_fields=True)


CanonicalEntry = _entry_struct()
_PATTERNS = {f.name: re.compile(_pattern_of(f.type)) for f in msgspec.structs.fields(Canonical) if _pattern_of(f.type)}
_PATTERN_FIELDS = tuple(n for n in _PATTERNS if n != "category")
_seen_ok: dict[str, dict[str, bool]] = {name: {} for name in _PATTERNS}
_batch_decoder = msgspec.msgpack.Decoder(list[tuple[msgspec.msgpack.Ext, CanonicalEntry]])
_batch_encoder = msgspec.msgpack.Encoder()
_UNSET = msgspec.UNSET


def _matches(name: str, value: str) -> bool:
    cache = _seen_ok[name]
    ok = cache.get(value)
    if ok is None:
        ok = _PATTERNS[name].search(value) is not None
        if len(cache) > 100_000:
            cache.clear()
        cache[value] = ok
    return ok


def try_fast_batch(entries: bytes, count: int, tag: str) -> list | None:
    """[(time Ext, CanonicalEntry)] when every entry is canonical and valid, else None."""
    try:
        pairs = _batch_decoder.decode(b"\xdd" + count.to_bytes(4, "big") + entries)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    recs = [rec for _, rec in pairs]
    # Column by column: each distinct value is checked once (and cached across batches).
    for name in _PATTERN_FIELDS:
        values = set(map(attrgetter(name), recs))
        values.discard(_UNSET)
        values.discard(None)
        if not all(_matches(name, v) for v in values):
            return None
    if not all(_real_time(t) for t in set(map(attrgetter("purchase_time"), recs))):
        return None
    if any(_ESCAPE_LOST.match(n) for n in set(map(attrgetter("product_name"), recs))):
        return None
    uids = set(map(attrgetter("uid"), recs))
    if _UNSET in uids or None in uids:
        for rec in recs:
            if (rec.uid is _UNSET or rec.uid is None) and (rec.extra_uid is _UNSET or rec.extra_uid is None):
                return None
    categories = set(map(attrgetter("category"), recs))
    if None in categories:
        return None  # the per-record path replaces it, with a warning
    if _UNSET in categories:
        categories.discard(_UNSET)
        from_tag = spec.category_for_tag(tag)
        if from_tag is None:
            return None
        for rec in recs:
            if rec.category is _UNSET:
                rec.category = from_tag
    if not all(_matches("category", c) for c in categories):
        return None
    return pairs


def encode_batch(pairs: list) -> bytes:
    """Concatenated msgpack entries (no array header) of (time Ext, CanonicalEntry) pairs."""
    return array_items(_batch_encoder.encode(pairs))

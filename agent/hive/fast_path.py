"""The fast paths of normalization: records already in the spec's own terms.

Most game servers send purchase_log records spelled and typed exactly as the
spec says. For those, the slow path (agent/hive/purchase_log.py, the authority,
which also explains every problem) costs more than the rest of the pipeline
together, so these paths check them first with msgspec structs derived from the
same table (agent/hive/spec.py), validated in C, and the same cross-field and
advisory rules. They answer only "already canonical, nothing to say: here is the
record" or "not sure": anything else (an alias, a string number, a missing
field, a value that would warn) goes the slow way. Property tests hold them to
the slow path's answer in both directions: never looser, and never stricter on
what the slow path itself writes.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from operator import attrgetter
from typing import Annotated, Any, Literal, Optional

import msgspec
from msgspec import Meta

from agent.hive import spec
from agent.hive.spec import Normalized
from agent.hive.times import is_real_plain_time
from agent.protocol.forward import array_items
from agent.protocol.forward.entries import array_runs, as_array

# What format_timezone writes: GMT±HH:MM up to ±14:00, and never GMT-00:00.
_TIMEZONE = r"^GMT\+(0\d|1[0-3]):[0-5]\d$|^GMT-(00:(0[1-9]|[1-5]\d)|(0[1-9]|1[0-3]):[0-5]\d)$|^GMT[+-]14:00$"
_PLAIN_TIME = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
# Absent from a canonical record without a finding: optional in the seed, covered by a
# cross-field rule (nationality by client_ip; giftee_uid missing means null; uid or extra_uid).
_MAY_BE_ABSENT = frozenset({"nationality", "giftee_uid", "uid", "extra_uid"})


def _canonical_type(f: spec.Field) -> Any:
    """The msgspec type of a *canonical* value of one row of the table (no coercions)."""
    if f.name == "quantity":
        return Literal[spec.FIXED_QUANTITY]  # any other quantity is warned: not canonical
    if f.integer:
        return Annotated[int, Meta(**f.bounds())]
    if f.kind == "float":
        return Annotated[float, Meta(**f.bounds())]
    if f.kind == "datetime":
        return Annotated[str, Meta(pattern=_PLAIN_TIME)]
    if f.name == "timezone":
        return Annotated[str, Meta(pattern=_TIMEZONE)]
    if f.values is not None:
        return Literal[f.values]
    meta = f.bounds()
    if f.name == "guid":
        meta["min_length"] = 1  # the slow path generates an empty one
    return Annotated[str, Meta(**meta)] if meta else str


def _canonical_fields() -> list[tuple[Any, ...]]:
    required, optional = [], []
    for f in spec.FIELDS:
        t = _canonical_type(f)
        if (f.required and f.name not in _MAY_BE_ABSENT) or f.name == "guid":
            required.append((f.name, t))
        else:
            nullable = Optional[t] if f.name != "category" else t  # noqa: UP045 - t is built at run time
            optional.append((f.name, nullable, None))
    return required + optional


# Unknown fields allowed: the per-record path keeps them apart for the mirrors.
Canonical = msgspec.defstruct("Canonical", _canonical_fields(), forbid_unknown_fields=False)

_VALID_DATES: dict[str, bool] = {}


def _real_time(t: str) -> bool:
    """Is "yyyy-mm-dd hh:mm:ss" (already shaped so) a real date and time? Dates are cached."""
    ok = _VALID_DATES.get(t[:10])
    if ok is None:
        ok = is_real_plain_time(t[:10] + " 00:00:00")
        if len(_VALID_DATES) > 10_000:
            _VALID_DATES.clear()
        _VALID_DATES[t[:10]] = ok
    return ok and t[11:13] <= "23" and t[14:16] <= "59" and t[17:19] <= "59"


_ADVISED = {f.name: f for f in spec.ADVISED_FIELDS}
# Pattern of each canonical field, checked per distinct value (cached) on the batch path.
_PATTERNS: dict[str, re.Pattern[str]] = {}  # filled below, once Canonical exists


def _value_ok(name: str, value: Any) -> bool:
    """Does a value of a field pass the table's format and advisory rules?"""
    pattern = _PATTERNS.get(name)
    if pattern is not None and pattern.search(value) is None:
        return False
    if name == "purchase_time":
        return _real_time(value)
    advised = _ADVISED.get(name)
    return advised is None or advised.advice(value) is None


_ok_cache: dict[str, dict[Any, bool]] = {}


def forget_values() -> None:
    """Once a burst is over: what it cached is the few live objects that keep its memory."""
    _ok_cache.clear()


def _acceptable(name: str, value: Any) -> bool:
    """:func:`_value_ok`, cached per field and value: most fields take few distinct values."""
    cache = _ok_cache.setdefault(name, {})
    ok = cache.get(value)
    if ok is None:
        ok = _value_ok(name, value)
        if len(cache) > 4096:  # a field with many values (client_ip) gains little: bound what it holds
            cache.clear()
        cache[value] = ok
    return ok


def _nothing_to_say(rec: Any, tag: str) -> bool:
    """The cross-field and advisory rules of agent/hive/spec.py, for one canonical struct."""
    if spec.user_problem(rec.uid, rec.extra_uid) is not None:
        return False
    if rec.nationality is None and rec.client_ip is None:
        return False
    for name in _CHECKED:
        value = getattr(rec, name)
        if value is not None and not _acceptable(name, value):
            return False
    return spec.category_rule(rec.category, tag)[1] is None


def try_fast(
    record: dict[str, Any], tag: str, *, in_place: bool = False, new_guid: Callable[[], str] | None = None
) -> Normalized | None:
    """The normalized record if ``record`` is already canonical and valid, else None.

    With ``in_place`` the record itself becomes the normalized one (no copy): for
    callers that own it and keep nothing else of it. A missing guid is generated
    with ``new_guid`` (seed 003 makes guid optional; the slow path fills it the same way)."""
    extra = None
    if not spec.SPEC_SET.issuperset(record):
        extra = {}
        for key in record:
            if key not in spec.SPEC_SET:
                if not isinstance(key, str) or spec.spec_name(key) is not None:
                    return None  # another spelling of a spec field: the slow path maps it
                extra[key] = record[key]
    if record.get("category", "") is None:
        return None  # a null where the slow path says something
    had_guid, given_guid = "guid" in record, record.get("guid")
    if not given_guid:
        if new_guid is None:
            return None
        if not in_place:
            record = dict(record)
        record["guid"] = new_guid()
    try:
        canonical: Any = msgspec.convert(record, CanonicalRecord)  # a struct made at run time: no static fields
    except msgspec.ValidationError:
        canonical = None
    if canonical is None or not _nothing_to_say(canonical, tag):
        if not given_guid and in_place:  # left as it was, for the slow path and any dead letter
            if had_guid:
                record["guid"] = given_guid
            else:
                del record["guid"]
        return None
    if in_place:
        clean = record
        if extra:
            for key in extra:
                del clean[key]
    else:
        clean = {k: v for k, v in record.items() if k in spec.SPEC_SET} if extra is not None else dict(record)
    clean["product_price"] = canonical.product_price  # an int price becomes a float, as the slow path makes it
    if canonical.category is None:
        clean["category"] = spec.category_for_tag(tag)
    return Normalized(record=clean, extra=extra or {})


# -- a whole batch at once ----------------------------------------------------------
#
# Straight from the journal-bound msgpack bytes into structs, no dicts: the same
# Canonical rules, except that the regex patterns and the advisory rules are checked
# afterwards against caches of the values already seen (most of those fields take few
# distinct values, and a regex from C costs more than the decode itself). Optional
# fields are UNSET when absent, so they stay absent; an unknown field fails the batch
# (the per-record path keeps it apart for the mirrors). Any doubt: None, and the
# per-record path runs.


def _without_pattern(t: Any) -> Any:
    origin = typing.get_origin(t)
    if origin is Annotated:
        base, *metas = typing.get_args(t)
        kept = []
        for m in metas:
            if isinstance(m, Meta) and m.pattern is not None:
                limits = {
                    k: getattr(m, k) for k in ("max_length", "min_length", "ge", "le") if getattr(m, k) is not None
                }
                if limits:
                    kept.append(Meta(**limits))
            else:
                kept.append(m)
        return Annotated[(base, *kept)] if kept else base
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_without_pattern(a) for a in typing.get_args(t))]  # noqa: UP007
    return t


def _pattern_of(t: Any) -> str | None:
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


def _entry_struct() -> type:
    fields: list[tuple[Any, ...]] = []
    for f in msgspec.structs.fields(Canonical):
        t = _without_pattern(f.type)
        if f.required:
            fields.append((f.name, t))
        elif f.name == "category":  # a null there is a finding: not on this path
            fields.append((f.name, typing.Union[t, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
        else:
            fields.append((f.name, typing.Union[t, None, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
    return msgspec.defstruct("CanonicalEntry", fields, forbid_unknown_fields=True)


CanonicalEntry = _entry_struct()
_PATTERNS.update(
    {
        f.name: re.compile(pattern)
        for f in msgspec.structs.fields(Canonical)
        if (pattern := _pattern_of(f.type)) and f.name != "category"
    }
)  # category: category_rule
# Checked per distinct value (cached), after the struct, on both paths.
_CHECKED = tuple(dict.fromkeys((*_PATTERNS, *_ADVISED)))


def _record_struct() -> type:
    """Canonical without its patterns: the per-record path's struct. msgspec checks a pattern by
    calling the regex's ``search`` through a name string it makes anew each call, and CPython
    3.11's method cache keeps up to 4,096 of those names alive, slotted by address: after a
    burst of 1M records, 470 of them, scattered through the burst's pools, held four pymalloc
    arenas (4 MB) of the main process that held 59 kB of live objects in all."""
    fields: list[tuple[Any, ...]] = [
        (f.name, _without_pattern(f.type)) if f.required else (f.name, _without_pattern(f.type), f.default)
        for f in msgspec.structs.fields(Canonical)
    ]
    return msgspec.defstruct("CanonicalRecord", fields, forbid_unknown_fields=False)


CanonicalRecord = _record_struct()
_batch_decoder = msgspec.msgpack.Decoder(list[tuple[msgspec.msgpack.Ext, CanonicalEntry]])  # type: ignore[valid-type]
_batch_encoder = msgspec.msgpack.Encoder()
_UNSET = msgspec.UNSET


def _column(recs: list[Any], name: str) -> set[Any]:
    values = set(map(attrgetter(name), recs))
    values.discard(_UNSET)
    values.discard(None)
    return values


# A batch is checked and re-encoded a run of entries at a time: never in memory as structs all
# at once (what a burst leaves in the allocator follows the most small objects alive at one
# moment), and each run long enough that its column checks stay cheaper than per record.
_RUN = 128


def fast_batch(entries: bytes, count: int, tag: str) -> tuple[bytes, list[tuple[str, str, bool] | None]] | None:
    """When every entry is canonical and valid: the entries re-encoded (no array header) and each
    one's dedup key, (app_id, transaction_id, False) or None without a transaction_id (an entry of
    this path has no field outside the spec, so no refund flag). Else None."""
    try:
        runs = array_runs(as_array(entries, count), _RUN)
    except msgspec.DecodeError:
        return None
    encoded: list[bytes] = []
    keys: list[tuple[str, str, bool] | None] = []
    for run in runs:
        pairs = _fast_run(run, tag)
        if pairs is None:
            return None
        encoded.append(array_items(_batch_encoder.encode(pairs)))
        keys.extend((r.app_id, r.transaction_id, False) if r.transaction_id else None for _, r in pairs)
    return b"".join(encoded), keys


def _fast_run(run: bytes, tag: str) -> list[Any] | None:
    """[(time Ext, CanonicalEntry)] of one run (an encoded array) when every entry is canonical and valid, else None."""
    try:
        pairs: list[Any] = _batch_decoder.decode(run)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    recs = [rec for _, rec in pairs]
    # Column by column: each distinct value is checked once (and cached across batches).
    for name in _CHECKED:
        if not all(_acceptable(name, v) for v in _column(recs, name)):
            return None
    for column, other in (("uid", "extra_uid"), ("nationality", "client_ip")):
        present = set(map(attrgetter(column), recs))
        if _UNSET in present or None in present:
            for rec in recs:
                if getattr(rec, column) in (_UNSET, None) and getattr(rec, other) in (_UNSET, None):
                    return None
    from_tag = spec.category_for_tag(tag)
    categories = set(map(attrgetter("category"), recs))
    if _UNSET in categories:
        if from_tag is None:
            return None
        for rec in recs:
            if rec.category is _UNSET:
                rec.category = from_tag
        categories.discard(_UNSET)
    if any(spec.category_rule(c, tag)[1] is not None for c in categories):
        return None
    return pairs

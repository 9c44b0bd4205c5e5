"""What the ledger counts of one purchase, and sums of many. Pure: no clock, no file.

A purchase is counted under its **day** (its own ``purchase_time`` in its own
``timezone``, seen from the ledger's timezone: Hive reports in KST), its
**game** (the tag's third part) and its **currency**, with its revenue: the
price paid (seed 003 fixes quantity to 1, as the vendor payloads read it),
negative for a refund, as an exact :class:`~decimal.Decimal`. A record whose
time cannot be read is counted on the day of its event time; one without a
usable price counts as a purchase with no revenue; one without a currency is
counted under ``XXX`` (ISO 4217's "no currency").
"""

from __future__ import annotations

import collections
import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

import msgspec

from agent.hive.records import EXTRA_KEY, REFUND_VALUES, refund_state
from agent.hive.times import parse_timezone, utc_of
from agent.journal.batch import record_of
from agent.mirrors.payloads import game_of
from agent.protocol.forward.entries import array_runs

NO_CURRENCY = "XXX"
ZERO = Decimal(0)
# Records summed per decode: a batch of more is never in memory as structs all at once
# (agent/render.py); 1,024 of these small structs of six fields are about 200 kB.
_SUMS_RUN = 1024
_RECORD = itemgetter(1)  # of a decoded (time, fields) entry
_PLAIN_NUMBER = re.compile(r"-?\d{1,18}(?:\.\d{1,18})?")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
_HTTP = re.compile(r"HTTP (\d{3})\b")

# (day, game, currency): the key a purchase is counted under.
Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Facts:
    day: str
    game: str
    currency: str
    amount: Decimal


class Reader:
    """Facts of records, in one ledger timezone and with one refund rule."""

    def __init__(self, tz: timedelta, refund_field: str = "refund", refund_values: tuple[Any, ...] = REFUND_VALUES):
        self.tz = timezone(tz)
        self.refund_field = refund_field
        self.refund_values = refund_values
        self._day = functools.lru_cache(maxsize=16384)(self._day_of)
        self._price = functools.lru_cache(maxsize=4096, typed=True)(price_of)
        # The fields the facts need, and nothing else, decoded from a journal batch in one call.
        # Frozen, so hashable: a batch's distinct purchases are counted by the structs themselves, in C.
        extra = msgspec.defstruct("Extra", [(refund_field, Any, None)], frozen=True)
        fields: list[tuple[str, Any, Any]] = [
            (n, Any, None) for n in ("purchase_time", "timezone", "currency", "product_price")
        ]
        if refund_field not in {n for n, _, _ in fields}:
            fields.append((refund_field, Any, None))
        fields.append(("extra", extra | None, None))
        self._struct = msgspec.defstruct("FactFields", fields, rename={"extra": EXTRA_KEY}, frozen=True)
        self._batch = msgspec.msgpack.Decoder(list[tuple[msgspec.Raw, self._struct]])  # type: ignore[name-defined]
        self._one: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(self._struct)

    def shrink(self) -> None:
        self._day.cache_clear()
        self._price.cache_clear()

    def facts(self, tag: str, time_ns: Any, record: Any) -> Facts:
        """A record, or one kept as its msgpack (agent/journal/batch.py: ``TagBatch.one_by_one``)."""
        if isinstance(record, msgspec.Raw):
            try:
                r = self._one.decode(record)  # only the fields that count
            except (msgspec.DecodeError, msgspec.ValidationError):
                record = record_of(record)
            else:
                refund = getattr(r, self.refund_field)
                if refund is None and r.extra is not None:
                    refund = getattr(r.extra, self.refund_field)
                return self._facts(tag, time_ns, r.purchase_time, r.timezone, r.currency, r.product_price, refund)
        if not isinstance(record, dict):
            return Facts(self._event_day(time_ns), game_of(tag), NO_CURRENCY, ZERO)
        extra = record.get(EXTRA_KEY)
        refund = record.get(self.refund_field)
        if refund is None and isinstance(extra, dict):
            refund = extra.get(self.refund_field)
        return self._facts(
            tag,
            time_ns,
            record.get("purchase_time"),
            record.get("timezone"),
            record.get("currency"),
            record.get("product_price"),
            refund,
        )

    def _facts(self, tag: str, time_ns: Any, when: Any, tz: Any, currency: Any, price: Any, refund: Any) -> Facts:
        day = None
        if isinstance(when, str) and (tz is None or isinstance(tz, str)):
            # Seconds never move a day: "yyyy-mm-dd hh:mm" is the key (an ISO text with its offset, whole).
            day = self._day(when[:16] + ":00" if len(when) == 19 and when[10] == " " else when, tz)
        if not (isinstance(currency, str) and 0 < len(currency) <= 8):
            currency = NO_CURRENCY
        try:
            amount = self._price(price)
        except TypeError:  # not hashable: no price
            amount = ZERO
        if (
            amount
            and refund is not None
            and refund_state({self.refund_field: refund}, self.refund_field, self.refund_values)
        ):
            amount = -amount
        return Facts(day or self._event_day(time_ns), game_of(tag), currency, amount)

    def sums(self, tag: str, entries: bytes | memoryview) -> dict[Key, list[Any]] | None:
        """The batch's purchases by (day, game, currency) from its entries (a msgpack array: a
        payload's ``entries_array``), a run at a time, decoding only the fields that count; None
        when a record is no map of such fields (the caller decodes it all)."""
        field = self.refund_field
        distinct: collections.Counter[Any] = collections.Counter()
        try:
            # A batch of up to _SUMS_RUN entries (the array32 header says how many) is decoded
            # whole: cutting it into runs walked every entry once more.
            whole = entries[0] == 0xDD and int.from_bytes(entries[1:5], "big") <= _SUMS_RUN
            for run in (entries,) if whole else array_runs(entries, _SUMS_RUN):
                distinct.update(map(_RECORD, self._batch.decode(run)))
        except (msgspec.DecodeError, msgspec.ValidationError, IndexError):
            return None
        except TypeError:  # a value that cannot be a key (a list where a text was)
            return None
        sums: dict[Key, list[Any]] = {}
        for r, n in distinct.items():
            refund = getattr(r, field)
            if refund is None and r.extra is not None:
                refund = getattr(r.extra, field)
            f = self._facts(tag, None, r.purchase_time, r.timezone, r.currency, r.product_price, refund)
            if not f.day:
                return None  # its day is its event time's: the caller decodes the batch whole
            cell = sums.get((f.day, f.game, f.currency))
            if cell is None:
                sums[(f.day, f.game, f.currency)] = [n, f.amount * n]
            else:
                cell[0] += n
                cell[1] += f.amount * n
        return sums

    def _day_of(self, when: str, tz: str | None) -> str | None:
        try:
            return utc_of(when, tz).astimezone(self.tz).date().isoformat()
        except (ValueError, OverflowError):
            return None

    def _event_day(self, time_ns: Any) -> str:
        """The day of the event time; "" for None (the caller has the time elsewhere)."""
        if time_ns is None:
            return ""
        seconds = time_ns / 1e9 if isinstance(time_ns, int) else 0
        try:
            return datetime.fromtimestamp(seconds, UTC).astimezone(self.tz).date().isoformat()
        except (ValueError, OverflowError, OSError):
            return "1970-01-01"


def price_of(value: object) -> Decimal:
    """The price as an exact decimal (a float as it reads, 10.99 not 10.9900000000000002131…); 0
    for what is no price."""
    if isinstance(value, bool):
        return ZERO
    if isinstance(value, int):
        return Decimal(value) if abs(value) < 10**18 else ZERO
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return ZERO
    if not _PLAIN_NUMBER.fullmatch(text):
        return ZERO
    try:
        return Decimal(text)
    except InvalidOperation:
        return ZERO


def reason_code(reason: str) -> str:
    """A dead letter's reason as the ledger files it: its leading code (``missing_identifier``,
    ``invalid``, ``retry_timeout``), ``http_<status>`` for a destination's answer, else ``other``."""
    http = _HTTP.search(reason[:200])
    if http and not reason.startswith("retry_timeout"):
        return f"http_{http.group(1)}"
    m = _REASON.match(reason)
    return m.group(0) if m else "other"


class Tally:
    """Counts and revenue by (state, reason) and (day, game, currency), ready to add to the ledger.

    ``state`` is ``in``, ``delivered``, ``refused`` or ``skipped``; ``reason`` is "" for the first two."""

    __slots__ = ("counts", "refusals", "replayed")

    def __init__(self) -> None:
        self.counts: collections.defaultdict[tuple[str, str, str, str, str], list[Any]] = collections.defaultdict(
            lambda: [0, ZERO]
        )
        # Refused purchases by (app_id, transaction_id), so that a replay finds its reason again.
        self.refusals: list[tuple[str, str, str, Facts]] = []
        # Replayed dead letters settled again: (app_id, transaction_id, facts).
        self.replayed: list[tuple[str, str, Facts]] = []

    def add(self, state: str, reason: str, facts: Facts, n: int = 1) -> None:
        cell = self.counts[(state, reason, facts.day, facts.game, facts.currency)]
        cell[0] += n
        cell[1] += facts.amount * n

    def add_sums(self, state: str, reason: str, sums: dict[Key, list[Any]]) -> None:
        for (day, game, currency), (n, amount) in sums.items():
            cell = self.counts[(state, reason, day, game, currency)]
            cell[0] += n
            cell[1] += amount

    def move(self, facts: Facts, state: str, reason: str) -> None:
        """One purchase counted as delivered is refused or skipped instead."""
        self.add("delivered", "", facts, -1)
        self.add(state, reason, facts)

    def merge(self, other: Tally) -> None:
        for key, (n, amount) in other.counts.items():
            cell = self.counts[key]
            cell[0] += n
            cell[1] += amount
        self.refusals.extend(other.refusals)
        self.replayed.extend(other.replayed)

    def rows(self) -> list[tuple[str, str, str, str, str, int, str]]:
        """(state, reason, day, game, currency, n, amount) for every cell that is not nothing."""
        return [(*key, n, str(amount)) for key, (n, amount) in self.counts.items() if n or amount]

    def __bool__(self) -> bool:
        return bool(self.refusals or self.replayed) or any(n or amount for n, amount in self.counts.values())


def sums_of(reader: Reader, tag: str, entries: list[Any]) -> dict[Key, list[Any]]:
    """One journal batch's purchases summed by (day, game, currency): [n, revenue]."""
    sums: dict[Key, list[Any]] = {}
    for time_ns, record in entries:
        f = reader.facts(tag, time_ns, record)
        cell = sums.get((f.day, f.game, f.currency))
        if cell is None:
            sums[(f.day, f.game, f.currency)] = [1, f.amount]
        else:
            cell[0] += 1
            cell[1] += f.amount
    return sums


def parse_offset(text: str) -> timedelta:
    """``+09:00``, ``-05:30``, ``UTC``: the ledger's timezone. Raises ValueError."""
    offset = parse_timezone(text)
    if offset is None:
        raise ValueError(f"{text!r} is not a UTC offset such as +09:00")
    return offset

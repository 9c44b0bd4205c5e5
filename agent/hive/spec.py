"""The Hive purchase_log spec as one table, and the rules that join its fields.

Source: seed 003 (``shared/seeds/003_…``, the Korean original; where the
English summary differs, the seed wins). Every other form of the spec is
derived from :data:`FIELDS`: the field checks (agent/hive/purchase_log.py),
the msgspec fast-path structs (agent/hive/fast_path.py), the required list,
the camelCase column names and the spellings a sender may use.

Two kinds of finding:

* a *violation* breaks a rule of the table (type, length, enumeration,
  format, required). With ``strict`` it refuses the record; without, the
  value is kept as sent and warned.
* an *advisory* is worth a warning but is no violation: a code outside an ISO
  list or outside the seed's example company codes, a product name longer
  than the seed's "20자 이내", a quantity other than the seed's fixed 1, an
  alias, a category that disagrees with the tag. Never an error.

The cross-field rules (uid or extra_uid, nationality or client_ip, category
from the tag, quantity and price) are written here once and called by every
path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.hive import codes

Kind = Literal["string", "bigint", "int", "smallint", "tinyint", "float", "datetime"]

INT_RANGES = {
    "bigint": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),
    "smallint": (-(2**15), 2**15 - 1),
    "tinyint": (-(2**7), 2**7 - 1),
}
PRICE_LIMIT = 1e15  # also keeps NaN and infinities out
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = rf"^{_OCTET}(?:\.{_OCTET}){{3}}$"
CATEGORY = r"^[A-Za-z0-9_]+_purchase_log$"
LANGUAGE_TAG = r"^[a-z]{2,3}(-[a-z0-9]+)*$"
# "uc9c0" in the seed's own example: "\uc9c0" (지) that lost its backslash on the way; anywhere
# in the text ("Gem uc9c0", "uc9c0uc6d0"), though not inside a word ("menu" + hex digits).
ESCAPE_LOST = re.compile(r"(?<![A-Za-z])u[0-9a-f]{4}")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    length: int | None = None  # string(n) / varchar(n): at most n characters
    values: tuple[Any, ...] | None = None  # a closed enumeration
    pattern: str | None = None  # the format the seed describes
    required: bool = True  # the seed's 필수여부 "Y"
    mirror: bool = False  # the vendor mirrors cannot send a purchase without it
    case: Literal["upper", "lower"] | None = None  # a coercion the sources need ("us" → "US")
    known: Callable[[str], bool] | None = None  # an open code list: outside it is an advisory
    advised_length: int | None = None  # a limit the seed's description gives below the type's
    escapes_lost: bool = False  # free text where a "\uXXXX" that lost its backslash is worth a word
    empty_warned: bool = False  # valid when empty, but what uses it then has nothing (os_version)

    @property
    def camel(self) -> str:
        return camel(self.name)

    @property
    def integer(self) -> bool:
        return self.kind in INT_RANGES

    def bounds(self) -> dict[str, Any]:
        """The limits of a value, in msgspec's Meta keywords (the fast path's structs take them)."""
        if self.integer:
            lo, hi = (min(self.values), max(self.values)) if self.values else INT_RANGES[self.kind]
            return {"ge": lo, "le": hi}
        if self.kind == "float":
            return {"ge": -PRICE_LIMIT, "le": PRICE_LIMIT}
        found: dict[str, Any] = {}
        if self.length is not None:
            found["max_length"] = self.length
        if self.pattern is not None:
            found["pattern"] = self.pattern
        return found

    def advice(self, value: Any) -> tuple[str, str] | None:
        """(rule, detail) when a value valid for this field still deserves a warning."""
        if not isinstance(value, str):
            return None
        if self.empty_warned and not value:
            return "empty", f"{self.name} is empty: the vendor mirrors send none"
        if self.known is not None and value and not self.known(value):
            return "unknown_code", f"not a known {self.name} code"
        if self.advised_length is not None and len(value) > self.advised_length:
            return "longer_than_advised", f"the spec advises at most {self.advised_length} characters"
        if self.escapes_lost and ESCAPE_LOST.search(value):
            return "escape_lost", "looks like a \\uXXXX escape that lost its backslash"
        return None


def camel(name: str) -> str:
    """The final store's column name: server_id → serverId, hiveiap_purchase_test → hiveiapPurchaseTest."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


F = Field
# In the seed's order. `category` is not in the seed's table but in its transport section
# (fluentd/http: "[게임명약칭]_purchase_log"); it is filled from the tag.
FIELDS: tuple[Field, ...] = (
    F("category", "string", 200, pattern=CATEGORY, required=False),
    F("channel", "string", 3, values=codes.CHANNELS),
    F("uid", "bigint", required=False),  # required unless extra_uid: see user_problem
    F("extra_uid", "string", 30, required=False),
    F("did", "bigint"),
    F("platform", "string", 1, values=codes.PLATFORMS, mirror=True),
    F("os_version", "string", 30, empty_warned=True),
    F("market", "string", 2, values=codes.MARKETS),
    F("game_index", "smallint"),
    F("app_id", "string", 200, mirror=True),
    F("version", "string", 30),
    F("nationality", "string", 2, pattern=r"^[A-Z]{2}$", case="upper", known=codes.known_country),
    F("client_ip", "string", 15, pattern=IPV4),
    F("transaction_id", "string", 512, mirror=True),
    F("product_id", "string", 512),
    F("product_name", "string", 128, advised_length=20, escapes_lost=True),
    F("product_price", "float", mirror=True),
    F("currency", "string", 3, pattern=r"^[A-Z]{3}$", case="upper", known=codes.known_currency, mirror=True),
    F("quantity", "int"),
    F("purchase_time", "datetime", mirror=True),
    F("timezone", "string"),
    F("path", "string", 2, values=codes.PATHS),
    F("server_ip", "string", 15, pattern=IPV4),
    F("giftee_uid", "bigint"),  # missing means null: "not a gift"
    F("device_name", "string", 32),
    F("company", "string", 3, known=codes.known_company),
    F("server_id", "string"),
    F("server_uid", "bigint"),
    F("level", "int"),
    F("character_id", "bigint"),
    F("character_type_id", "int"),
    F("character_level", "int"),
    F("language", "string", 7, pattern=LANGUAGE_TAG, case="lower", known=codes.known_language),
    F("game_language", "string", known=codes.known_language),
    F("device_language", "string", known=codes.known_language),
    F("vid", "bigint", required=False),
    F("mac_address", "string", 12, pattern=r"^([0-9A-Fa-f]{12})?$", required=False),
    F("item_send_ok", "string", 1, values=codes.ITEM_SEND_OK),
    F("is_emulator", "tinyint", values=codes.EMULATOR, required=False),
    F("guid", "string", 64, required=False),  # generated when absent: the transports need it
    F("hiveiap_purchase_test", "string", 100, required=False),
)
del F

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
SPEC_FIELDS: tuple[str, ...] = tuple(BY_NAME)
SPEC_SET = frozenset(SPEC_FIELDS)
MIRROR_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.mirror)
INTEGER_FIELDS = frozenset(f.name for f in FIELDS if f.integer)
ADVISED_FIELDS: tuple[Field, ...] = tuple(
    f for f in FIELDS if f.known or f.advised_length or f.escapes_lost or f.empty_warned
)
CAMEL_NAMES: dict[str, str] = {f.name: f.camel for f in FIELDS}

REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
# A missing giftee_uid means null (not a gift), so present-as-null is fine too.
NULLABLE = frozenset({"giftee_uid"})
ALIASES = {"ip": "client_ip"}  # the seed's own example sends "ip"


def _squash(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


_SPELLINGS: dict[str, str] = {_squash(f): f for f in SPEC_FIELDS}
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


# -- findings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    value: Any
    rule: str  # a short code, the metric's label: required, too_long, not_allowed, format, …
    detail: str = ""  # for people: what the rule says

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        return f"{self.field}={shown}: {self.detail or self.rule}"


@dataclass
class Normalized:
    record: dict[str, Any]  # spec fields, snake_case
    extra: dict[str, Any] = field(default_factory=dict)  # fields outside the spec, for the mirrors
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# -- the cross-field rules ---------------------------------------------------------------


def category_for_tag(tag: str) -> str | None:
    """``ha2union.game.<game>.purchase_log`` → ``<game>_purchase_log`` (seed 003's fluentd rule)."""
    parts = tag.split(".")
    if len(parts) >= 4 and parts[0] == "ha2union" and parts[1] == "game" and parts[-1] == "purchase_log":
        return f"{parts[2]}_purchase_log"
    return None


def category_rule(value: Any, tag: str) -> tuple[str | None, Problem | None]:
    """The category to keep, and what to say about the record's own: the tag's wins."""
    from_tag = category_for_tag(tag)
    if from_tag is not None:
        if value is None or value == from_tag:
            return from_tag, None
        return from_tag, Problem("category", value, "category_mismatch", f"replaced by {from_tag!r} from the tag")
    if isinstance(value, str) and re.fullmatch(CATEGORY, value):
        return value, None
    if value is None:
        return None, None
    return None, Problem("category", value, "format", "not <game>_purchase_log, and the tag names no game")


def user_problem(uid: Any, extra_uid: Any) -> Problem | None:
    if uid is None and extra_uid is None:
        return Problem("uid", None, "required", "required (or extra_uid)")
    return None


def missing_required(record: dict[str, Any]) -> list[str]:
    """Required fields that are absent (or null where null means nothing), in the seed's order."""
    missing = []
    for name in REQUIRED:
        if record.get(name) is None and name not in NULLABLE:
            if name == "nationality" and record.get("client_ip") is not None:
                continue  # seed 003: send client_ip and the warehouse finds the country by GeoIP
            missing.append(name)
    return missing


FIXED_QUANTITY = 1  # seed 003: "유저가 구매한 상품 개수 (1로 고정)"


def quantity_problem(quantity: Any) -> Problem | None:
    """Seed 003: quantity is fixed to 1. Above it: a warning (the price paid is the revenue);
    0 or below: no purchase at all, a violation (strict mode refuses it)."""
    if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity != FIXED_QUANTITY:
        if quantity < FIXED_QUANTITY:
            return Problem("quantity", quantity, "quantity_not_positive", "the spec fixes quantity to 1")
        return Problem("quantity", quantity, "quantity_not_one", "the spec fixes quantity to 1")
    return None


def mirror_amount_problem(price: Any, quantity: Any, refund: bool) -> str | None:
    """Why a purchase's amount cannot be sent to a vendor, or None.

    ``product_price`` is what the user paid (seed 003: "유저가 결제한 상품의 가격"),
    so it is the revenue whatever the quantity says; the quantity must still be a
    whole number of at least one, and a purchase that is not a refund costs something."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return f"quantity {quantity!r} is not a whole number"
    if quantity <= 0:
        return f"quantity {quantity} is not at least 1"
    if not refund and not price > 0:
        return f"product_price {price} is not above 0 for a purchase"
    return None

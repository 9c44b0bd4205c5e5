"""The code lists a purchase_log value is checked against.

The Hive enumerations are written out as seed 003 (``shared/seeds/003_…``)
lists them; the ISO lists come from pycountry, which ships the ISO 3166-1,
ISO 639 and ISO 4217 tables (so a new currency is one dependency update away,
not a hand edit). A value outside an ISO list is a warning, never an error:
the lists change, and Hive stores what it is sent.
"""

from __future__ import annotations

import pycountry

# Closed enumerations of seed 003: a value outside them violates the spec.
CHANNELS = ("C2S", "KAK", "LIN", "WEI", "STE")
PLATFORMS = ("A", "I", "B", "W")  # Android, iOS, Bada, Windows
MARKETS = (
    "TS",
    "OL",
    "OZ",
    "AP",
    "GO",
    "SA",
    "LE",
    "MM",
    "SN",
    "36",
    "MO",
    "DN",
    "NA",
    "AM",
    "ON",
    "FU",
    "HU",
    "OP",
    "VI",
    "XI",
    "TC",
    "HS",
    "ST",
)
ITEM_SEND_OK = ("Y", "N", "")
PATHS = ("gs",)
EMULATOR = (0, 1, 2)  # device, PC emulator, PC build

# Seed 003 gives company codes as examples ("예."): another code is warned, not refused.
COMPANY_EXAMPLES = frozenset({"C2S", "GVI"})

COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)  # ISO 3166-1 alpha-2
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)  # ISO 4217
LANGUAGES = frozenset(lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2"))  # ISO 639-1


def known_country(code: str) -> bool:
    return code in COUNTRIES


def known_currency(code: str) -> bool:
    return code in CURRENCIES


def known_company(code: str) -> bool:
    return code in COMPANY_EXAMPLES


def known_language(tag: str) -> bool:
    """``ko``, ``zh-hans``: the primary subtag is an ISO 639-1 code (compared in lower case)."""
    return tag.split("-", 1)[0].lower() in LANGUAGES

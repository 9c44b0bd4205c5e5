"""The code lists a purchase_log value is checked against.

The Hive enumerations are written out as seed 003 (``shared/seeds/003_…``)
lists them; the ISO lists are pycountry's ISO 3166-1, ISO 639 and ISO 4217
tables, generated into agent/hive/iso_codes.py (frozensets of a few KiB, where
pycountry's databases hold about 7 MB in every process) and kept equal to
pycountry by tests/unit/test_iso_codes.py: a new currency is a pycountry update
and one regenerated file, not a hand edit. A value outside an ISO list is a warning, never an error:
the lists change, and Hive stores what it is sent.
"""

from __future__ import annotations

# ISO 3166-1 alpha-2, ISO 4217, ISO 639-1
from agent.hive.iso_codes import COUNTRIES as COUNTRIES
from agent.hive.iso_codes import CURRENCIES as CURRENCIES
from agent.hive.iso_codes import LANGUAGES as LANGUAGES

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


def known_country(code: str) -> bool:
    return code in COUNTRIES


def known_currency(code: str) -> bool:
    return code in CURRENCIES


def known_company(code: str) -> bool:
    return code in COMPANY_EXAMPLES


def known_language(tag: str) -> bool:
    """``ko``, ``zh-hans``: the primary subtag is an ISO 639-1 code (compared in lower case)."""
    return tag.split("-", 1)[0].lower() in LANGUAGES

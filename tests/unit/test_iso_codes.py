"""agent/hive/iso_codes.py is a generated copy of pycountry's ISO lists: this keeps it equal.

The agent holds the three lists as frozensets (a few KiB) instead of loading pycountry's
databases (about 7 MB) at start. When pycountry is updated and this test fails, write the
module anew and commit it:

    python tests/unit/test_iso_codes.py --write
"""

from __future__ import annotations

import sys
from pathlib import Path

import pycountry

from agent.hive import iso_codes

MODULE = Path(__file__).resolve().parents[2] / "agent/hive/iso_codes.py"


def from_pycountry() -> dict[str, frozenset[str]]:
    return {
        "COUNTRIES": frozenset(c.alpha_2 for c in pycountry.countries),  # ISO 3166-1 alpha-2
        "CURRENCIES": frozenset(c.alpha_3 for c in pycountry.currencies),  # ISO 4217
        "LANGUAGES": frozenset(lang.alpha_2 for lang in pycountry.languages if hasattr(lang, "alpha_2")),  # ISO 639-1
    }


def render() -> str:
    out = [
        f'"""ISO 3166-1 alpha-2, ISO 4217 and ISO 639-1 codes, generated from pycountry {pycountry.__version__}.',
        "",
        "Do not edit: tests/unit/test_iso_codes.py keeps this equal to pycountry, and writes it anew",
        '(``python tests/unit/test_iso_codes.py --write``)."""',
        "",
    ]
    for name, codes in from_pycountry().items():
        out.append(f"{name} = frozenset(")
        out.append('    """')
        ordered = sorted(codes)
        for k in range(0, len(ordered), 20):
            out.append("    " + " ".join(ordered[k : k + 20]))
        out.append('    """.split()')
        out.append(")")
    return "\n".join(out) + "\n"


def test_the_generated_code_lists_equal_pycountrys():
    for name, codes in from_pycountry().items():
        assert getattr(iso_codes, name) == codes, f"{name} differs from pycountry: run {__file__} --write"


def test_the_lists_hold_what_purchases_carry():
    assert {"KR", "JP", "TW", "US"} <= iso_codes.COUNTRIES
    assert {"KRW", "USD", "TWD", "JPY"} <= iso_codes.CURRENCIES
    assert {"ko", "ja", "zh", "en"} <= iso_codes.LANGUAGES
    assert "XX" not in iso_codes.COUNTRIES


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    MODULE.write_text(render())

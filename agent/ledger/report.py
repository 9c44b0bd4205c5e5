"""``hive-agent ledger``: the ledger's rows as a person reads them, or as JSON. Reads the file only,
so it works with the agent stopped."""

from __future__ import annotations

import collections
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.ledger.store import with_ledger

STATES = ("in", "delivered", "refused", "skipped")
CENT = Decimal("0.01")


def money(amount: Decimal) -> str:
    """Exact, with at least two decimals: 41220 → "41220.00", 0.999 → "0.999"."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(CENT)
    return f"{amount:f}"


def query(path: Path, day: str | None = None, game: str | None = None, output: str | None = None) -> list[dict]:
    """The rows shaped ``{"day", "game", "output", "in", "delivered", "refused": {reason: n},
    "skipped": {reason: n}, "pending", "duplicates", "revenue": {state: {currency: "d.dd"}}}``."""

    def read(db: sqlite3.Connection) -> tuple[list[Any], dict[tuple[str, str], int]]:
        where, args = [], []
        for column, value in (("day", day), ("game", game), ("output", output)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT day, game, output, state, reason, currency, n, amount FROM counts"
        counts = db.execute(sql + (" WHERE " + " AND ".join(where) if where else ""), args).fetchall()
        dups = {(d, g): n for d, g, n in db.execute("SELECT day, game, n FROM duplicates").fetchall()}
        return counts, dups

    counts, dups = with_ledger(path, read)
    rows: dict[tuple[str, str, str], dict] = {}
    money_by: dict[tuple[str, str, str], dict[str, collections.Counter[str]]] = {}
    for d, g, o, state, reason, currency, n, amount in counts:
        key = (d, g, o)
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "day": d,
                "game": g,
                "output": o,
                "in": 0,
                "delivered": 0,
                "refused": {},
                "skipped": {},
                "pending": 0,
                "duplicates": dups.get((d, g), 0),
            }
            money_by[key] = {s: collections.Counter() for s in (*STATES, "pending")}
        if state in ("refused", "skipped"):
            row[state][reason] = row[state].get(reason, 0) + n
        elif state in ("in", "delivered"):
            row[state] += n
        else:
            continue
        sums = money_by[key]
        sums[state][currency] += Decimal(amount)  # type: ignore[assignment]
        sums["pending"][currency] += Decimal(amount) * (1 if state == "in" else -1)  # type: ignore[assignment]
    out = []
    for key in sorted(rows):
        row = rows[key]
        row["refused"] = {k: v for k, v in sorted(row["refused"].items()) if v}
        row["skipped"] = {k: v for k, v in sorted(row["skipped"].items()) if v}
        row["pending"] = row["in"] - row["delivered"] - sum(row["refused"].values()) - sum(row["skipped"].values())
        row["revenue"] = {
            state: {c: money(Decimal(a)) for c, a in sorted(by.items()) if a or state == "in"}
            for state, by in money_by[key].items()
        }
        out.append(row)
    return out


def settled_at(path: Path) -> int | None:
    """When the ledger last took a count (ns), from its marks."""
    found = with_ledger(path, lambda db: db.execute("SELECT max(at_ns) FROM marks").fetchone())
    return found[0] if found else None


def render(rows: list[dict]) -> str:
    """One line per (day, game, output), the revenue of the first currency beside the counts."""
    head = f"{'day':<10}  {'game':<14} {'output':<14} {'in':>8} {'deliv.':>8} {'refused':>8} {'skipped':>8} "
    head += f"{'pending':>8} {'dups':>6}  revenue delivered"
    lines = [head]
    for r in rows:
        revenue = ", ".join(f"{v} {c}" for c, v in r["revenue"]["delivered"].items()) or "-"
        lines.append(
            f"{r['day']:<10}  {r['game'][:14]:<14} {r['output'][:14]:<14} {r['in']:>8} {r['delivered']:>8} "
            f"{sum(r['refused'].values()):>8} {sum(r['skipped'].values()):>8} {r['pending']:>8} "
            f"{r['duplicates']:>6}  {revenue}"
        )
        why = [f"refused {k} {v}" for k, v in r["refused"].items()] + [
            f"skipped {k} {v}" for k, v in r["skipped"].items()
        ]
        if why:
            lines.append(f"{'':<12}{'; '.join(why)}")
    if not rows:
        lines.append("(no purchases counted)")
    return "\n".join(lines)


def as_of(at_ns: int | None) -> str:
    if not at_ns:
        return "the ledger has counted nothing yet"
    when = datetime.fromtimestamp(at_ns / 1e9, UTC)
    ago = (datetime.now(UTC) - when).total_seconds()
    return f"figures as of the ledger's last settle, {when:%Y-%m-%d %H:%M:%S} UTC ({ago:.0f}s ago)"

"""Label values come from a closed set: no sender chooses a series of hive_agent_invalid_events_total."""

from __future__ import annotations

from agent.component import Metric
from agent.filters.hive import HiveFilter, HiveFilterConfig
from agent.hive import spec
from tests.unit.test_mirror_payloads import HIVE_SAMPLE, TAG


def spellings(n: int) -> list[str]:
    """Spellings of server_id that a squash maps back to it: case and separators."""
    out = []
    for i in range(n):
        letters = "".join(c.upper() if ((i + 1) >> k) & 1 else c for k, c in enumerate("serverid"))
        out.append(letters[:6] + "-" * (1 + i % 5) + letters[6:] + "_" * (i // 32))
    return out


def test_a_sender_spelling_a_field_many_ways_makes_one_label_value_not_thousands():
    hive = HiveFilter(HiveFilterConfig.validate(dict(type="hive", name="hive", dedup_window=0)))
    odd = spellings(300)
    assert all(spec.spec_name(s) == "server_id" for s in odd)
    entries = []
    for i, key in enumerate(odd):
        record = dict(HIVE_SAMPLE)
        record[key] = "KR-2"  # another spelling beside the spec's own: an "alias" finding on it
        record["transaction_id"] = f"T-{i}"
        entries.append([i, record])
    hive.apply(TAG, entries)
    invalid = [r for r in hive.readings() if r.family is Metric.INVALID]
    fields = {r.labels[0] for r in invalid}
    assert fields <= set(spec.SPEC_SET) | {"other"}, fields
    assert len(invalid) < 20  # a closed set: a handful of (field, rule) pairs, whatever was sent
    assert sum(r.value for r in invalid if r.labels == ("server_id", "alias")) == 300

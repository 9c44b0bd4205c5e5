"""A refund field's value is a refund, a purchase, or neither: "neither" is warned and counted,
never taken for a duplicate of the purchase, and the mirrors refuse it."""

from __future__ import annotations

import pytest

from agent.filters.hive import HiveFilter, HiveFilterConfig
from agent.hive.dedup_store import DedupStore
from agent.hive.records import refund_state
from agent.mirrors.payloads import Refused, purchase_from
from tests.unit.test_hive_purchase_log import COMPLETE
from tests.unit.test_mirror_payloads import HIVE_SAMPLE, TAG, normalized
from tests.wire import event_time


@pytest.mark.parametrize(
    ("value", "state"),
    [(None, False), ("Y", True), (True, True), (1, True), ("N", False), (0, False), (False, False), ("yes", None)],
)
def test_refund_state(value, state):
    record = {} if value is None else {"refund": value}
    assert refund_state(record) is state


def run(hive: HiveFilter, records: list[dict]) -> list[dict]:
    done = hive.apply(TAG, [[event_time(1_700_000_000), dict(r)] for r in records])
    if done.on_durable is not None:
        done.on_durable(True)
    hive.dedup.flush()
    return [r for _, r in done.entries]


def test_an_unknown_refund_value_is_warned_counted_and_never_a_duplicate_of_the_purchase(tmp_path):
    cfg = HiveFilterConfig.validate(dict(type="hive", name="hive"))
    hive = HiveFilter(cfg, DedupStore(tmp_path / "dedup.sqlite", 3600))
    purchase = dict(COMPLETE, transaction_id="T-1")
    assert len(run(hive, [purchase])) == 1
    passed = run(hive, [dict(purchase, refund="yes")])
    assert len(passed) == 1  # not dropped as the purchase again
    assert len(run(hive, [dict(purchase, refund="yes")])) == 1  # nor as itself: it has no key
    assert hive.stats.invalid_by_rule[("refund", "refund_value_unknown")] == 2
    assert hive.stats.duplicates == 0
    assert len(run(hive, [purchase])) == 0  # the purchase itself still is a duplicate
    hive.close()


def test_the_mirrors_refuse_an_unknown_refund_value_as_invalid():
    with pytest.raises(Refused) as refused:
        purchase_from(TAG, normalized({**HIVE_SAMPLE, "refund": "yes"}))
    assert refused.value.code == "invalid" and "refund" in str(refused.value)
    assert purchase_from(TAG, normalized({**HIVE_SAMPLE, "refund": "N"})).refund is False

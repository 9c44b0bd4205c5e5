"""One purchase whose mapping raises never costs the batch: it alone is dead-lettered as invalid."""

import collections
from datetime import UTC, datetime

from agent.journal.batch import TagBatch
from agent.outputs.naver import NaverOutput, NaverOutputConfig
from tests.unit.test_mirror_payloads import HIVE_SAMPLE, TAG, normalized


class Fragile(NaverOutput):
    """A vendor mapping with a bug that only one purchase meets."""

    def build(self, p, ids, app, now, job_state):
        if p.transaction_id == "T-5":
            raise KeyError("an unexpected shape")
        return super().build(p, ids, app, now, job_state)


def test_an_exception_while_mapping_one_purchase_dead_letters_it_and_the_rest_go_on(tmp_path):
    out = Fragile(
        NaverOutputConfig.validate(dict(type="naver", name="naver", endpoint="http://127.0.0.1:9/naver")), tmp_path
    )
    records = [normalized(dict(HIVE_SAMPLE, transaction_id=f"T-{i}", hiveiap_purchase_test="")) for i in range(10)]
    records[7] = "not even a map"
    batch = TagBatch(TAG, [[i, r] for i, r in enumerate(records)])
    jobs, dead = out._jobs([batch], datetime.now(UTC), collections.Counter(), [])
    assert sorted(job.purchase.transaction_id for job in jobs) == sorted(f"T-{i}" for i in range(10) if i not in (5, 7))
    reasons = {d[2]["transaction_id"] if isinstance(d[2], dict) else d[2]: d[3] for d in dead}
    assert set(reasons) == {"T-5", "not even a map"}
    assert reasons["T-5"].startswith("invalid: KeyError")
    assert reasons["not even a map"].startswith("invalid: AttributeError")

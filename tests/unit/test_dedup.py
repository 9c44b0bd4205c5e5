"""The transaction_id window: duplicates dropped only after the first copy is journaled."""

from agent.filters.dedup import DedupStore


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_a_committed_key_is_known_until_the_window_passes_and_survives_reopening(tmp_path):
    clock = Clock()
    store = DedupStore(tmp_path / "d.sqlite", 3600, clock)
    store.reserve(("app", "t1"))
    assert store.committed([("app", "t1")]) == set()  # reserved, not yet durable
    store.commit([("app", "t1")])
    assert store.pending == {}
    store.close()
    store = DedupStore(tmp_path / "d.sqlite", 3600, clock)
    assert store.committed([("app", "t1"), ("app", "t2"), ("other", "t1")]) == {("app", "t1")}
    clock.now += 3601
    assert store.committed([("app", "t1")]) == set()
    assert store.expire() == 1
    store.close()


def test_a_released_reservation_leaves_no_trace(tmp_path):
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    store.reserve(("app", "t1"))
    store.release([("app", "t1")])
    assert store.pending == {} and store.committed([("app", "t1")]) == set()
    store.close()


def test_many_keys_in_one_query(tmp_path):
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    keys = [("app", f"t{i}") for i in range(2000)]
    store.commit(keys[::2])
    assert store.committed(keys) == set(keys[::2])
    store.close()

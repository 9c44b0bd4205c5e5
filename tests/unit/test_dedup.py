"""The transaction_id window: duplicates dropped only after the first copy is journaled."""

from agent.hive.dedup_store import DedupStore


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_a_committed_key_is_known_until_the_window_passes_and_survives_reopening(tmp_path):
    clock = Clock()
    store = DedupStore(tmp_path / "d.sqlite", 3600, clock)
    store.reserve([("app", "t1", False)])
    assert store.committed([("app", "t1", False)]) == set()  # reserved, not yet durable
    store.commit([("app", "t1", False)])
    assert store.pending == set()
    store.close()
    store = DedupStore(tmp_path / "d.sqlite", 3600, clock)
    keys = [("app", "t1", False), ("app", "t2", False), ("other", "t1", False)]
    assert store.committed(keys) == {("app", "t1", False)}
    clock.now += 3601
    assert store.committed([("app", "t1", False)]) == set()
    store.flush()  # the sweep runs in the writer thread
    assert store.db.execute("SELECT count(*) FROM purchase_keys").fetchone()[0] == 0  # swept, not only hidden
    store.close()


def test_a_released_reservation_leaves_no_trace(tmp_path):
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    store.reserve([("app", "t1", False)])
    store.release([("app", "t1", False)])
    assert store.pending == set() and store.committed([("app", "t1", False)]) == set()
    store.close()


def test_many_keys_in_one_query(tmp_path):
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    keys = [("app", f"t{i}", i % 3 == 0) for i in range(2000)]
    store.commit(keys[::2])
    assert store.committed(keys) == set(keys[::2])
    store.close()


def test_a_purchase_and_its_refund_are_two_keys(tmp_path):
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    store.commit([("app", "t1", False)])
    assert store.committed([("app", "t1", False), ("app", "t1", True)]) == {("app", "t1", False)}
    store.commit([("app", "t1", True)])
    assert store.committed([("app", "t1", True)]) == {("app", "t1", True)}
    store.close()


def test_old_keys_expire_while_the_agent_runs_not_only_at_start(tmp_path):
    from agent.hive.dedup_store import EXPIRE_INTERVAL

    clock = Clock()
    store = DedupStore(tmp_path / "d.sqlite", 60, clock)
    store.commit([("app", f"t{i}", i % 2 == 0) for i in range(100)])

    def count():
        sql = "SELECT (SELECT count(*) FROM purchase_keys) + (SELECT count(*) FROM refund_keys)"
        return store.db.execute(sql).fetchone()[0]

    assert count() == 100
    clock.now += EXPIRE_INTERVAL + 1
    store.committed([("app", "new", False)])  # any lookup sweeps once an interval has passed
    store.flush()
    assert count() == 0
    store.close()


def test_keys_of_the_earlier_two_part_table_are_kept_as_purchases(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "d.sqlite")
    db.execute(
        "CREATE TABLE seen (app TEXT NOT NULL, txn TEXT NOT NULL, at REAL NOT NULL, "
        "PRIMARY KEY (app, txn)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO seen VALUES ('app', 't1', ?)", (Clock()(),))
    db.commit()
    db.close()
    store = DedupStore(tmp_path / "d.sqlite", 3600, Clock())
    assert store.committed([("app", "t1", False), ("app", "t1", True)]) == {("app", "t1", False)}
    store.close()


def test_a_store_of_the_apps_as_text_is_rewritten_once_and_keeps_every_key(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "d.sqlite")
    for table in ("seen", "refunds"):
        db.execute(
            f"CREATE TABLE {table} (app TEXT NOT NULL, txn TEXT NOT NULL, at REAL NOT NULL, "
            "PRIMARY KEY (app, txn)) WITHOUT ROWID"
        )
    now = Clock()()
    db.executemany("INSERT INTO seen VALUES (?, ?, ?)", [("app", "t1", now), ("other.app", "t1", now)])
    db.execute("INSERT INTO refunds VALUES ('app', 't2', ?)", (now,))
    db.commit()
    db.close()
    keys = [("app", "t1", False), ("other.app", "t1", False), ("app", "t2", True), ("app", "t2", False)]
    store = DedupStore(tmp_path / "d.sqlite", 3600, Clock())
    assert store.committed(keys) == set(keys[:3])
    tables = {name for (name,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"seen", "refunds"}.isdisjoint(tables)
    store.commit([("app", "t3", False)])
    store.close()
    store = DedupStore(tmp_path / "d.sqlite", 3600, Clock())  # opened again: nothing left to rewrite
    assert store.committed([*keys, ("app", "t3", False)]) == {*keys[:3], ("app", "t3", False)}
    store.close()


def test_the_stored_app_is_a_hash_of_the_app_id_and_apps_stay_apart(tmp_path):
    from agent.hive.dedup_store import app_hash

    store = DedupStore(tmp_path / "d.sqlite", 3600)
    apps = [f"com.example.game{i}.normal.freefull.apple.global.ios.universal" for i in range(50)]
    store.commit([(app, "same-txn", False) for app in apps[::2]])
    assert store.committed([(app, "same-txn", False) for app in apps]) == {(a, "same-txn", False) for a in apps[::2]}
    stored = {app for (app,) in store.db.execute("SELECT app FROM purchase_keys")}
    assert stored == {app_hash(a) for a in apps[::2]} and all(isinstance(a, int) for a in stored)
    store.close()


def test_a_commit_in_the_writer_thread_keeps_the_keys_pending_until_they_are_stored(tmp_path):
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    keys = [("app", f"t{i}", False) for i in range(1500)] + [("other", "t1", True)]
    store.reserve(keys)
    store.commit_soon(keys)
    # At any moment each key is pending or stored, read in that order (as the filter reads).
    for _ in range(50):
        pending = set(store.pending)
        stored = store.committed(keys)
        assert set(keys) <= pending | stored
    store.flush()
    assert store.pending == set() and store.committed(keys) == set(keys)
    store.close()


def test_lookups_cover_many_apps_and_both_tables_past_one_query_chunk(tmp_path):
    from agent.hive.dedup_store import PROBE_CHUNK

    store = DedupStore(tmp_path / "d.sqlite", 3600)
    keys = [(f"app{i % 3}", f"t{i}", i % 2 == 1) for i in range(3 * PROBE_CHUNK + 7)]
    store.commit(keys[::3])
    assert store.committed(keys) == set(keys[::3])
    assert store.committed([]) == set()
    store.close()


def test_a_store_that_gave_its_caches_back_still_knows_its_keys(tmp_path):
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    keys = [("app", f"t{i}", False) for i in range(3000)]
    store.commit(keys)
    store.shrink()
    store.flush()
    assert store.committed(keys[:10] + [("app", "new", False)]) == set(keys[:10])
    store.close()


def test_giving_caches_back_waits_for_the_writer_so_the_trim_after_it_sees_them(tmp_path):
    """agent/memory.py trims right after the components shrink: the writer thread's cache must
    be given back by then, and so must what was queued before it (a commit)."""
    store = DedupStore(tmp_path / "d.sqlite", 3600)
    keys = [("app", f"t{i}", False) for i in range(20_000)]
    store.reserve(keys)
    store.commit_soon(keys)  # tens of milliseconds of inserts in the writer thread
    store.shrink()
    assert store.pending == set()
    assert store.committed(keys[:5]) == set(keys[:5])
    store.close()


class Wall:
    """A wall clock that steps, and the monotonic clock beside it that does not."""

    def __init__(self):
        self.wall = 1_800_000_000.0
        self.mono = 1000.0

    def time(self):
        return self.wall

    def monotonic(self):
        return self.mono

    def passes(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


DAY = 86400.0


def test_a_wall_clock_step_either_way_changes_no_keys_age(tmp_path):
    from agent.hive.dedup_store import EXPIRE_INTERVAL, StoreClock

    for step in (8 * DAY, -30 * DAY):
        t = Wall()
        path = tmp_path / f"d{step}.sqlite"
        store = DedupStore(path, DAY, StoreClock(wall=t.time, monotonic=t.monotonic))
        store.commit([("app", "before", False)])
        t.wall += step  # stepped, for one batch (+8 days) or while purchases arrive (-30 days)
        store.commit([("app", "during", False)])
        t.passes(EXPIRE_INTERVAL + 1)
        store.committed([("app", "x", False)])  # a sweep runs, under the stepped clock
        store.flush()
        t.wall -= step  # and back
        t.passes(60)
        both = [("app", "before", False), ("app", "during", False)]
        assert store.committed(both) == set(both), step  # the re-sent copies are still duplicates
        store.close()


def test_a_store_reopened_under_a_clock_set_back_stamps_no_key_before_its_high_water(tmp_path):
    from agent.hive.dedup_store import StoreClock

    t = Wall()
    store = DedupStore(tmp_path / "d.sqlite", DAY, StoreClock(wall=t.time, monotonic=t.monotonic))
    store.commit([("app", "t1", False)])
    high = store.high_water()
    store.close()
    t.wall -= 30 * DAY  # the host came back with its clock a month behind
    store = DedupStore(tmp_path / "d.sqlite", DAY)  # the store's own clock, over its high water
    assert store.clock() >= high
    store.commit([("app", "t2", False)])
    assert store.high_water() >= high
    assert store.committed([("app", "t1", False), ("app", "t2", False)]) == {("app", "t1", False), ("app", "t2", False)}
    store.close()


def test_a_store_of_an_earlier_version_takes_its_newest_stamp_as_high_water(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "d.sqlite")
    db.execute(
        "CREATE TABLE seen (app TEXT NOT NULL, txn TEXT NOT NULL, at REAL NOT NULL, "
        "PRIMARY KEY (app, txn)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO seen VALUES ('app', 't1', 4102444800.0)")  # 2100-01-01: the clock was wrong then
    db.commit()
    db.close()
    store = DedupStore(tmp_path / "d.sqlite", DAY)
    assert store.high_water() >= 4102444800.0 and store.clock() >= 4102444800.0
    store.close()


def test_once_quiet_an_emptied_pending_set_gives_back_the_table_its_burst_grew(tmp_path):
    import sys

    store = DedupStore(tmp_path / "d.sqlite", 3600)
    keys = [("app", f"t{i}", False) for i in range(20_000)]
    store.reserve(keys)
    store.commit(keys)
    assert store.pending == set() and sys.getsizeof(store.pending) > 500_000  # empty, its table as grown
    store.shrink()
    assert sys.getsizeof(store.pending) < 1_000
    store.reserve([("app", "later", False)])  # still the same set: pending keys are still seen
    store.shrink()  # not emptied while a key waits
    assert store.pending == {("app", "later", False)}
    store.close()

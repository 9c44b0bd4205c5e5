"""The delivery loop against fake outputs: match, OK / RETRY / FATAL, backoff, dead letters, cursors."""

import asyncio
import io
import random

import orjson
import pytest

from agent.component import Outcome, Output
from agent.deadletter import DeadLetterStore
from agent.delivery.retry import RetrySchedule
from agent.delivery.runner import OutputRunner
from agent.journal.cursor import CursorStore
from agent.journal.journal import Journal
from agent.outputs.file import FileOutput, FileOutputConfig
from agent.outputs.stdout import StdoutOutput, StdoutOutputConfig
from tests.wire import event_time, pack


class ScriptedOutput(Output):
    """Answers each send from a script (then OK), recording what it was given."""

    def __init__(self, script=()):
        self.name = "fake"
        self.script = list(script)
        self.sent: list[tuple[str, int]] = []
        self.attempts = 0

    async def send(self, batches):
        self.attempts += 1
        outcome = self.script.pop(0) if self.script else Outcome.ok()
        if outcome.result.value == "ok":
            for b in batches:
                self.sent += [(b.tag, r["i"]) for _, r in b.entries]
        return outcome


async def fill(directory, batches, extra=None):
    """One journal record per (tag, ids), of records ``{"i": id}`` (and the fields of ``extra``)."""
    j = Journal(directory)
    j.recover()
    await j.start()
    for tag, ids in batches:
        records = (pack([event_time(1_700_000_000, i), {"i": i, **(extra or {})}]) for i in ids)
        await j.submit(tag, b"".join(records), len(ids))
    await j.close()


def runner(tmp_path, output, match="**", **retry):
    cfg = FileOutputConfig.validate(
        dict(type="file", name="fake", path="unused", match=match, retry_wait=0.01, retry_max_interval=0.05, **retry)
    )
    return OutputRunner(
        cfg, output, tmp_path / "journal", CursorStore(tmp_path / "cursors"), DeadLetterStore(tmp_path / "deadletter")
    )


async def run_then_stop(r, after: float):
    """Run the loop (retrying, say) for ``after`` seconds, then stop it as a shutdown does."""
    draining, stopping = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(r.run(draining, stopping))
    await asyncio.sleep(after)
    stopping.set()
    await asyncio.wait_for(task, 5)


async def drain(r):
    draining, stopping = asyncio.Event(), asyncio.Event()
    draining.set()
    await asyncio.wait_for(r.run(draining, stopping), 10)


async def test_only_matching_tags_are_sent_and_the_cursor_moves_past_all(tmp_path):
    await fill(tmp_path / "journal", [("a.x", [1, 2]), ("b.y", [3]), ("a.z", [4])])
    out = ScriptedOutput()
    await drain(runner(tmp_path, out, match="a.*"))
    assert out.sent == [("a.x", 1), ("a.x", 2), ("a.z", 4)]
    again = ScriptedOutput()
    await drain(runner(tmp_path, again, match="a.*"))  # resumes from the committed cursor
    assert again.sent == []


async def test_retry_then_success_delivers_once(tmp_path):
    await fill(tmp_path / "journal", [("t", [1, 2, 3])])
    out = ScriptedOutput([Outcome.retry("503"), Outcome.retry("timeout")])
    r = runner(tmp_path, out)
    await drain(r)
    assert out.attempts == 3 and out.sent == [("t", 1), ("t", 2), ("t", 3)]
    assert r.stats.retries == 2
    assert not (tmp_path / "deadletter").exists()


async def test_fatal_goes_to_the_dead_letter_store_with_the_reason(tmp_path):
    await fill(tmp_path / "journal", [("t", [1, 2]), ("t", [3])])
    out = ScriptedOutput([Outcome.fatal("400 bad request: price")])
    r = runner(tmp_path, out)
    await drain(r)
    lines = [orjson.loads(x) for x in (tmp_path / "deadletter/fake.jsonl").read_bytes().splitlines()]
    # A FATAL answer covers the whole send: every record of it, each with the reason.
    assert [(l["record"]["i"], l["reason"], l["tag"]) for l in lines] == [
        (i, "400 bad request: price", "t") for i in (1, 2, 3)
    ]
    assert lines[0]["time"] == "2023-11-14T22:13:20.000000001Z"
    assert r.stats.dead_lettered == 3
    await fill(tmp_path / "journal", [("t", [4])])
    await drain(runner(tmp_path, out))
    assert out.sent == [("t", 4)]


async def test_retries_running_out_dead_letter_instead_of_dropping(tmp_path):
    await fill(tmp_path / "journal", [("t", [7])])
    out = ScriptedOutput([Outcome.retry("down")] * 1000)
    await drain(runner(tmp_path, out, retry_timeout=0.1))
    [line] = [orjson.loads(x) for x in (tmp_path / "deadletter/fake.jsonl").read_bytes().splitlines()]
    assert line["record"] == {"i": 7} and "retry_timeout reached; last error: down" in line["reason"]


async def test_an_output_that_raises_is_retried_not_fatal(tmp_path):
    await fill(tmp_path / "journal", [("t", [1])])

    class Flaky(ScriptedOutput):
        async def send(self, batches):
            if self.attempts == 0:
                self.attempts += 1
                raise RuntimeError("bug")
            return await super().send(batches)

    out = Flaky()
    await drain(runner(tmp_path, out))
    assert out.sent == [("t", 1)]


async def test_stopping_while_retrying_keeps_the_cursor_before_the_batch(tmp_path):
    await fill(tmp_path / "journal", [("t", [1])])
    await run_then_stop(runner(tmp_path, ScriptedOutput([Outcome.retry("down")] * 1000), retry_forever=True), 0.2)
    later = ScriptedOutput()
    await drain(runner(tmp_path, later))
    assert later.sent == [("t", 1)]


async def test_file_output_path_template_per_tag(tmp_path):
    await fill(tmp_path / "journal", [("game.a.purchase", [1]), ("game.b.purchase", [2])])
    out = FileOutput("f", str(tmp_path / "out/{tag[1]}/{tag}.jsonl"))
    cfg = FileOutputConfig.validate(dict(type="file", name="f", path=str(tmp_path / "out/{tag[1]}/{tag}.jsonl")))
    await drain(OutputRunner(cfg, out, tmp_path / "journal", CursorStore(tmp_path / "c"), DeadLetterStore(tmp_path)))
    await out.close()
    a = orjson.loads((tmp_path / "out/a/game.a.purchase.jsonl").read_bytes())
    assert a["tag"] == "game.a.purchase" and a["record"] == {"i": 1}
    assert (tmp_path / "out/b/game.b.purchase.jsonl").exists()


async def test_stdout_output_writes_json_lines(tmp_path):
    await fill(tmp_path / "journal", [("t.out", [5])])
    stream = io.BytesIO()
    out = StdoutOutput("s", stream)
    cfg = StdoutOutputConfig.validate(dict(type="stdout", name="s"))
    await drain(OutputRunner(cfg, out, tmp_path / "journal", CursorStore(tmp_path / "c"), DeadLetterStore(tmp_path)))
    assert orjson.loads(stream.getvalue()) == {
        "tag": "t.out",
        "time": "2023-11-14T22:13:20.000000005Z",
        "record": {"i": 5},
    }


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    s = RetrySchedule(retry_wait=1, retry_max_interval=30, retry_timeout=1000, rng=random.Random(1))
    waits = [s.next_wait(0.0) for _ in range(8)]
    for n, w in enumerate(waits):
        base = min(2**n, 30)
        assert base * 0.875 <= w <= base * 1.125
    assert s.next_wait(1000.0) is None
    forever = RetrySchedule(retry_wait=1, retry_max_interval=5, retry_timeout=1, retry_forever=True)
    assert all(forever.next_wait(t) is not None for t in range(0, 10000, 100))
    s.reset()
    assert s.next_wait(2000.0) <= 1.125


@pytest.mark.parametrize("policy", ["interval", "off"])
async def test_other_fsync_policies_still_write_everything(tmp_path, policy):
    j = Journal(tmp_path / "journal", fsync=policy, fsync_interval=0.01)
    j.recover()
    await j.start()
    for k in range(20):
        await j.submit("t", pack([event_time(1_700_000_000, k), {"i": k}]), 1)
    await asyncio.sleep(0.05)
    await j.close()
    out = ScriptedOutput()
    await drain(runner(tmp_path, out))
    assert [i for _, i in out.sent] == list(range(20))
    assert (j.stats.fsyncs > 0) == (policy == "interval")


def test_dead_letters_of_an_oddly_named_output_are_spooled_under_a_file_name_that_maps_back(tmp_path):
    from agent.deadletter import spool_source
    from agent.paths import file_name

    store = DeadLetterStore(tmp_path / "deadletter")
    store.write_records("hive/http", [("t", 1, {"i": 1}, "HTTP 400"), ("t", 2, {"i": 2}, "HTTP 503")])
    assert store.summary()["hive_http"]["count"] == 2
    n, spool = store.take_for_replay("hive/http", "400")
    assert n == 1 and spool.parent == tmp_path / "replay"
    assert spool_source(spool) == file_name("hive/http") == "hive_http"
    assert [l["record"]["i"] for l in store.read("hive/http")] == [2]


# -- one record never blocks an output -----------------------------------------------------


class PoisonedOutput(ScriptedOutput):
    """Fails, as a rendering bug would, on any batch that holds a record marked poison."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    async def send(self, batches):
        self.attempts += 1
        if any(r.get("poison") for b in batches for _, r in b.entries):
            raise self.error
        for b in batches:
            self.sent += [(b.tag, r["i"]) for _, r in b.entries]
        return Outcome.ok()


async def fill_records(directory, tag, records):
    j = Journal(directory)
    j.recover()
    await j.start()
    await j.submit(tag, b"".join(pack([event_time(1_700_000_000, n), r]) for n, r in enumerate(records)), len(records))
    await j.close()


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("maximum recursion depth exceeded"),
        TypeError("unhashable type: 'list'"),
        OSError(36, "File name too long"),
    ],
)
async def test_a_record_that_fails_by_its_content_is_found_and_dead_lettered_the_rest_delivered(tmp_path, error):
    records = [{"i": i} for i in range(40)]
    records[23]["poison"] = True
    await fill_records(tmp_path / "journal", "t", records)
    out = PoisonedOutput(error)
    r = runner(tmp_path, out, retry_timeout=3600)
    await drain(r)
    assert sorted(i for _, i in out.sent) == [i for i in range(40) if i != 23]
    assert r.stats.retries == 0 and r.stats.dead_lettered == 1
    [dead] = [orjson.loads(line) for line in (tmp_path / "deadletter/fake.jsonl").read_bytes().splitlines()]
    assert dead["record"] == {"i": 23, "poison": True}
    assert dead["reason"].startswith(f"rejected: {type(error).__name__}")


async def test_a_transient_os_error_is_retried_not_split(tmp_path):
    await fill(tmp_path / "journal", [("t", [1, 2, 3])])

    class FullDisk(ScriptedOutput):
        async def send(self, batches):
            if self.attempts < 2:
                self.attempts += 1
                raise OSError(28, "No space left on device")
            return await super().send(batches)

    out = FullDisk()
    r = runner(tmp_path, out)
    await drain(r)
    assert out.sent == [("t", 1), ("t", 2), ("t", 3)] and r.stats.retries == 2 and r.stats.dead_lettered == 0


async def test_a_full_disk_for_the_cursor_and_the_dead_letters_is_waited_out_not_fatal(tmp_path, monkeypatch):
    await fill(tmp_path / "journal", [("t", [1, 2]), ("t", [3])])
    out = ScriptedOutput([Outcome.fatal("refused")])
    r = runner(tmp_path, out)
    failures = {"cursor": 2, "dead": 2}
    save, append = r.cursors.save, r.deadletters._append

    def full(kind, real):
        def call(*args, **kwargs):
            if failures[kind]:
                failures[kind] -= 1
                raise OSError(28, "No space left on device")
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(r.cursors, "save", full("cursor", save))
    monkeypatch.setattr(r.deadletters, "_append", full("dead", append))
    await drain(r)
    assert r.stats.dead_lettered == 3 and len(r.deadletters.read("fake")) == 3
    assert r.stats.local_io_errors >= 3 and failures == {"cursor": 0, "dead": 0}
    assert CursorStore(tmp_path / "cursors").load("fake") is not None


def test_a_dead_letter_never_fails_because_of_the_record_and_replays_as_it_was(tmp_path):
    import base64

    from agent.journal.batch import TagBatch
    from agent.journal.record import batch_payload
    from agent.replay import _entries_of

    depth = 3000  # deeper than any JSON or msgpack library here will write
    record = b"\x81\xa1k" * depth + b"\xc0"
    entry = b"\x92" + pack(event_time(1_700_000_000)) + record
    store = DeadLetterStore(tmp_path / "deadletter")
    assert store.write("out", "rejected: RecursionError", [TagBatch("t", payload=batch_payload("t", entry, 1))]) == 1
    [line] = store.read("out")
    assert base64.b64decode(line["entries_msgpack_b64"]) == entry and line["count"] == 1
    assert _entries_of(line) == (entry, 1)
    # A decoded record that JSON cannot hold keeps a description.
    assert store.write_records("out", [("t", 0, {("a", "b"): 1}, "x")]) == 1
    assert "record_repr" in store.read("out")[-1]


async def test_a_caught_up_loop_keeps_nothing_of_the_last_burst(tmp_path):
    """An idle delivery loop holds no batch, decoded or not: a burst's memory can go back."""
    import gc

    from agent.journal.batch import TagBatch

    tag = "burst.kept.nowhere"
    await fill(tmp_path / "journal", [(tag, list(range(k * 100, k * 100 + 100))) for k in range(5)])

    class Forgetful(ScriptedOutput):
        async def send(self, batches):
            outcome = await super().send(batches)
            self.sent = []  # keeps nothing itself
            return outcome

    out = Forgetful()
    r = runner(tmp_path, out)
    draining, stopping = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(r.run(draining, stopping))
    while not r.caught_up:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # idle now, polling
    gc.collect()
    assert out.attempts >= 1
    assert [o for o in gc.get_objects() if isinstance(o, TagBatch) and o.tag == tag] == []
    stopping.set()
    await task


class AckingInPieces(ScriptedOutput):
    """Takes the first ``take[k]`` batches of its k-th send (awaiting progress for each, as the
    forward output does when their acks come; none once ``take`` runs out), then fails with
    RETRY, until ``fails`` sends have failed."""

    def __init__(self, take: list[int], fails: int):
        super().__init__()
        self.take, self.fails = take, fails

    async def send_with_progress(self, batches, progress):
        self.attempts += 1
        taken = self.take.pop(0) if self.take else 0
        for n, b in enumerate(batches[:taken] if self.fails else batches, 1):
            self.sent += [(b.tag, r["i"]) for _, r in b.entries]
            await progress(n)
        if self.fails:
            self.fails -= 1
            return Outcome.retry("connection closed by the server")
        return Outcome.ok()


async def test_a_send_cut_short_is_retried_with_only_what_the_destination_did_not_take(tmp_path):
    await fill(tmp_path / "journal", [("t", [i]) for i in range(6)])
    out = AckingInPieces(take=[2, 2], fails=2)
    r = runner(tmp_path, out)
    await drain(r)
    assert out.sent == [("t", i) for i in range(6)]  # each once: 2, then 2 more, then the last 2
    assert out.attempts == 3 and r.stats.retries == 2 and r.stats.sent_records == 6


async def test_stopped_after_a_send_delivered_part_of_it_the_cursor_is_past_that_part(tmp_path):
    await fill(tmp_path / "journal", [("t", [i]) for i in range(5)])
    await run_then_stop(runner(tmp_path, AckingInPieces(take=[3], fails=10**6), retry_forever=True), 0.3)
    later = ScriptedOutput()
    await drain(runner(tmp_path, later))
    assert later.sent == [("t", 3), ("t", 4)]

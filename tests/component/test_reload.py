"""A reload's rules, in-process: which outputs restart and where they read from, the hive
filter's dedup store carried across a change, what only a restart may change."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import msgpack

from agent.app import App
from agent.config.document import load_config, load_config_text
from agent.delivery.group import DeliveryGroup
from agent.journal.journal import Journal
from agent.paths import DataPaths
from agent.reload import restart_only
from tests.unit.test_hive_purchase_log import COMPLETE
from tests.wire import event_time, pack

TAG = "ha2union.game.misample.purchase_log"


def config(tmp_path: Path, outputs: str, agent: str = "") -> str:
    return (
        f'[agent]\ndata_dir = "{tmp_path / "var"}"\n{agent}\n'
        '[[inputs]]\ntype = "forward"\nbind = "127.0.0.1"\nport = 0\nudp_heartbeat = false\n' + outputs
    )


def file_output(tmp_path: Path, name: str, **options: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in options.items())
    return f'[[outputs]]\ntype = "file"\nname = "{name}"\npath = "{tmp_path / name}.jsonl"\n{extra}'


def lines(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["record"]["seq"] for line in path.read_text().splitlines()]


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def test_only_the_agent_and_monitor_sections_need_a_restart_and_the_key_is_named(tmp_path):
    base = config(tmp_path, file_output(tmp_path, "a"))
    old = load_config_text(base, "agent.toml")
    assert restart_only(old, load_config_text(base + file_output(tmp_path, "b"), "agent.toml")) is None
    bigger = base.replace("[agent]\n", '[agent]\nshutdown_timeout = "5s"\n')
    assert restart_only(old, load_config_text(bigger, "agent.toml")) == "agent.shutdown_timeout"
    journal = base.replace("[agent]\n", '[agent.journal]\nfsync = "off"\n[agent]\n')
    assert restart_only(old, load_config_text(journal, "agent.toml")) == "agent.journal.fsync"
    monitored = base + "[monitor]\nport = 0\n"
    assert restart_only(old, load_config_text(monitored, "agent.toml")) == "monitor"


async def test_a_changed_output_resumes_from_its_cursor_a_new_one_starts_at_the_reload(tmp_path):
    paths = DataPaths(tmp_path / "var")
    journal = Journal(paths.journal, fsync="always")
    journal.recover()
    await journal.start()
    before = load_config_text(config(tmp_path, file_output(tmp_path, "a")), "agent.toml")
    group = DeliveryGroup(before, 0, paths)
    # Journaled before the delivery process has read anything: "a" has saved no cursor yet.
    await journal.submit(TAG, b"".join(pack([event_time(1), {"seq": i}]) for i in range(5)), 5)
    await group.start()
    group.running["a"].stop.set()  # stopped before it saved a cursor, as a reload right after the start
    await asyncio.wait([group.running["a"].task])
    del group.running["a"]
    after = load_config_text(
        config(tmp_path, file_output(tmp_path, "a", fsync="false") + file_output(tmp_path, "b")), "agent.toml"
    )
    await group.prepare(after, journal.end_position)
    assert await group.apply() == []
    await journal.submit(TAG, b"".join(pack([event_time(1), {"seq": i}]) for i in range(5, 8)), 3)
    await until(lambda: len(lines(tmp_path / "a.jsonl")) >= 8, "a changed output reads from its own start")
    await until(lambda: len(lines(tmp_path / "b.jsonl")) >= 3, "a new output reads what came after the reload")
    assert sorted(lines(tmp_path / "a.jsonl")) == list(range(8))
    assert lines(tmp_path / "b.jsonl") == [5, 6, 7]
    group.drain_all()
    assert await group.wait_done() == 0
    await journal.close()


async def test_a_changed_hive_filter_keeps_its_dedup_store_and_an_unchanged_input_its_connection(tmp_path):
    out = tmp_path / "hive.jsonl"
    path = tmp_path / "agent.toml"
    hive = '[[filters]]\ntype = "hive"\nname = "hive"\n'
    outputs = f'[[outputs]]\ntype = "file"\nname = "out"\npath = "{out}"\nkey_style = "snake"\n'
    path.write_text(config(tmp_path, hive + outputs))
    app = App(load_config(str(path)), path)
    async with app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.inputs[0].port)

        async def send(chunk: str, transaction_id: str) -> None:
            entries = pack([event_time(1_700_000_000), dict(COMPLETE, transaction_id=transaction_id)])
            writer.write(pack([TAG, entries, {"chunk": chunk, "size": 1}]))
            await writer.drain()
            assert msgpack.unpackb(await asyncio.wait_for(reader.read(100), 10)) == {"ack": chunk}

        await send("c1", "T-1")
        forward, hive_filter = app.inputs[0], app.ingest.filters[0]
        path.write_text(config(tmp_path, hive.replace('name = "hive"', 'name = "hive"\nstrict = true') + outputs))
        done = await app.reload()
        assert (done.result, done.changed["changed"], done.changed["kept"]) == ("ok", ["hive"], ["forward.0", "out"])
        assert app.inputs[0] is forward  # the same input, the same open connection
        assert app.ingest.filters[0] is not hive_filter and app.ingest.filters[0].strict
        await send("c2", "T-1")  # the same purchase again: still known to the new filter
        await send("c3", "T-2")
        await until(lambda: out.exists() and len(out.read_text().splitlines()) >= 2, "delivered")
        await asyncio.sleep(0.3)
        ids = [json.loads(line)["record"]["transaction_id"] for line in out.read_text().splitlines()]
        assert ids == ["T-1", "T-2"]
        assert app.ingest.filters[0].stats.duplicates == 1
        writer.close()
        await writer.wait_closed()
    assert app.exit_code == 0


async def test_a_filter_that_cannot_be_built_fails_the_reload_before_anything_stops(tmp_path):
    path = tmp_path / "agent.toml"
    outputs = file_output(tmp_path, "out")
    path.write_text(config(tmp_path, outputs))
    app = App(load_config(str(path)), path)
    async with app:
        forward = app.inputs[0]
        # A new hive filter whose dedup store cannot open: its path is a directory.
        (tmp_path / "var" / "state" / "dedup-blocked.sqlite").mkdir(parents=True)
        path.write_text(config(tmp_path, '[[filters]]\ntype = "hive"\nname = "blocked"\n' + outputs))
        done = await app.reload()
        assert done.result == "failed" and done.errors[0].startswith("filters: cannot build")
        assert app.inputs == [forward] and app.ingest.filters == [] and app.cfg.filters == []
        assert app.reloader.stats.failed == 1
        assert all(d.running for d in app.deliveries) and app.deliveries[0].restarts == 0


async def test_an_input_a_reload_replaced_is_not_kept_alive(tmp_path):
    import gc
    import weakref

    path = tmp_path / "agent.toml"
    outputs = file_output(tmp_path, "out")
    path.write_text(config(tmp_path, outputs))
    app = App(load_config(str(path)), path)
    async with app:
        replaced = []
        for n in range(3):  # a changed forward input each time: stopped, built and started again
            replaced.append(weakref.ref(app.inputs[0]))
            path.write_text(
                config(tmp_path, outputs).replace("udp_heartbeat = false", f"max_inflight_frames = {n + 2}")
            )
            assert (await app.reload()).result == "ok"
        gc.collect()
        assert [ref() for ref in replaced] == [None, None, None]

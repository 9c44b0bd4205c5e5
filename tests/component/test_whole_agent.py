"""The whole agent in the test's own event loop: `async with App(...)` starts it, a request stops
it (its delivery process is still a process, as in production)."""

from __future__ import annotations

import asyncio
import json
import time

import msgpack

from agent.app import App
from agent.config.document import load_config
from tests.wire import event_time, pack


async def test_the_whole_agent_runs_in_process_acks_delivers_and_stops_on_request(tmp_path):
    out = tmp_path / "out" / "events.jsonl"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\ndata_dir = "{tmp_path / "var"}"\n'
        '[[inputs]]\ntype = "forward"\nbind = "127.0.0.1"\nport = 0\nudp_heartbeat = false\n'
        f'[[outputs]]\ntype = "file"\nname = "local"\npath = "{out}"\n'
    )
    app = App(load_config(str(config)), config)
    async with app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.inputs[0].port)
        entries = pack([event_time(1_700_000_000), {"seq": 1}])
        writer.write(pack(["game.purchase", entries, {"chunk": "c1", "size": 1}]))
        await writer.drain()
        assert msgpack.unpackb(await asyncio.wait_for(reader.read(100), 10)) == {"ack": "c1"}
        writer.close()
        await writer.wait_closed()
        deadline = time.monotonic() + 20
        while not (out.exists() and out.read_text()):
            assert time.monotonic() < deadline, "not delivered"
            await asyncio.sleep(0.05)
        assert json.loads(out.read_text())["record"] == {"seq": 1}
    assert app.exit_code == 0
    assert not app.inputs[0].connections
    # Stopped for good: the data_dir's lock is free for the next agent.
    again = App(load_config(str(config)), config)
    async with again:
        pass
    assert again.exit_code == 0

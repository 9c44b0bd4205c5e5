"""Reload without a gap: SIGHUP, `hive-agent reload` and POST /api/reload on the control socket
re-read the config; what did not change keeps running, connections and positions included."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.agentproc import Agent, cli, file_output, forward_input, get_json, tail_input, wait_until
from tests.wire import ForwardClient, event_time

TAG = "ha2union.game.samplegame.purchase_log"
MONITOR = '[monitor]\nbind = "127.0.0.1"\nport = 0\n'


def write_config(agent: Agent, sections: str, journal: str = "") -> None:
    text = agent.config.read_text()
    head = text[: text.index("[agent.journal]")]
    agent.config.write_text(f"{head}[agent.journal]\n{journal}\n\n{sections}")


def reload_cli(agent: Agent) -> subprocess.CompletedProcess:
    return cli(agent, "reload")


def post_reload(agent: Agent) -> tuple[int, dict]:
    class Unix(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(agent.workdir / "var/state/control.sock"))

    conn = Unix("localhost", timeout=60)
    conn.request("POST", "/api/reload")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    return resp.status, body


def reloads(agent: Agent) -> dict:
    status, body = get_json(agent.monitor_port, "/api/status.json")
    assert status == 200
    return json.loads(body)["reloads"]


def entries(start: int, n: int) -> list:
    return [[event_time(1_700_000_000, i), {"seq": start + i, "pad": "x" * 100}] for i in range(n)]


def test_a_reload_adds_an_output_keeps_the_connection_and_refuses_a_bad_file(tmp_path):
    sections = MONITOR + forward_input() + file_output()
    agent = Agent(tmp_path, sections)
    try:
        agent.start()
        client = ForwardClient(agent.port)
        client.send_chunk(TAG, entries(0, 10), "before")
        agent.wait_for_output(10)
        # An output added by a reload starts at the journal's end: the 10 before it are not its.
        write_config(agent, sections + file_output("out/extra.jsonl", name="extra"))
        done = reload_cli(agent)
        assert done.returncode == 0, done.stderr
        assert "added    extra" in done.stdout
        client.send_chunk(TAG, entries(10, 10), "after")  # the same connection: it was kept
        agent.wait_for_output(20)
        extra = agent.wait_for_output(10, "out/extra.jsonl")
        assert sorted(r["record"]["seq"] for r in extra) == list(range(10, 20))

        # A file that does not validate: refused, named, the running config stays.
        agent.config.write_text(agent.config.read_text() + '\n[[outputs]]\ntype = "file"\nname = "broken"\n')
        done = reload_cli(agent)
        assert done.returncode == 1
        assert "path" in done.stderr
        status, body = post_reload(agent)
        assert status == 409 and body["result"] == "refused"
        # What only a restart can change is refused the same way, by its key.
        write_config(agent, sections, journal='max_bytes = "1GiB"')
        status, body = post_reload(agent)
        assert status == 409
        assert body["errors"] == ["agent.journal.max_bytes cannot change without a restart"]
        client.send_chunk(TAG, entries(20, 10), "still")
        agent.wait_for_output(30)
        agent.wait_for_output(20, "out/extra.jsonl")

        # SIGHUP, with the extra output removed: it is stopped, the rest keeps running.
        write_config(agent, sections)
        os.kill(agent.proc.pid, signal.SIGHUP)
        wait_until(lambda: reloads(agent)["succeeded"] == 2, what="the SIGHUP reload")
        client.send_chunk(TAG, entries(30, 10), "removed")
        agent.wait_for_output(40)
        time.sleep(0.5)
        assert len(agent.output_lines("out/extra.jsonl")) == 20
        r = reloads(agent)
        assert (r["succeeded"], r["refused"], r["failed"], r["last_result"]) == (2, 3, 0, "ok")
        _, metrics = get_json(agent.monitor_port, "/metrics")
        assert 'hive_agent_reloads_total{result="refused"} 3' in metrics
        # The public port does not reload: only the agent's user, on the control socket.
        conn = http.client.HTTPConnection("127.0.0.1", agent.monitor_port, timeout=5)
        conn.request("POST", "/api/reload")
        assert conn.getresponse().status == 403
        conn.close()
        client.close()
        assert agent.stop() == 0
    finally:
        agent.kill()


@pytest.mark.parametrize("processes", [1, 2])
def test_twenty_reloads_under_two_streaming_clients_lose_nothing_and_drop_no_connection(tmp_path, processes):
    base = MONITOR + forward_input()
    local_on = file_output(fsync=True)
    local_off = file_output(fsync=False)  # a changed output: stopped, then started again
    extra = file_output("out/extra.jsonl", name="extra")
    # With two delivery processes, "local" moves between them (output i runs in process i mod 2).
    agent = Agent(tmp_path, base + local_on, agent_section=f"delivery_processes = {processes}")
    agent.start()
    chunk, acked, errors = 100, [[], []], []
    stop = threading.Event()

    def stream(i: int) -> None:
        client = ForwardClient(agent.port)
        k = 0
        try:
            while not stop.is_set():
                start = (i * 1_000_000) + k * chunk
                client.send_chunk(TAG, entries(start, chunk), f"c{i}-{k}")
                acked[i].append(start)
                k += 1
        except Exception as exc:  # a dropped connection or a missing ack: what the test counts
            errors.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        configs = [base + extra + local_off, base + local_on, base + local_off, None]  # None: an invalid file
        expected = {"ok": 0, "refused": 0}
        for n in range(20):
            sections = configs[n % 4]
            if sections is None:
                agent.config.write_text(agent.config.read_text() + "\n[[outputs]]\ntype = 7\n")
                expected["refused"] += 1
            else:
                write_config(agent, sections)
                expected["ok"] += 1
            status, body = post_reload(agent)
            assert status == (409 if sections is None else 200), body
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(30)
        assert errors == []
        sent = {start + j for i in range(2) for start in acked[i] for j in range(chunk)}
        assert len(sent) > 2_000, "the clients sent too little for the test to mean anything"
        lines = agent.wait_for_records("seq", sent, timeout=60)
        seqs = [line["record"]["seq"] for line in lines]
        redelivered = len(seqs) - len(set(seqs))
        print(f"acked {len(sent)}, lost {len(sent - set(seqs))}, re-delivered {redelivered}")
        r = reloads(agent)
        assert (r["succeeded"], r["refused"], r["failed"]) == (expected["ok"], expected["refused"], 0)
        assert redelivered <= len(sent) // 10  # a changed output repeats at most its batch in flight
        assert agent.stop() == 0
    finally:
        stop.set()
        agent.kill()


def test_a_tail_input_across_ten_reloads_loses_and_repeats_no_line(tmp_path):
    source = tmp_path / "logs" / "app.log"
    source.parent.mkdir()
    source.write_text("")
    base = MONITOR + tail_input(str(source), tag="tail.app")
    agent = Agent(tmp_path, base + file_output())
    agent.start()
    stop = threading.Event()
    written = []

    def write() -> None:
        with open(source, "a") as f:
            n = 0
            while not stop.is_set():
                f.write(f'{{"line": {n}}}\n')
                f.flush()
                written.append(n)
                n += 1
                time.sleep(0.001)

    writer = threading.Thread(target=write)
    try:
        writer.start()
        for n in range(10):
            extra = file_output("out/extra.jsonl", name="extra") if n % 2 == 0 else ""
            write_config(agent, base + file_output() + extra)
            status, body = post_reload(agent)
            assert status == 200, body
            assert "tail.0" in body["kept"]
            time.sleep(0.2)
        stop.set()
        writer.join()
        lines = agent.wait_for_records("line", set(written), timeout=30)
        got = [line["record"]["line"] for line in lines]
        assert sorted(got) == sorted(written), "a line was lost or repeated"
        assert agent.stop() == 0
    finally:
        stop.set()
        agent.kill()

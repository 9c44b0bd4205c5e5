"""kill -9 the agent mid-stream, restart it, and count: every acknowledged record arrives."""

import random
import threading

from tests.agentproc import Agent, file_output, forward_input
from tests.wire import ForwardClient, event_time

CHUNK = 250


def chunk_entries(k: int) -> list:
    return [
        [event_time(1_700_000_000 + k, i), {"seq": k * CHUNK + i, "chunk": k, "price": "9.99", "pad": "x" * 200}]
        for i in range(CHUNK)
    ]


def send_until_killed(port: int, start: int, stop: int, acked: list[int]) -> int:
    """Send chunks start..stop; record each acked one; return the first chunk not acked."""
    client = ForwardClient(port)
    k = start
    try:
        while k < stop:
            client.send_chunk("ha2union.game.samplegame.purchase_log", chunk_entries(k), f"chunk-{k}\n")
            acked.append(k)
            k += 1
    except (ConnectionError, OSError, AssertionError):
        pass
    finally:
        client.close()
    return k


def test_sigkill_mid_stream_loses_no_acknowledged_record(tmp_path):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    total = 400
    acked: list[int] = []
    agent = Agent(tmp_path, forward_input() + file_output())
    k = 0
    kills = 0
    try:
        while k < total:
            agent.start()
            timer = None
            if kills < 3:
                timer = threading.Timer(rng.uniform(0.05, 0.4), agent.kill)
                timer.start()
            # An unacked chunk is re-sent by the client after the restart.
            k = send_until_killed(agent.port, k, total, acked)
            if timer is not None:
                timer.cancel()
                timer.join()
            if k < total:
                kills += 1
                agent.kill()
        agent.wait_for_records("seq", set(range(total * CHUNK)))
        assert agent.stop() == 0
        lines = agent.output_lines()
    finally:
        agent.kill()
    assert kills >= 1, f"the agent was never killed (seed {seed})"
    assert acked == list(range(total))
    seen = {}
    for line in lines:
        r = line["record"]
        seen.setdefault(r["seq"], r)
        assert r == seen[r["seq"]]
        assert line["tag"] == "ha2union.game.samplegame.purchase_log"
    assert set(seen) == set(range(total * CHUNK)), f"seed {seed}"
    # Re-sent chunks and re-written batches may repeat, but only a little.
    assert len(lines) - len(seen) <= kills * 2 * 5000, f"seed {seed}"


def test_sigkill_during_delivery_resumes_from_the_cursor(tmp_path):
    """Ingest everything, kill -9 while the file output is writing, restart: nothing missing."""
    agent = Agent(tmp_path, forward_input() + file_output())
    try:
        agent.start()
        client = ForwardClient(agent.port)
        for k in range(200):
            client.send_chunk("t.delivery", chunk_entries(k), f"c{k}")
        client.close()
        agent.kill()  # all acked; delivery is most likely behind
        agent.start()
        agent.wait_for_records("seq", set(range(200 * CHUNK)))
        assert agent.stop() == 0
        lines = agent.output_lines()
    finally:
        agent.kill()
    assert {line["record"]["seq"] for line in lines} == set(range(200 * CHUNK))
    assert (tmp_path / "out/events.jsonl").read_bytes().endswith(b"\n")


def test_a_flipped_bit_in_a_segment_header_after_sigkill_costs_no_acked_record(tmp_path):
    """10,000 acked records wait in the journal (their output is down), kill -9, one bit of the
    segment's header flipped: after the restart every one of them arrives."""
    down = '[[outputs]]\ntype = "forward"\nname = "hive"\nservers = [{ host = "127.0.0.1", port = 9 }]\n'
    agent = Agent(tmp_path, forward_input() + down)
    try:
        agent.start()
        client = ForwardClient(agent.port)
        for k in range(40):
            client.send_chunk("ha2union.game.samplegame.purchase_log", chunk_entries(k), f"chunk-{k}\n")
        client.close()
        agent.kill()
    finally:
        agent.kill()
    journal = tmp_path / "var" / "journal"
    [first, *_] = sorted(journal.glob("*.seg"))
    data = bytearray(first.read_bytes())
    data[9] ^= 0x04  # the version field
    first.write_bytes(bytes(data))
    # The same journal, now read by a file output: a new output reads from the oldest record.
    again = Agent(tmp_path, forward_input() + file_output())
    try:
        again.start()
        again.wait_for_records("seq", set(range(40 * CHUNK)))
        assert again.stop() == 0
    finally:
        again.kill()
    assert not list(journal.glob("*.corrupt"))

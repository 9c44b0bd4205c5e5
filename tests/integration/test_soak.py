"""SIGKILLs and full disks while two clients stream acked chunks through a forward relay: nothing
acked is lost, and about 1% of it reaches the receiver twice (issue 20, part 3). Bounded: it
stops by itself in well under two minutes."""

import collections
import os
import random
import threading
import time

import pytest

from tests.agentproc import Agent, file_output, forward_input, forward_output
from tests.integration.test_faults import fill, small_disk  # noqa: F401 (a fixture)
from tests.wire import ForwardClient, event_time

CHUNK = 200


class Stream(threading.Thread):
    """Acked chunks of ``{"c": client, "seq": n}``, each sent again until acked, to wherever the
    agent listens now; ``acked`` holds the sequence numbers the agent acknowledged."""

    def __init__(self, agent: Agent, client: int):
        super().__init__(daemon=True)
        self.agent, self.client = agent, client
        self.acked: list[int] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            seq = 0
            while not self.stopping.is_set():
                chunk = [[event_time(int(time.time())), {"c": self.client, "seq": n}] for n in range(seq, seq + CHUNK)]
                while not self.stopping.is_set():
                    client = None
                    try:
                        client = ForwardClient(self.agent.port, timeout=3)
                        client.send_chunk("soak", chunk, f"{self.client}-{seq}")
                    except (OSError, TypeError, ValueError, AssertionError):  # killed, full, or not up yet
                        time.sleep(0.05)
                        continue
                    finally:
                        if client is not None:
                            client.close()
                    self.acked.extend(range(seq, seq + CHUNK))
                    seq += CHUNK
                    break
        except BaseException as exc:
            self.error = exc


@pytest.mark.timeout(170)
def test_kills_and_full_disks_lose_nothing_and_repeat_under_one_percent(tmp_path, small_disk):  # noqa: F811
    rng = random.Random(20)
    rounds = ["kill"] * 25 + ["full"] * 15
    rng.shuffle(rounds)
    with Agent(tmp_path / "receiver", forward_input() + file_output()) as receiver:
        relay = Agent(
            tmp_path,
            forward_input()
            + forward_output(
                [("127.0.0.1", receiver.port)], require_ack_response=True, retry_wait="100ms", retry_max_interval="1s"
            ),
            journal='segment_bytes = "1MiB"\nmax_bytes = "8MiB"',
        )
        streams = [Stream(relay, c) for c in (1, 2)]
        try:
            relay.start()
            for s in streams:
                s.start()
            began = time.monotonic()
            for what in rounds:  # about 40 s
                time.sleep(rng.uniform(0.2, 0.5))
                if what == "kill":
                    relay.kill()
                    relay.start()
                else:  # another file takes the disk for a second or two
                    fill(small_disk)
                    time.sleep(rng.uniform(1.0, 1.5))
                    os.remove(small_disk / "filler")
                    os.remove(small_disk / "filler2")
            for s in streams:
                s.stopping.set()
                s.join(10)
                assert s.error is None
            acked = {(s.client, n) for s in streams for n in s.acked}
            deadline = time.monotonic() + 60
            out = receiver.workdir / "out/events.jsonl"
            while True:
                # Millions of lines: parsed only once there are as many as were acked.
                if (out.exists() and out.read_bytes().count(b"\n") >= len(acked)) or time.monotonic() > deadline:
                    got = [(line["record"]["c"], line["record"]["seq"]) for line in receiver.output_lines()]
                    if acked <= set(got) or time.monotonic() > deadline:
                        break
                time.sleep(0.5)
            assert relay.stop() == 0
            took = time.monotonic() - began
        finally:
            relay.kill()
    copies = collections.Counter(got)
    lost = len(acked - set(copies))
    again = sum(n - 1 for key, n in copies.items() if key in acked)
    print(
        f"{rounds.count('kill')} kills, {rounds.count('full')} full disks in {took:.0f}s: acked {len(acked):,}, "
        f"lost {lost}, re-delivered {again:,} ({again / max(1, len(acked)):.2%})"
    )
    assert len(acked) > 50_000
    assert lost == 0
    # 0.4-0.65% in quiet runs: the chunks whose acks were on the way at each kill (4.5% with the
    # cursor saved every 0.2 s, up to 1.6% with each read of the journal sent as one chunk). With
    # another process taking a whole core it was 1.56% once: the bound leaves room for a busy CI
    # machine and still fails on what the interval saves or whole-read chunks made.
    assert again < 0.02 * len(acked)

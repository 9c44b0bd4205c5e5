"""Forward ingest benchmark: 4 connections, PackedForward chunks of 1,000 with acks, into the journal.

Runs the agent as a subprocess on its default fsync policy ("always": every ack
means fdatasync'd), with one file output, and prints:

* ingest: records/s and MB/s from the first byte sent to the last ack;
* ack latency p50 / p99 (send of a chunk → its ack);
* end to end: records/s until the last record is a line in the output file;
* agent CPU seconds per million records and peak RSS, per process;
* the ceiling: msgpack.Unpacker decoding the same entries in this process, and
  the agent's ingest rate as a fraction of it.

    python bench/forward_ingest.py [--records 1000000] [--connections 4] [--window 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.agentproc import launch, listening_port, stop  # noqa: E402  (the one launcher)

TAG = "ha2union.game.samplegame.purchase_log"
CHUNK = 1000
DISTINCT_PAYLOADS = 24


def purchase(i: int) -> dict:
    """A purchase_log record shaped like the captured ones: 30 fields, ~700 bytes as JSON."""
    return {
        "channel": "APP_STORE",
        "uid": f"u{900000000000 + i}",
        "did": f"9531985d-5d9d-49f8-9818-{i:012d}",
        "platform": "ios",
        "os_version": "17.4.1",
        "market": "apple",
        "game_index": 1047,
        "app_id": "com.ha2union.samplegame",
        "version": "3.12.8",
        "level": i % 100,
        "nationality": "TW",
        "language": "zh-TW",
        "client_ip": f"203.0.113.{i % 250}",
        "transaction_id": f"GPA.1408-7104-{i:010d}",
        "product_id": "sg.gem_pack_500",
        "product_name": "Gem Pack 500",
        "product_price": 4.99,
        "quantity": 1,
        "currency": "TWD",
        "purchase_time": "2026-11-22T03:06:36.745Z",
        "path": "/v2/purchase",
        "server_ip": "198.51.100.6",
        "device_name": "iPad13,4",
        "company": "ha2union",
        "server_id": i % 32,
        "guid": f"{i:032x}",
        "session_id": f"{i * 7919:016x}",
        "order_id": f"O{i:010d}",
        "vip": i % 7,
        "log_type": "purchase",
    }


def event_time(sec: int, nsec: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, sec.to_bytes(4, "big") + nsec.to_bytes(4, "big"))


def build_payloads(record=purchase, distinct: int = DISTINCT_PAYLOADS) -> list[bytes]:
    packer = msgpack.Packer()
    now = int(time.time())
    payloads = []
    for p in range(distinct):
        payloads.append(
            b"".join(packer.pack([event_time(now, p * CHUNK + i), record(p * CHUNK + i)]) for i in range(CHUNK))
        )
    return payloads


def frame(payload: bytes, chunk_id: str) -> bytes:
    return (
        b"\x93"
        + msgpack.packb(TAG)
        + msgpack.packb(payload, use_bin_type=True)
        + msgpack.packb({"chunk": chunk_id, "size": CHUNK})
    )


def unpacker_ceiling(payloads: list[bytes]) -> float:
    """Records/s that msgpack.Unpacker alone decodes from the same entries (best of 3)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        n = 0
        for payload in payloads:
            unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(payload) + 1)
            unpacker.feed(payload)
            for _entry in unpacker:
                n += 1
        best = min(best, time.perf_counter() - start)
    return n / best


# -- process accounting -------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(p) for p in out.split()]


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- the client -----------------------------------------------------------------


async def connection(port: int, frames: list[bytes], window: int, latencies: list[float]) -> None:
    """Send the frames, at most ``window`` unacknowledged at a time; acks come back in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    unpacker = msgpack.Unpacker(raw=False)
    sent_at: deque[float] = deque()
    it = iter(frames)
    more = True
    while more or sent_at:
        while more and len(sent_at) < window:
            f = next(it, None)
            if f is None:
                more = False
                break
            writer.write(f)
            sent_at.append(time.perf_counter())
        await writer.drain()
        if sent_at:
            ack = next(unpacker, None)
            while ack is None:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("agent closed the connection")
                unpacker.feed(data)
                ack = next(unpacker, None)
            latencies.append(time.perf_counter() - sent_at.popleft())
    writer.close()
    await writer.wait_closed()


async def run_clients(port: int, payloads: list[bytes], records: int, connections: int, window: int):
    chunks = records // CHUNK
    per_conn = [[] for _ in range(connections)]
    for k in range(chunks):
        per_conn[k % connections].append(frame(payloads[k % len(payloads)], f"chunk-{k:08d}"))
    latencies: list[float] = []
    start = time.perf_counter()
    await asyncio.gather(*(connection(port, frames, window, latencies) for frames in per_conn))
    return time.perf_counter() - start, latencies, sum(len(f) for fs in per_conn for f in fs)


def count_lines(path: Path, state: dict) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(state.get("offset", 0))
            data = f.read()
    except FileNotFoundError:
        return 0
    state["offset"] = state.get("offset", 0) + len(data)
    state["lines"] = state.get("lines", 0) + data.count(b"\n")
    return state["lines"]


def start_agent(work: Path) -> tuple[subprocess.Popen, int]:
    """Run the agent on work/agent.toml; return it and the forward port it listens on."""
    # log_level warning hides the ready line: the listening port says it.
    agent = launch(work, ready=listening_port)
    time.sleep(0.3)  # let the listener settle
    port = listening_port(agent)
    assert port is not None
    return agent, port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_agent(agent: subprocess.Popen) -> None:
    stop(agent)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--window", type=int, default=1, help="chunks in flight per connection before waiting for an ack")
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "off"])
    args = ap.parse_args()

    payloads = build_payloads()
    ceiling = unpacker_ceiling(payloads)
    json_bytes = len(__import__("orjson").dumps(purchase(1)))

    work = Path(tempfile.mkdtemp(prefix="hive-bench-"))
    (work / "agent.toml").write_text(f"""
[agent]
data_dir = "var"
log_level = "warning"
[agent.journal]
fsync = "{args.fsync}"
max_bytes = "8GiB"
[[inputs]]
type = "forward"
bind = "127.0.0.1"
port = 0
max_frame_size = "16MiB"
[[outputs]]
type = "file"
name = "local"
path = "out/events.jsonl"
""")
    agent, port = start_agent(work)
    try:
        pids = [agent.pid] + _children(agent.pid)
        cpu0 = {p: cpu_seconds(p) for p in pids}

        t0 = time.perf_counter()
        client_cpu0 = time.process_time()
        ingest_s, latencies, wire_bytes = asyncio.run(
            run_clients(port, payloads, args.records, args.connections, args.window)
        )
        client_cpu = time.process_time() - client_cpu0
        cpu_ingest = {p: cpu_seconds(p) - cpu0[p] for p in pids}
        out = work / "out/events.jsonl"
        state: dict = {}
        total = (args.records // CHUNK) * CHUNK
        while count_lines(out, state) < total:
            if time.perf_counter() - t0 > 600:
                raise SystemExit(f"only {state.get('lines')} of {total} lines after 600s")
            time.sleep(0.02)
        e2e_s = time.perf_counter() - t0
        cpu_total = {p: cpu_seconds(p) - cpu0[p] for p in pids}
        sys_share = {p: cpu_split(p)[1] / max(cpu_seconds(p), 1e-9) for p in pids}
        rss = {p: peak_rss_mb(p) for p in pids}
    finally:
        stop_agent(agent)

    rate = total / ingest_s
    e2e = total / e2e_s
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    main_pid = agent.pid
    names = {p: ("main" if p == main_pid else "delivery") for p in pids}
    print(
        f"forward_ingest: {total:,} records ({json_bytes} bytes as JSON each), {args.connections} connections, "
        f"chunks of {CHUNK}, window {args.window}, fsync={args.fsync}"
    )
    print(f"  ingest (to the last ack):   {rate:12,.0f} records/s  {wire_bytes / ingest_s / 1e6:8.1f} MB/s on the wire")
    print(f"  ack latency:                p50 {p50:.1f} ms   p99 {p99:.1f} ms")
    print(f"  end to end (into the file): {e2e:12,.0f} records/s  ({e2e_s:.2f} s)")
    for p in pids:
        print(
            f"  {names[p]:9s} process: CPU {cpu_ingest[p] / total * 1e6:6.2f} s per million records during ingest, "
            f"{cpu_total[p] / total * 1e6:6.2f} s per million end to end ({sys_share[p]:.0%} in the kernel); "
            f"peak RSS {rss[p]:6.1f} MB"
        )
    print(f"  agent peak RSS (all processes): {sum(rss.values()):.1f} MB")
    print(
        f"  the benchmark's own client used {client_cpu / total * 1e6:.2f} s of CPU per million records "
        f"(it shares the machine's {os.cpu_count()} cores with the agent)"
    )
    print(f"  ceiling: msgpack.Unpacker decodes the same entries at {ceiling:,.0f} records/s in one process")
    print(f"  ratio: ingest / Unpacker = {rate / ceiling:.2f}   end to end / Unpacker = {e2e / ceiling:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

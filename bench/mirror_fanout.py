"""Mirror fan-out benchmark: purchases in via forward, out to three fake vendors and Hive.

The fake AppsFlyer, Wisetracker and Naver endpoints answer every request
after ``--latency`` (20 ms), from a separate process (a bare asyncio HTTP/1.1
server, so that the fakes cost little CPU); Hive is a forward receiver in the
same process that acks without decoding. Each mirror output has
``--in-flight`` (64) requests in flight, so its ceiling is in-flight ÷
latency = 3,200 events/s. The baseline, measured first in the same run:
aiohttp alone posting to the same fake with as many requests in flight,
nothing else to do. Prints, per vendor: events/s, its fraction of the
ceiling and of the baseline, end-to-end lag p50/p99 (sent by the game
server → received by the vendor); CPU s per million purchases per agent
process; RSS sampled every second (to show whether it stays flat).

    python bench/mirror_fanout.py [--purchases 200000] [--in-flight 64] [--latency 0.02] [--only appsflyer]
                                  [--processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward_ingest import _children, cpu_split, free_port, stop_agent

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.agentproc import launch  # noqa: E402  (the one launcher)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


APP = "com.com2us.benchgame.normal.freefull.google.global.android.common"
TAG = "ha2union.game.benchgame.purchase_log"
VENDORS = ("appsflyer", "wisetracker", "naver")
TXN = re.compile(rb"B-(\d+)")


# -- the fake vendors: one process, one port per vendor -------------------------------


class _Http(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answer each request with 200 after the latency; note its purchase."""

    def __init__(self, name, latency, queue):
        self.name, self.latency, self.queue = name, latency, queue
        self.buf = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            m = re.search(rb"content-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4 : head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length :]
            m = TXN.search(body)
            seq = int(m.group(1)) if m else -1
            asyncio.get_running_loop().call_later(self.latency, self._answer, seq)

    def _answer(self, seq):
        self.queue.append((self.name, seq, time.time()))
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")


def vendor_process(ports: dict, latency: float, conn) -> None:
    async def main():
        received: list = []
        loop = asyncio.get_running_loop()
        servers = [
            await loop.create_server(lambda n=name: _Http(n, latency, received), "127.0.0.1", port)
            for name, port in ports.items()
        ]
        conn.send("ready")
        while True:
            await asyncio.sleep(0.5)
            if conn.poll():
                conn.recv()
                conn.send(received)
                for s in servers:
                    s.close()
                return

    asyncio.run(main())


# -- Hive: a forward receiver that acks --------------------------------------------------


class _ForwardAck(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=256 << 20)

    def data_received(self, data):
        self.unpacker.feed(data)
        for msg in self.unpacker:
            if isinstance(msg, list) and len(msg) >= 3 and isinstance(msg[-1], dict) and "chunk" in msg[-1]:
                self.transport.write(msgpack.packb({"ack": msg[-1]["chunk"]}))


# -- the agent ---------------------------------------------------------------------------


def config(forward_port: int, hive_port: int, ports: dict, in_flight: int, only: str | None, processes: int) -> str:
    out = f"""[agent]
data_dir = "var"
log_level = "warning"
shutdown_timeout = "5s"
delivery_processes = {processes}

[[inputs]]
type = "forward"
bind = "127.0.0.1"
port = {forward_port}

[[filters]]
type = "hive"
match = "ha2union.game.*.purchase_log"

[[outputs]]
type = "forward"
name = "hive"
match = "ha2union.game.*.purchase_log"
servers = [{{ host = "127.0.0.1", port = {hive_port} }}]
require_ack_response = true
"""
    for vendor in VENDORS:
        if only and vendor != only:
            continue
        url = f"http://127.0.0.1:{ports[vendor]}"
        out += f'\n[[outputs]]\ntype = "{vendor}"\nname = "{vendor}"\nin_flight = {in_flight}\nretry_wait = "100ms"\n'
        if vendor == "appsflyer":
            out += (
                f'endpoint = "{url}"\nrate_limit = 100000\n[outputs.apps."{APP}"]\napp_id = "com.x.bench"\n'
                f'token = "t"\n'
            )
        elif vendor == "wisetracker":
            out += f'endpoint = "{url}/s2s/v1/s2sDataRcv.do"\n[outputs.apps."{APP}"]\nservice_number = 1\ntoken = "t"\n'
        else:
            out += f'endpoint = "{url}/naver"\nrate_limit = 100000\n'  # the agent's capacity, not the pacing
    return out


def purchase(i: int, kst: str) -> dict:
    return {
        "channel": "C2S",
        "uid": 10_000 + i,
        "did": 50_000 + i,
        "platform": "A",
        "os_version": "14",
        "market": "GO",
        "game_index": 2414,
        "app_id": APP,
        "version": "1.2.3",
        "nationality": "KR",
        "client_ip": "10.1.2.3",
        "transaction_id": f"B-{i}",
        "product_id": "gem_100",
        "product_name": "Gem 100",
        "product_price": 1.99,
        "currency": "USD",
        "quantity": 1,
        "purchase_time": kst,
        "timezone": "GMT+09:00",
        "path": "gs",
        "server_ip": "10.0.0.1",
        "giftee_uid": None,
        "device_name": "SM-G991N",
        "company": "C2S",
        "server_id": "KR-1",
        "server_uid": i,
        "level": 10,
        "character_id": 0,
        "character_type_id": 0,
        "character_level": 0,
        "language": "ko",
        "game_language": "ko",
        "device_language": "ko",
        "item_send_ok": "Y",
        "appsflyer_id": f"1700000000000-{i:07d}",
        "advertising_id": f"ad-{i}",
    }


def send_all(port: int, n: int, chunk: int = 500) -> list[float]:
    """Send n purchases in acked PackedForward chunks; return each purchase's send time."""
    sent_at = [0.0] * n
    kst = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 9 * 3600))
    sock = socket.create_connection(("127.0.0.1", port))
    unpacker = msgpack.Unpacker(raw=False)
    now = int(time.time())
    for k in range(0, n, chunk):
        entries = b"".join(
            msgpack.packb([msgpack.ExtType(0, now.to_bytes(4, "big") + i.to_bytes(4, "big")), purchase(i, kst)])
            for i in range(k, min(n, k + chunk))
        )
        frame = msgpack.packb([TAG, entries, {"chunk": f"c{k}", "size": min(chunk, n - k)}], use_bin_type=True)
        t = time.time()
        sock.sendall(frame)
        for i in range(k, min(n, k + chunk)):
            sent_at[i] = t
        while next(unpacker, None) is None:
            unpacker.feed(sock.recv(65536))
    sock.close()
    return sent_at


def client_baseline(port: int, in_flight: int, seconds: float = 5.0) -> float:
    """Requests/s that aiohttp alone, with nothing else to do, gets from the same fake: the
    practical ceiling of one Python process, measured in this run."""
    import aiohttp

    async def run() -> float:
        done = 0
        stop = time.perf_counter() + seconds
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:

            async def worker():
                nonlocal done
                while time.perf_counter() < stop:
                    async with session.post(
                        f"http://127.0.0.1:{port}/inappevent/x",
                        data=b'{"n":1}',
                        headers={"Content-Type": "application/json"},
                    ) as resp:
                        await resp.read()
                    done += 1

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return done / (time.perf_counter() - start)

    try:
        import uvloop

        return uvloop.run(run())
    except ImportError:
        return asyncio.run(run())


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--purchases", type=int, default=200_000)
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--only", choices=VENDORS, default=None, help="one vendor output instead of three")
    ap.add_argument("--processes", type=int, default=1, help="[agent] delivery_processes")
    args = ap.parse_args()
    vendors = [v for v in VENDORS if not args.only or v == args.only]
    ports = {v: free_port() for v in VENDORS}
    parent, child = multiprocessing.Pipe()
    fakes = multiprocessing.Process(target=vendor_process, args=(ports, args.latency, child), daemon=True)
    fakes.start()
    assert parent.recv() == "ready"

    baseline = client_baseline(ports["appsflyer"], args.in_flight)
    loop = asyncio.new_event_loop()
    hive_port = free_port()
    hive = loop.run_until_complete(loop.create_server(_ForwardAck, "127.0.0.1", hive_port))
    import threading

    threading.Thread(target=loop.run_forever, daemon=True).start()

    work = Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    forward_port = free_port()
    (work / "agent.toml").write_text(config(forward_port, hive_port, ports, args.in_flight, args.only, args.processes))
    agent = launch(work, ready=lambda _: _accepts(forward_port))
    try:
        time.sleep(0.5)
        children = _children(agent.pid)
        cpu0 = [sum(cpu_split(agent.pid))] + [sum(cpu_split(c)) for c in children]
        start = time.time()
        sent_at = send_all(forward_port, args.purchases)
        ingest_s = time.time() - start
        snapshots = [
            work / "var" / "state" / ("delivery.json" if g == 0 else f"delivery-{g}.json")
            for g in range(args.processes)
        ]
        rss: list[tuple[float, float, float]] = []
        import orjson

        while True:
            time.sleep(1.0)
            rss.append((time.time() - start, rss_mb(agent.pid), sum(rss_mb(c) for c in children)))
            outs = {}
            for snapshot in snapshots:
                try:
                    outs.update(orjson.loads(snapshot.read_bytes())["outputs"])
                except (FileNotFoundError, ValueError):
                    pass
            done = [outs.get(v, {}).get("output_stats", {}).get("accepted", 0) for v in vendors]
            if all(d >= args.purchases for d in done) and outs.get("hive", {}).get("sent_records", 0) >= args.purchases:
                break
            if time.time() - start > 1800:
                print("gave up after 30 minutes", done)
                break
        cpu1 = [sum(cpu_split(agent.pid))] + [sum(cpu_split(c)) for c in children]
    finally:
        stop_agent(agent)
        parent.send("done")
        received = parent.recv()
        fakes.join(5)
        hive.close()
        shutil.rmtree(work, ignore_errors=True)

    ceiling = args.in_flight / args.latency
    print(
        f"{args.purchases:,} purchases, {len(vendors)} vendor outputs + Hive in {args.processes} delivery "
        f"process{'es' if args.processes > 1 else ''}; {args.in_flight} in flight, "
        f"{args.latency * 1000:.0f} ms answers: ceiling {ceiling:,.0f} events/s per vendor"
    )
    print(f"client baseline (aiohttp alone, {args.in_flight} in flight, same fake): {baseline:,.0f} requests/s")
    print(f"ingest (forward, acked): {args.purchases / ingest_s:,.0f} purchases/s")
    for vendor in vendors:
        times = [(seq, t) for name, seq, t in received if name == vendor and seq >= 0]
        first, last = min(t for _, t in times), max(t for _, t in times)
        rate = len(times) / (last - first) if last > first else float("nan")
        lags = [t - sent_at[seq] for seq, t in times]
        dup = len(times) - len({seq for seq, _ in times})
        print(
            f"{vendor:12s} {rate:8,.0f} events/s = {rate / ceiling:.0%} of the ceiling, {rate / baseline:.2f} of "
            f"the client baseline; lag p50 {percentile(lags, 0.5):.1f} s, p99 {percentile(lags, 0.99):.1f} s; "
            f"{dup} duplicates"
        )
    per_million = [(b - a) / args.purchases * 1e6 for a, b in zip(cpu0, cpu1)]
    print(f"CPU s per million purchases: main {per_million[0]:.1f}, delivery {sum(per_million[1:]):.1f}")
    marks = rss[:: max(1, len(rss) // 6)] + rss[-1:]
    print("RSS over the run (s: main + delivery MB): " + ", ".join(f"{t:.0f}: {m:.0f}+{d:.0f}" for t, m, d in marks))
    later = rss[len(rss) // 4 :]
    if later:
        totals = [m + d for _, m, d in later]  # main + delivery
        print(f"RSS after the first quarter: min {min(totals):.0f} MB, max {max(totals):.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

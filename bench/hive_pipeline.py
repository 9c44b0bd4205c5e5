"""Hive pipeline benchmark: forward in → Hive filter + dedup → journal → forward out → a receiver that acks.

Spec-valid purchase_log records (about 30 fields) go in as in the ingest
benchmark (4 connections, PackedForward chunks of 1,000 with acks, fsync on),
through the hive filter (spec validation, dedup window in SQLite) and out
by the forward output (require_ack_response) to a receiver in this process
that decodes every frame with the agent's own codec and acks it. Printed:

* end to end: records/s until the receiver has acked every record;
* the same records through ingest only (no filter, no forward), measured in
  the same run, and the ratio of the two;
* CPU seconds per million records and peak RSS per agent process;
* the most journal bytes seen on disk at once (the backlog the RSS held up to).

    python bench/hive_pipeline.py [--records 1000000] [--backlog]

With ``--backlog`` the receiver stays away until every record is ingested, so
the whole run waits in the journal on disk; it prints the peak RSS with that
backlog and the rate at which the forward output drains it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forward_ingest import (
    CHUNK,
    _children,
    build_payloads,
    cpu_seconds,
    peak_rss_mb,
    run_clients,
    start_agent,
    stop_agent,
)

from agent.protocol.forward import EventBatch, ForwardDecoder, ack_bytes

TAG = "ha2union.game.samplegame.purchase_log"


def hive_purchase(i: int) -> dict:
    """A purchase_log record valid under the spec (strict)."""
    return {
        "channel": "C2S",
        "uid": 900000000000 + i,
        "did": 700000000000 + i,
        "platform": "I" if i % 2 else "A",
        "os_version": "17.4.1",
        "market": "AP" if i % 2 else "GO",
        "game_index": 1047,
        "app_id": "com.com2us.samplegame.normal.freefull.apple.global.ios.universal",
        "version": "3.12.8",
        "nationality": "TW",
        "client_ip": f"203.0.113.{i % 250}",
        "transaction_id": f"GPA.1408-7104-{i:012d}",
        "product_id": "sg.gem_pack_500",
        "product_name": "Gem Pack 500",
        "product_price": 4.99,
        "currency": "TWD",
        "quantity": 1,
        "purchase_time": "2026-11-22 12:06:36",
        "timezone": "GMT+09:00",
        "path": "gs",
        "server_ip": "198.51.100.6",
        "giftee_uid": None,
        "device_name": "iPad13,4",
        "company": "C2S",
        "server_id": f"KR-{i % 32}",
        "server_uid": 5_000_000 + i,
        "level": i % 100,
        "character_id": 0,
        "character_type_id": 0,
        "character_level": 0,
        "language": "zh",
        "game_language": "zh-hant",
        "device_language": "zh-hant",
        "item_send_ok": "Y",
        "guid": f"{i:032x}",
    }


class AckingReceiver:
    """A forward receiver on 127.0.0.1 that acks every chunk and counts records."""

    def __init__(self, port: int = 0, start: bool = True):
        self.records = 0
        self.loop = asyncio.new_event_loop()
        self.port = port
        self._ready = threading.Event()
        if start:
            self.start()

    def start(self):
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", self.port))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _conn(self, reader, writer):
        decoder = ForwardDecoder()
        while data := await reader.read(1 << 18):
            for frame in decoder.feed(data, time.time_ns()):
                if isinstance(frame, EventBatch):
                    self.records += frame.count
                    if frame.chunk is not None:
                        writer.write(ack_bytes(frame.chunk))
        writer.close()


def config(fsync: str, pipeline: bool, receiver_port: int = 0) -> str:
    text = f"""
[agent]
data_dir = "var"
log_level = "warning"
[agent.journal]
fsync = "{fsync}"
max_bytes = "8GiB"
[[inputs]]
type = "forward"
bind = "127.0.0.1"
port = 0
"""
    if pipeline:
        text += f"""
[[filters]]
type = "hive"
name = "hive-normalize"
match = "ha2union.game.*.purchase_log"
strict = true
dedup_window = "7d"
[[outputs]]
type = "forward"
name = "hive"
match = "ha2union.game.*.purchase_log"
servers = [{{ host = "127.0.0.1", port = {receiver_port} }}]
require_ack_response = true
ack_response_timeout = "30s"
retry_wait = "200ms"
retry_max_interval = "1s"
recover_wait = "1s"
"""
    else:
        text += '[[outputs]]\ntype = "stdout"\nname = "none"\nmatch = "nothing.matches.this"\n'
    return text


def journal_bytes(work: Path) -> int:
    return sum(p.stat().st_size for p in (work / "var/journal").glob("*.seg"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "off"])
    ap.add_argument(
        "--backlog",
        action="store_true",
        help="keep the receiver away until every record is ingested: the whole run waits on disk",
    )
    args = ap.parse_args()
    total = (args.records // CHUNK) * CHUNK
    # Distinct transaction ids for every record: the dedup window must not drop any.
    payloads = build_payloads(hive_purchase, distinct=total // CHUNK)

    # 1. Ingest only: the same records, no filter, nothing delivered.
    work = Path(tempfile.mkdtemp(prefix="hive-bench-ingest-"))
    (work / "agent.toml").write_text(config(args.fsync, pipeline=False))
    agent, port = start_agent(work)
    try:
        ingest_s, _, _ = asyncio.run(run_clients(port, payloads, total, 4, 1))
    finally:
        stop_agent(agent)
        shutil.rmtree(work, ignore_errors=True)
    ingest_rate = total / ingest_s

    # 2. The whole pipeline.
    if args.backlog:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        receiver = AckingReceiver(port, start=False)
    else:
        receiver = AckingReceiver()
    work = Path(tempfile.mkdtemp(prefix="hive-bench-pipeline-"))
    (work / "agent.toml").write_text(config(args.fsync, pipeline=True, receiver_port=receiver.port))
    agent, port = start_agent(work)
    max_backlog = 0
    rss_backlog = {}
    try:
        pids = [agent.pid] + _children(agent.pid)
        cpu0 = {p: cpu_seconds(p) for p in pids}
        t0 = time.perf_counter()
        pipeline_ingest_s, _, _ = asyncio.run(run_clients(port, payloads, total, 4, 1))
        if args.backlog:
            max_backlog = journal_bytes(work)
            rss_backlog = {p: peak_rss_mb(p) for p in pids}
            t0 = time.perf_counter()  # from here: the drain of the backlog
            receiver.start()
        while receiver.records < total:
            max_backlog = max(max_backlog, journal_bytes(work))
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"only {receiver.records} of {total} records after 900s")
            time.sleep(0.05)
        e2e_s = time.perf_counter() - t0
        cpu = {p: cpu_seconds(p) - cpu0[p] for p in pids}
        rss = {p: peak_rss_mb(p) for p in pids}
        dead = list((work / "var/deadletter").glob("*.jsonl")) if (work / "var/deadletter").exists() else []
    finally:
        stop_agent(agent)
        shutil.rmtree(work, ignore_errors=True)

    e2e = total / e2e_s
    names = {p: ("main" if p == agent.pid else "delivery") for p in pids}
    print(
        f"hive_pipeline: {total:,} spec-valid purchases, 4 connections, chunks of {CHUNK} with acks, "
        f"fsync={args.fsync}, hive filter (strict, dedup 7d) → forward with require_ack_response"
    )
    what = "drain of the backlog (acked)" if args.backlog else "end to end (acked by the receiver)"
    print(f"  {what + ':':37s}  {e2e:10,.0f} records/s  ({e2e_s:.1f} s)")
    print(f"  ingest into the pipeline (last ack):  {total / pipeline_ingest_s:10,.0f} records/s")
    print(f"  ingest only, same records, same run:  {ingest_rate:10,.0f} records/s")
    if not args.backlog:
        print(f"  ratio: end to end / ingest only = {e2e / ingest_rate:.2f}")
    for p in pids:
        print(
            f"  {names[p]:9s} process: CPU {cpu[p] / total * 1e6:6.2f} s per million records; peak RSS {rss[p]:6.1f} MB"
        )
    print(
        f"  agent peak RSS (all processes): {sum(rss.values()):.1f} MB; "
        f"most journal on disk at once: {max_backlog / 1e6:.0f} MB"
    )
    print(f"  dead-letter files: {len(dead)} (every record is spec-valid: expect 0)")
    if args.backlog:
        print(
            f"  with the whole run on disk ({max_backlog / 1e6:.0f} MB of journal), before the receiver came: "
            f"peak RSS {sum(rss_backlog.values()):.1f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

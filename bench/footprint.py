"""Footprint benchmark: the agent's memory idle, under load and after it, on two configs.

For each config, the shipped ``conf/agent.toml`` (forward in, the Hive filter, a local
file) and ``conf/examples/sidecar.toml`` (forward in, the Hive filter, forward out to Hive
and the three vendor mirrors; here pointed at local fakes), it:

1. starts the agent and waits for its "ready" line, then 10 s more, with nothing flowing,
   and prints RSS, PSS and USS of every agent process (``/proc/PID/smaps_rollup``) and
   their sums; with the CPU the agent used over those 10 s;
2. sends ``--records`` (1,000,000) records over 4 connections in acked PackedForward
   chunks of 1,000 and waits until every one is delivered (to the file, or acked by the
   Hive receiver), sampling each process's RSS every 0.1 s: prints the peak per process
   and the peak of their sum;
3. waits 30 s more and prints the same figures as in 1, and their ratio to idle.

The baseline, measured first and alone in the same run: a bare
``python -c "import asyncio; asyncio.run(asyncio.sleep(60))"`` process's PSS; the
agent's idle PSS is printed as a multiple of it.

On the sidecar config most purchases are test purchases (``hiveiap_purchase_test``),
which Hive receives and the mirrors skip; one in ``--mirrored-every`` (100) is a real
purchase with the identifiers the mirrors need, so the three fakes (answering in 5 ms)
see 10,000 each and the run stays minutes long, not an hour.

    python bench/footprint.py [--records 1000000] [--only agent|sidecar] [--after 30]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward_ingest import (
    CHUNK,
    _children,
    build_payloads,
    count_lines,
    cpu_seconds,
    free_port,
    run_clients,
    stop_agent,
)
from hive_pipeline import hive_purchase
from mirror_fanout import _ForwardAck, vendor_process

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.agentproc import launch  # noqa: E402  (the one launcher)

SIDECAR_APP = "com.com2us.samplegame.normal.freefull.google.global.android.common"


def smaps(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of one process, in MB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss": fields.get("Rss", 0) / 1024, "pss": fields.get("Pss", 0) / 1024, "uss": uss / 1024}


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def baseline_pss() -> float:
    """PSS of a bare asyncio process, measured alone."""
    proc = subprocess.Popen([sys.executable, "-c", "import asyncio; asyncio.run(asyncio.sleep(60))"])
    try:
        time.sleep(2.0)
        return smaps(proc.pid)["pss"]
    finally:
        proc.kill()
        proc.wait()


# -- configs ------------------------------------------------------------------------------


def shipped_config(forward_port: int, monitor_port: int) -> str:
    text = (ROOT / "conf/agent.toml").read_text()
    text = text.replace("port = 24224", f"port = {forward_port}").replace("port = 24220", f"port = {monitor_port}")
    return text


def sidecar_config(forward_port: int, monitor_port: int, hive_port: int, vendors: dict[str, int]) -> str:
    text = (ROOT / "conf/examples/sidecar.toml").read_text()
    text = text.replace('data_dir = "/var/lib/hive-agent"', 'data_dir = "var"')
    text = text.replace("port = 24224\n", f"port = {forward_port}\n").replace("port = 24220", f"port = {monitor_port}")
    text = re.sub(r"servers = \[[^\]]*\]", f'servers = [{{ host = "127.0.0.1", port = {hive_port} }}]', text)
    text = text.replace('shared_key = "env:HIVE_FORWARD_SHARED_KEY"\n', "")  # the fake Hive does no handshake
    text = text.replace("https://api3.appsflyer.com", f"http://127.0.0.1:{vendors['appsflyer']}")
    text = text.replace(
        "https://trk.analytics.wisetracker.co.kr/s2s/v1/s2sDataRcv.do",
        f"http://127.0.0.1:{vendors['wisetracker']}/s2s/v1/s2sDataRcv.do",
    )
    # Unpaced (Naver's default is 10/s): the load's purchases reach the fake within the run.
    text = text.replace(
        'endpoint = "https://relay.example/naver"',
        f'endpoint = "http://127.0.0.1:{vendors["naver"]}/naver"\nrate_limit = 100000',
    )
    return text


SIDECAR_ENV = {
    "AF_TOKEN_SAMPLEGAME": "bench-af",
    "AF_TOKEN_SAMPLEGAME_IOS": "bench-af-ios",
    "WT_TOKEN_SAMPLEGAME": "bench-wt",
    "NAVER_RELAY_TOKEN": "bench-naver",
}


def sidecar_purchase(mirrored_every: int):
    def record(i: int) -> dict:
        r = hive_purchase(i)
        r["platform"] = "A"
        r["market"] = "GO"
        r["app_id"] = SIDECAR_APP
        r["purchase_time"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 9 * 3600))
        if i % mirrored_every:
            r["hiveiap_purchase_test"] = "1"
        else:
            r["appsflyer_id"] = f"1700000000000-{i:07d}"
            r["advertising_id"] = f"ad-{i}"
        return r

    return record


# -- the run ------------------------------------------------------------------------------


class Agent:
    def __init__(self, work: Path, env: dict[str, str]):
        self.work = work
        self.log_path = work / "agent.log"
        self.proc = launch(work, env=env, timeout=60, ready=lambda _: b"hive-agent ready" in self.log_path.read_bytes())

    def pids(self) -> list[int]:
        return [self.proc.pid] + _children(self.proc.pid)

    def memory(self) -> dict[int, dict[str, float]]:
        return {p: smaps(p) for p in self.pids()}


def print_memory(what: str, agent: Agent, mem: dict[int, dict[str, float]]) -> float:
    total = {k: sum(m[k] for m in mem.values()) for k in ("rss", "pss", "uss")}
    print(f"  {what}:")
    for pid, m in mem.items():
        name = "main" if pid == agent.proc.pid else "delivery"
        print(f"    {name:9s} RSS {m['rss']:6.1f} MB  PSS {m['pss']:6.1f} MB  USS {m['uss']:6.1f} MB")
    print(f"    all       RSS {total['rss']:6.1f} MB  PSS {total['pss']:6.1f} MB  USS {total['uss']:6.1f} MB")
    return total["pss"]


class Sampler(threading.Thread):
    """Each process's RSS every 0.1 s: the peak per process and of their sum."""

    def __init__(self, agent: Agent):
        super().__init__(daemon=True)
        self.agent = agent
        self.peaks: dict[int, float] = {}
        self.peak_sum = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            now = {p: rss_mb(p) for p in self.agent.pids()}
            for p, v in now.items():
                self.peaks[p] = max(self.peaks.get(p, 0.0), v)
            self.peak_sum = max(self.peak_sum, sum(now.values()))


def scenario(name: str, args, baseline: float) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"footprint-{name}-"))
    forward_port, monitor_port = free_port(), free_port()
    env: dict[str, str] = {}
    hive_server = fakes = parent = loop = None
    acked = {"records": 0}
    if name == "agent":
        (work / "agent.toml").write_text(shipped_config(forward_port, monitor_port))
        payloads = build_payloads(hive_purchase, distinct=args.records // CHUNK)
        out = work / "var/out/events.jsonl"
        state: dict = {}

        def delivered() -> int:
            return count_lines(out, state)
    else:
        vendors = {v: free_port() for v in ("appsflyer", "wisetracker", "naver")}
        parent, child = multiprocessing.Pipe()
        fakes = multiprocessing.Process(target=vendor_process, args=(vendors, 0.005, child), daemon=True)
        fakes.start()
        assert parent.recv() == "ready"
        loop = asyncio.new_event_loop()
        hive_port = free_port()

        class Counting(_ForwardAck):
            def data_received(self, data):
                self.unpacker.feed(data)
                for msg in self.unpacker:
                    if isinstance(msg, list) and len(msg) >= 3 and isinstance(msg[-1], dict) and "chunk" in msg[-1]:
                        acked["records"] += msg[-1].get("size", 0)
                        self.transport.write(__import__("msgpack").packb({"ack": msg[-1]["chunk"]}))

        hive_server = loop.run_until_complete(loop.create_server(Counting, "127.0.0.1", hive_port))
        threading.Thread(target=loop.run_forever, daemon=True).start()
        (work / "agent.toml").write_text(sidecar_config(forward_port, monitor_port, hive_port, vendors))
        env = SIDECAR_ENV
        payloads = build_payloads(sidecar_purchase(args.mirrored_every), distinct=args.records // CHUNK)

        mirrored = len(range(0, args.records // CHUNK * CHUNK, args.mirrored_every))
        snapshot = work / "var/state/delivery.json"

        def delivered() -> int:
            """Hive's acks, once every vendor has accepted every mirrored purchase too."""
            try:
                outputs = orjson.loads(snapshot.read_bytes())["outputs"]
            except (FileNotFoundError, ValueError, KeyError):
                return 0
            accepted = [outputs.get(v, {}).get("output_stats", {}).get("accepted", 0) for v in vendors]
            return acked["records"] if min(accepted) >= mirrored else 0

    total = (args.records // CHUNK) * CHUNK
    print(f"footprint: {name} ({'conf/agent.toml' if name == 'agent' else 'conf/examples/sidecar.toml'})")
    agent = Agent(work, env)
    try:
        time.sleep(args.idle)
        cpu0 = {p: cpu_seconds(p) for p in agent.pids()}
        time.sleep(10.0)
        idle_cpu = sum(cpu_seconds(p) - cpu0[p] for p in cpu0) / 10.0
        idle = print_memory(f"idle, {args.idle + 10:.0f} s after ready", agent, agent.memory())
        print(f"    idle CPU over 10 s: {idle_cpu:.2%} of a core")
        print(f"    agent idle PSS / bare asyncio process PSS ({baseline:.1f} MB) = {idle / baseline:.2f}")

        sampler = Sampler(agent)
        sampler.start()
        t0 = time.perf_counter()
        ingest_s, _, _ = asyncio.run(run_clients(forward_port, payloads, total, 4, 1))
        while delivered() < total:
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"only {delivered()} of {total} records delivered after 900 s")
            time.sleep(0.05)
        e2e_s = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        print(f"  load: {total:,} records, ingest {total / ingest_s:,.0f}/s, all delivered in {e2e_s:.1f} s")
        for pid, peak in sampler.peaks.items():
            print(f"    {'main' if pid == agent.proc.pid else 'delivery':9s} peak RSS {peak:6.1f} MB")
        print(f"    all       peak RSS {sampler.peak_sum:6.1f} MB (the most at one moment)")
        time.sleep(args.after)
        after = print_memory(f"{args.after:.0f} s after the load", agent, agent.memory())
        print(f"    PSS after the load / idle PSS = {after / idle:.2f}")
    finally:
        stop_agent(agent.proc)
        if parent is not None:
            parent.send("done")
            received = parent.recv()
            fakes.join(5)
            by_vendor = {v: sum(1 for n, _, _ in received if n == v) for v in ("appsflyer", "wisetracker", "naver")}
            print("  the fake vendors received: " + ", ".join(f"{v} {n:,}" for v, n in by_vendor.items()))
        if hive_server is not None:
            loop.call_soon_threadsafe(hive_server.close)
            loop.call_soon_threadsafe(loop.stop)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--only", choices=["agent", "sidecar"], default=None)
    ap.add_argument("--idle", type=float, default=0.0, help="seconds to wait after ready before the 10 s idle window")
    ap.add_argument("--after", type=float, default=30.0, help="seconds to wait after the load")
    ap.add_argument("--mirrored-every", type=int, default=100)
    args = ap.parse_args()
    baseline = baseline_pss()
    print(f"baseline: a bare asyncio process holds {baseline:.1f} MB PSS")
    for name in ("agent", "sidecar"):
        if args.only in (None, name):
            scenario(name, args, baseline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

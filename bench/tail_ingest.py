"""Tail ingest benchmark: a 1,000,000-line file of purchase records, read from head into the journal.

Runs the agent as a subprocess on its default fsync policy ("always": a
position moves only after fdatasync), with one output that cannot deliver
(so the delivery process stays idle and the journal keeps everything), and
prints:

* ingest: lines/s and MB/s from the moment the file appears in the watched
  directory until the position file says its last line is durable;
* CPU seconds per million lines and peak RSS, per process;
* the ceiling: reading and parsing the same file with orjson in a plain loop
  in this process, and the agent's rate as a fraction of it;
* idle: CPU of the agent (both processes) while it watches 1,000 files that
  do not change, as a percentage of one core.

    python bench/tail_ingest.py [--lines 1000000] [--idle-files 1000] [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward_ingest import _children, cpu_split, free_port, peak_rss_mb, purchase, stop_agent

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.agentproc import launch  # noqa: E402  (the one launcher)


def write_file(path: Path, lines: int) -> int:
    with open(path, "wb") as f:
        for start in range(0, lines, 10_000):
            f.write(b"".join(orjson.dumps(purchase(i)) + b"\n" for i in range(start, min(lines, start + 10_000))))
    return path.stat().st_size


def orjson_ceiling(path: Path) -> float:
    """Lines/s of reading the file and parsing every line with orjson, in a plain loop."""
    start = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
            n += 1
    return n / (time.perf_counter() - start)


def config(work: Path, pattern: str) -> str:
    return f"""[agent]
data_dir = "var"
log_level = "warning"
shutdown_timeout = "3s"

[[inputs]]
type = "tail"
path = "{pattern}"
tag = "ha2union.game.samplegame.purchase_log"
read_from_head = true
stat_interval = "100ms"

[[outputs]]
type = "forward"
name = "blocked"
match = "**"
servers = [{{ host = "127.0.0.1", port = {free_port()} }}]
"""


def start_agent(work: Path) -> subprocess.Popen:
    pos = work / "var" / "tail" / "tail.0.pos.json"
    return launch(work, ready=lambda _: pos.exists())  # written once the input has started


def positions(work: Path) -> dict[str, int]:
    try:
        data = orjson.loads((work / "var" / "tail" / "tail.0.pos.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return {f["path"]: f["offset"] for f in data["files"]}


def wait_read(work: Path, sizes: dict[str, int], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pos = positions(work)
        if all(pos.get(p) == size for p, size in sizes.items()):
            return
        time.sleep(0.02)
    raise SystemExit(f"not read in {timeout}s")


def cpu_both(agent: subprocess.Popen) -> tuple[float, float]:
    main = sum(cpu_split(agent.pid))
    delivery = sum(sum(cpu_split(c)) for c in _children(agent.pid))
    return main, delivery


def ingest(lines: int, base: Path) -> None:
    work = base / "ingest"
    (work / "logs").mkdir(parents=True)
    src = work / "purchase.json"
    print(f"writing {lines:,} lines ...", flush=True)
    size = write_file(src, lines)
    ceiling = max(orjson_ceiling(src) for _ in range(2))
    (work / "agent.toml").write_text(config(work, str(work / "logs" / "*.json")))
    agent = start_agent(work)
    time.sleep(2)  # its directory watches are up
    try:
        cpu0 = cpu_both(agent)
        target = work / "logs" / "purchase.json"
        start = time.perf_counter()
        os.rename(src, target)
        wait_read(work, {str(target): size})
        elapsed = time.perf_counter() - start
        cpu1 = cpu_both(agent)
        rss_main = peak_rss_mb(agent.pid)
        rss_delivery = sum(peak_rss_mb(c) for c in _children(agent.pid))
    finally:
        stop_agent(agent)
    rate = lines / elapsed
    per_million = [(b - a) / lines * 1e6 for a, b in zip(cpu0, cpu1)]
    print(f"file: {lines:,} lines, {size / 1e6:.0f} MB ({size / lines:.0f} bytes a line)")
    print(
        f"ingest into the journal (fsync always): {rate:,.0f} lines/s, {size / elapsed / 1e6:.1f} MB/s "
        f"({elapsed:.2f} s)"
    )
    print(f"CPU s per million lines: main {per_million[0]:.2f}, delivery {per_million[1]:.2f}")
    print(f"peak RSS: main {rss_main:.0f} MB + delivery {rss_delivery:.0f} MB = {rss_main + rss_delivery:.0f} MB")
    print(f"ceiling (read + orjson.loads per line, plain loop): {ceiling:,.0f} lines/s")
    print(f"ratio agent / ceiling: {rate / ceiling:.2f}")


def idle(files: int, seconds: float, base: Path) -> None:
    work = base / "idle"
    logs = work / "logs"
    logs.mkdir(parents=True)
    sizes = {}
    for i in range(files):
        p = logs / f"game{i:04d}.json"
        p.write_bytes(b"".join(orjson.dumps(purchase(i * 3 + k)) + b"\n" for k in range(3)))
        sizes[str(p)] = p.stat().st_size
    (work / "agent.toml").write_text(config(work, str(logs / "*.json")).replace('stat_interval = "100ms"\n', ""))
    agent = start_agent(work)
    try:
        wait_read(work, sizes)
        time.sleep(2)
        cpu0 = cpu_both(agent)
        time.sleep(seconds)
        cpu1 = cpu_both(agent)
    finally:
        stop_agent(agent)
    used = [(b - a) / seconds * 100 for a, b in zip(cpu0, cpu1)]
    print(
        f"idle with {files:,} watched files over {seconds:.0f} s: main {used[0]:.2f}% + delivery {used[1]:.2f}% "
        f"= {sum(used):.2f}% of a core"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--idle-files", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tail-bench-"))
    try:
        ingest(args.lines, base)
        idle(args.idle_files, args.idle_seconds, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

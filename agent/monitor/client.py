"""``hive-agent status`` and ``hive-agent tap``: the running agent, asked through its monitor
(the status on its TCP port, the tap on its control socket under data_dir).

Two reads of ``/api/status.json`` a moment apart give the rates; the
dead-letter store (on this host, under data_dir) gives dead letters by output
and reason. The exit code is 0 when the agent is healthy, 1 when it is not,
2 when it cannot be asked (no [monitor] section, or nothing answers).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

from agent.config.document import AgentConfig
from agent.deadletter import DeadLetterStore
from agent.paths import DataPaths


class Unreachable(Exception):
    pass


def monitor_url(cfg: AgentConfig, path: str) -> str:
    """The running agent's monitor: from the config, or, with port = 0, from what the agent wrote down."""
    if cfg.monitor is None:
        raise Unreachable("the config has no [monitor] section: the running agent cannot be asked")
    bind, port = cfg.monitor.bind, cfg.monitor.port
    if port == 0:  # the system chose it: the running agent wrote it down
        try:
            bind, _, chosen = DataPaths(cfg.agent.data_dir).monitor_address.read_text().rpartition(":")
            port = int(chosen)
        except (OSError, ValueError):
            raise Unreachable("monitor port = 0 and no running agent wrote down the port it got") from None
    host = "127.0.0.1" if bind in ("0.0.0.0", "") else "::1" if bind == "::" else bind
    return f"http://{host if ':' not in host else f'[{host}]'}:{port}{path}"


def fetch(url: str, timeout: float = 5.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # our own monitor
            data: dict[str, Any] = json.load(resp)
            return data
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise Unreachable(f"no answer from the monitor at {url}: {exc}") from None


def collect(cfg: AgentConfig, interval: float = 1.0) -> dict[str, Any]:
    """The status, with events/s per input and records/s per output over ``interval``."""
    url = monitor_url(cfg, "/api/status.json")
    first = fetch(url)
    started = time.monotonic()
    time.sleep(interval)
    second = fetch(url)
    elapsed = max(time.monotonic() - started, 1e-3)
    before_in = {i["name"]: i for i in first["inputs"]}
    before_out = {o["name"]: o for o in first["outputs"]}
    for inp in second["inputs"]:
        inp["events_per_second"] = round((inp["events"] - before_in.get(inp["name"], inp)["events"]) / elapsed, 1)
    for out in second["outputs"]:
        out["sent_per_second"] = round((out["sent"] - before_out.get(out["name"], out)["sent"]) / elapsed, 1)
    summary = DeadLetterStore(DataPaths(cfg.agent.data_dir).deadletter).summary(samples=0)
    second["dead_letters"] = {source: dict(info["reasons"]) for source, info in summary.items()}
    return second


def render(status: dict[str, Any]) -> str:
    lines = [
        f"hive-agent: {'healthy' if status['healthy'] else 'UNHEALTHY'}, up {status['uptime_seconds']:.0f}s",
        *(f"  ! {p}" for p in status["problems"]),
        "inputs",
    ]
    for i in status["inputs"]:
        lines.append(
            f"  {i['name']:<24} {i['type']:<10} {i['open']:<16} {i['events']:>12,} events  "
            f"{i['events_per_second']:>10,.1f}/s"
        )
    lines.append("outputs")
    for o in status["outputs"]:
        state = o["state"] + (f": {o['why']}" if o["why"] else "")
        lines.append(
            f"  {o['name']:<24} {o['type']:<10} backlog {o['backlog_events']:>10,} events "
            f"{o['backlog_bytes']:>13,} bytes, oldest unsent "
            f"{o['oldest_unsent_seconds']:>7,.1f}s  {o['sent_per_second']:>9,.1f}/s  {state}"
        )
    lines.append("dead letters" + ("" if status["dead_letters"] else ": none"))
    for source, reasons in status["dead_letters"].items():
        for reason, n in list(reasons.items())[:5]:
            lines.append(f"  {source:<24} {n:>10,}  {reason[:100]}")
    j = status["journal"]
    fill = j["bytes"] / j["max_bytes"] if j["max_bytes"] else 0.0
    lines.append(f"journal {j['bytes']:,} of {j['max_bytes']:,} bytes ({fill:.0%})")
    r = status.get("reloads")
    if r and r["last_at"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_at"]))
        last = r["last_result"] + (f": {r['last_error']}" if r["last_error"] else "")
        lines.append(
            f"reloads {r['succeeded']:,} ok, {r['refused']:,} refused, {r['failed']:,} failed; last at {when}: {last}"
        )
    return "\n".join(lines)


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to the agent's control socket (a unix socket, 0600: the agent's user only)."""

    def __init__(self, path: str, timeout: float | None = None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def reload(data_dir: Path, has_monitor: bool) -> tuple[int, dict[str, Any]]:
    """Ask the running agent to reload (``POST /api/reload`` on its control socket): the HTTP status
    and what it answered. Without a [monitor] section, SIGHUP to the process holding the data_dir
    lock: the answer is then in the agent's log."""
    paths = DataPaths(data_dir)
    if not has_monitor:
        try:
            pid = int(paths.lock.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise Unreachable(f"no running agent holds {paths.lock}: {getattr(exc, 'strerror', None) or exc}") from None
        return 202, {"result": "signalled", "pid": pid}
    path = str(paths.control_socket)
    conn = _UnixHTTPConnection(path, timeout=120.0)  # a reload waits for the outputs that change to stop
    try:
        conn.request("POST", "/api/reload")
        resp = conn.getresponse()
        body = resp.read(1 << 20)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {"result": "error", "errors": [body.decode(errors="replace").strip()]}
        return resp.status, answer
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"no control socket at {path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        conn.close()


def tap(cfg: AgentConfig, match: str, out: IO[bytes]) -> None:
    """Copy the tap stream (JSON lines) from the agent's control socket to ``out`` until it ends
    or the user stops it. The tap shows live purchases: it is served to the agent's user alone."""
    if cfg.monitor is None:
        raise Unreachable("the config has no [monitor] section: the running agent serves no tap")
    path = str(DataPaths(cfg.agent.data_dir).control_socket)
    conn = _UnixHTTPConnection(path, timeout=10.0)
    try:
        conn.request("GET", "/api/tap?" + urllib.parse.urlencode({"match": match}))
        resp = conn.getresponse()
        if resp.status != 200:
            raise Unreachable(
                f"the tap at {path} answered {resp.status}: {resp.read(512).decode(errors='replace').strip()}"
            )
        if conn.sock is not None:
            conn.sock.settimeout(None)  # a quiet tap is not a dead one
        for line in resp:
            out.write(line)
            out.flush()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"no tap at {path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        conn.close()

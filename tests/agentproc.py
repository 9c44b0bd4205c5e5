"""The agent as a real subprocess: the one launcher of the integration tests and the benchmarks
(bench/*.py import it), and the tests' ``Agent`` built on it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]

READY = re.compile(r"hive-agent ready: .*")
LISTEN = re.compile(r"hive-agent ready: .*?(?:tcp|tls) (\S+):(\d+)")


MONITOR = '[monitor]\nbind = "127.0.0.1"\nport = 0\n'


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached in {timeout}s")


def launch(
    work: Path,
    *,
    ready: Callable[[subprocess.Popen], object] | None = None,
    config: str | Path = "agent.toml",
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    append_log: bool = False,
    timeout: float = 30.0,
) -> subprocess.Popen:
    """``python -m agent run -c config`` in ``work`` (this checkout's agent first on the path),
    in a session of its own so that a kill takes its delivery process too, its output in
    ``log_path`` (work/agent.log); returned once ``ready(process)`` holds."""
    log_path = log_path or Path(work) / "agent.log"
    with open(log_path, "ab" if append_log else "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config)],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(
                os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or str(ROOT), PYTHONUNBUFFERED="1", **(env or {})
            ),
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while ready is not None and not ready(proc):
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-5000:]}")
        if time.monotonic() > deadline:
            stop(proc, 5)
            raise TimeoutError(f"agent not ready in {timeout}s:\n{log_path.read_text(errors='replace')[-5000:]}")
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM to the agent's session (it drains), SIGKILL after ``timeout``; its exit code."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)
    except ProcessLookupError:
        return proc.wait()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def cli(agent: Agent, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``hive-agent <args> -c <agent's config>`` as its operator runs it, beside the running agent."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "-c", str(agent.config)],
        cwd=agent.workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listening_port(proc: subprocess.Popen) -> int | None:
    """The first TCP port ``proc`` listens on at 127.0.0.1, from ``ss`` (when the log is quiet)."""
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    m = re.search(rf"127\.0\.0\.1:(\d+)\s.*pid={proc.pid},", out)
    return int(m.group(1)) if m else None


def get_json(port: int, path: str):
    """GET http://127.0.0.1:port/path → (status, body as text)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def forward_input(**options) -> str:
    lines = [
        "[[inputs]]",
        'type = "forward"',
        f"bind = {_toml(options.pop('bind', '127.0.0.1'))}",
        f"port = {options.pop('port', 0)}",
    ]
    for k, v in options.items():
        lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def tail_input(path, tag: str = "tail.*", **options) -> str:
    options.setdefault("stat_interval", "200ms")
    lines = ["[[inputs]]", 'type = "tail"', f"path = {_toml(path)}", f"tag = {_toml(tag)}"]
    for k, v in options.items():
        lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def file_output(path: str = "out/events.jsonl", match: str = "**", name: str = "local", **options) -> str:
    lines = [
        "[[outputs]]",
        'type = "file"',
        f"name = {_toml(name)}",
        f"match = {_toml(match)}",
        f"path = {_toml(path)}",
    ]
    for k, v in options.items():
        lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


class Agent:
    """Runs ``python -m agent run`` in ``workdir`` with the given config sections."""

    def __init__(self, workdir: Path, sections: str, *, agent_section: str = "", journal: str = ""):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "agent.toml"
        self.config.write_text(
            f'[agent]\ndata_dir = "var"\nlog_level = "info"\nshutdown_timeout = "20s"\n{agent_section}\n'
            f"[agent.journal]\n{journal}\n\n{sections}"
        )
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "agent.log"
        self.port: int | None = None
        self._log_offset = 0

    def start(self, timeout: float = 20.0) -> Agent:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = launch(
            self.workdir,
            config=self.config,
            log_path=self.log_path,
            append_log=True,
            ready=lambda _: READY.search(self.log()),
            timeout=timeout,
        )
        text = self.log()
        m = LISTEN.search(text)
        self.port = int(m.group(2)) if m else None
        monitor = re.search(r"monitor on http \S+:(\d+)", text)
        self.monitor_port = int(monitor.group(1)) if monitor else None
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.log())
            if m:
                return m
            time.sleep(0.02)
        raise TimeoutError(f"{pattern!r} not in the log:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the agent and its delivery process (the whole session)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def output_lines(self, path: str = "out/events.jsonl") -> list[dict]:
        p = self.workdir / path
        if not p.exists():
            return []
        data = p.read_bytes()
        # A line still being written (no newline yet) is not there yet.
        return [orjson.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]

    def wait_for_output(self, count: int, path: str = "out/events.jsonl", timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        lines: list[dict] = []
        while time.monotonic() < deadline:
            lines = self.output_lines(path)
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise TimeoutError(f"{len(lines)} of {count} lines arrived in {path}:\n{self.log()[-3000:]}")

    def wait_for_records(
        self, key: str, expected: set, path: str = "out/events.jsonl", timeout: float = 60.0
    ) -> list[dict]:
        """Wait until every value in ``expected`` has arrived as ``record[key]`` (duplicates aside)."""
        deadline = time.monotonic() + timeout
        seen: set = set()
        while time.monotonic() < deadline:
            lines = self.output_lines(path)
            seen = {line["record"].get(key) for line in lines}
            if expected <= seen:
                return lines
            time.sleep(0.1)
        raise TimeoutError(
            f"{len(expected - seen)} of {len(expected)} records missing in {path}:\n{self.log()[-3000:]}"
        )

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def run_with_fd_limit(agent: Agent, limit: int) -> subprocess.Popen:
    """``agent`` started under an open-file limit of ``limit`` (soft and hard), its log appended to."""
    import resource

    with open(agent.log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(agent.config)],
            cwd=agent.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
        )


def forward_output(servers: list[tuple[str, int]], name: str = "hive", match: str = "**", **options) -> str:
    lines = [
        "[[outputs]]",
        'type = "forward"',
        f"name = {_toml(name)}",
        f"match = {_toml(match)}",
        "servers = [" + ", ".join(f'{{ host = "{h}", port = {p} }}' for h, p in servers) + "]",
    ]
    for k, v in options.items():
        lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_output(url: str, name: str = "hive-http", match: str = "**", **options) -> str:
    lines = ["[[outputs]]", 'type = "http"', f"name = {_toml(name)}", f"match = {_toml(match)}", f"url = {_toml(url)}"]
    for k, v in options.items():
        lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def journal_records(data_dir: Path) -> list[tuple[str, dict]]:
    """Every (tag, record) in the journal segments under ``data_dir``, in order; targeted batches left out."""
    import msgpack

    from agent.journal.reader import JournalReader
    from agent.journal.record import batch_entries, batch_target, peek_tag

    reader = JournalReader(Path(data_dir) / "journal")
    out = []
    try:
        while records := reader.read():
            for r in records:
                if batch_target(r.payload) is not None:
                    continue
                tag = peek_tag(r.payload)
                unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
                unpacker.feed(batch_entries(r.payload))
                out.extend((tag, entry[1]) for entry in unpacker)
    finally:
        reader.close()
    return out

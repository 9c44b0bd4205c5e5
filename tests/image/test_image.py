"""The container image, built and run by a real engine (`make test-image`; not part of `make test`).

tests/image/prepare.sh finds or starts a Docker engine and makes the stand-in base image; where
it cannot, every test here is skipped with its reason. The image is built from this checkout,
run on the host's network (the engine here has no bridge), and checked as a user would: it
answers /health, normalizes a purchase, keeps its journal and dedup store on a named volume
across `docker rm`, runs with --read-only, drains within `docker stop`'s grace with an output
down, and holds one copy of the code, no source tree, no anonymous volume.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.agentproc import wait_until
from tests.unit.test_hive_purchase_log import COMPLETE
from tests.wire import ForwardClient, event_time

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "hive-agent:image-test"
TAG = "ha2union.game.misample.purchase_log"
FORWARD, MONITOR = 24224, 24220

pytestmark = pytest.mark.skipif(
    os.environ.get("HIVE_AGENT_TEST_IMAGE") != "1", reason="opt-in: make test-image builds and runs the image"
)


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the agent binds: TIME_WAIT is no owner
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def image() -> dict:
    prepared = subprocess.run(["sh", str(ROOT / "tests/image/prepare.sh")], capture_output=True, text=True, cwd=ROOT)
    if prepared.returncode != 0:
        reason = (prepared.stderr.strip().splitlines() or ["prepare.sh failed"])[-1]
        pytest.skip(f"no engine to build the image with: {reason}")
    for port in (FORWARD, MONITOR):
        if not port_free(port):
            pytest.skip(f"port {port} is in use on this host: the image's config listens there")
    started = time.monotonic()
    built = subprocess.run(
        ["docker", "build", "--network=host", "-t", IMAGE, "."], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    seconds = time.monotonic() - started
    context = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kKMG]?B)", built.stdout + built.stderr)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    facts = {"build_seconds": seconds, "size_bytes": size, "context": context.group(0) if context else "?"}
    print(f"image built in {seconds:.1f} s, {size / 1e6:.0f} MB; {facts['context']}")
    yield facts
    docker("image", "rm", "-f", IMAGE, check=False)


class Container:
    def __init__(self, *run_args: str):
        self.name = f"hive-agent-test-{uuid.uuid4().hex[:8]}"
        self.run_args = run_args

    def __enter__(self) -> Container:
        self.started = time.monotonic()
        docker("run", "-d", "--network=host", "--name", self.name, *self.run_args)
        return self

    def __exit__(self, *exc: object) -> None:
        docker("rm", "-f", self.name, check=False)

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Seconds from `docker run` until /health answers 200."""
        started = self.started
        while time.monotonic() - started < timeout:
            try:
                with socket.create_connection(("127.0.0.1", MONITOR), timeout=1) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return time.monotonic() - started
            except OSError:
                pass
            state = docker("inspect", "-f", "{{.State.Running}}", self.name).stdout.strip()
            assert state == "true", docker("logs", self.name, check=False).stderr[-3000:]
            time.sleep(0.1)
        raise TimeoutError(f"/health did not answer 200 in {timeout}s: {self.logs()[-3000:]}")

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command: str) -> str:
        return docker("exec", self.name, *command).stdout

    def events(self) -> list[dict]:
        text = docker("exec", self.name, "cat", "/var/lib/hive-agent/out/events.jsonl", check=False).stdout
        return [json.loads(line) for line in text.splitlines()]

    def pss_bytes(self) -> int:
        """PSS summed over every process of the agent (the host sees their pids; a HEALTHCHECK's
        `hive-agent status` under way is the engine's, not the agent's)."""
        pids = docker("top", self.name, "-eo", "pid").stdout.split()[1:]
        total = 0
        for pid in pids:
            if b"\0run\0" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        return total


def send_purchase(transaction_id: str) -> None:
    client = ForwardClient(FORWARD)
    client.send_chunk(TAG, [[event_time(1_700_000_000), dict(COMPLETE, transaction_id=transaction_id)]], "c1")
    client.close()


def test_the_image_holds_one_copy_of_the_code_a_fixed_user_and_a_small_context(image):
    out = docker("run", "--rm", "--network=host", "--entrypoint", "sh", IMAGE, "-c",
                 'id -u; id -g; python -c "import agent; print(agent.__file__)"; '
                 "find / -xdev \\( -name '*.egg-info' -o -name build -o -name app.py -path '*agent*' \\) "
                 "-not -path '/proc/*' 2>/dev/null; true").stdout.split()  # fmt: skip
    uid, gid, package, *found = out
    assert (uid, gid) == ("10001", "10001")
    assert "-packages/agent/" in package
    assert [p for p in found if "-packages/" not in p] == []  # no source tree, no build/, no egg-info
    # .dockerignore: a developer's checkout (.venv, var/, node_modules) is not sent to the engine.
    number, unit = re.search(r"([\d.]+)([kKMG]?B)$", image["context"]).groups()
    assert float(number) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit] < 10e6, image["context"]


def test_it_answers_health_normalizes_a_purchase_and_keeps_its_journal_across_docker_rm(image):
    volume = f"hive-agent-test-{uuid.uuid4().hex[:8]}"
    volumes_before = set(docker("volume", "ls", "-q").stdout.split())
    try:
        run = ("--read-only", "-v", f"{volume}:/var/lib/hive-agent", "--health-interval=1s", IMAGE)
        with Container(*run) as first:
            ready = first.wait_healthy()
            send_purchase("T-IMAGE-1")
            [event] = wait_until(first.events, what="the purchase reached the file output")
            record = event["record"]
            assert record["transactionId"] == "T-IMAGE-1" and record["appId"] == COMPLETE["app_id"]
            time.sleep(10)  # idle: nothing flowing
            pss = first.pss_bytes()
            health = wait_until(
                lambda: docker("inspect", "-f", "{{.State.Health.Status}}", first.name).stdout.strip() == "healthy",
                what="the HEALTHCHECK (hive-agent status) said healthy",
            )
            assert health
            print(f"/health 200 {ready:.1f} s after docker run; idle PSS {pss / 1e6:.1f} MB (all processes)")
        # The container is gone; the volume holds the journal, the cursor and the dedup store.
        with Container(*run) as second:
            second.wait_healthy()
            send_purchase("T-IMAGE-1")  # a re-send: the dedup store on the volume knows it
            send_purchase("T-IMAGE-2")
            events = wait_until(lambda: len(second.events()) >= 2, what="the second purchase")
            time.sleep(1)
            ids = [e["record"]["transactionId"] for e in second.events()]
            assert ids == ["T-IMAGE-1", "T-IMAGE-2"], events
    finally:
        docker("volume", "rm", "-f", volume, check=False)
    # Without -v nothing is left behind either.
    with Container(IMAGE) as bare:
        bare.wait_healthy()
    assert set(docker("volume", "ls", "-q").stdout.split()) == volumes_before


def test_docker_stop_with_an_output_down_drains_within_the_grace_and_exits_0(image, tmp_path):
    config = (ROOT / "conf/container.toml").read_text() + (
        '\n[[outputs]]\ntype = "forward"\nname = "hive"\nmatch = "ha2union.game.**"\n'
        'servers = [{ host = "127.0.0.1", port = 9 }]\nrequire_ack_response = true\n'
    )
    path = tmp_path / "agent.toml"
    path.write_text(config)
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    with Container("-v", f"{path}:/etc/hive-agent/agent.toml:ro", IMAGE) as agent:
        agent.wait_healthy()
        send_purchase("T-DOWN-1")  # acked: journaled; the forward output cannot deliver it
        wait_until(agent.events, what="the local file output took it")
        started = time.monotonic()
        docker("stop", agent.name, timeout=60)  # the engine's grace: 10 s, then SIGKILL
        seconds = time.monotonic() - started
        code = int(docker("inspect", "-f", "{{.State.ExitCode}}", agent.name).stdout)
        print(f"docker stop took {seconds:.1f} s; exit code {code}")
        assert code == 0, agent.logs()[-3000:]
        assert seconds < 10

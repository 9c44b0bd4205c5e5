"""Bad input and faults: one clear log line, that connection closed, everyone else unaffected."""

import gzip
import socket
import ssl
import threading
import time

import msgpack
import pytest
import trustme

from agent.protocol import forward as fwd
from tests.agentproc import MONITOR, Agent, file_output, forward_input, get_json
from tests.integration.test_monitor import metric
from tests.wire import ForwardClient, event_time, pack

T = 1_700_000_000


def entries(start, n, **extra):
    return [[event_time(T, i), {"seq": i, **extra}] for i in range(start, start + n)]


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def agent(tmp_path):
    with Agent(tmp_path, forward_input(max_frame_size="64KiB", max_decompressed_size="256KiB") + file_output()) as a:
        yield a


BAD_INPUT = [
    (b"\xc1\xc1\xc1\xc1", "invalid msgpack"),
    (pack("a string at the top"), "top-level object is a string, not an array"),
    (pack(12345), "top-level object is an integer, not an array"),
    (pack([1, 2]), "tag is an integer, not a string"),
    (pack(["t", [[T, {"x": "y" * 70_000}]]]), "max_frame_size"),
    (
        pack(
            [
                "t",
                gzip.compress(b"".join(pack([T, {"pad": "0" * 1000}]) for _ in range(1000))),
                {"compressed": "gzip", "chunk": "bomb"},
            ]
        ),
        "exceeds 262144 bytes",
    ),
]


@pytest.mark.parametrize("data,reason", BAD_INPUT, ids=[r for _, r in BAD_INPUT])
def test_bad_input_closes_only_that_connection(agent, data, reason):
    good = ForwardClient(agent.port)
    good.send_chunk("t.good", entries(0, 100), "g1")
    bad = socket.create_connection(("127.0.0.1", agent.port))
    port = bad.getsockname()[1]
    bad.sendall(data)
    assert closed_by_peer(bad)
    bad.close()
    line = agent.wait_for_log(rf"ERROR .*peer 127\.0\.0\.1:{port}: closing connection: .*").group(0)
    assert reason in line
    assert "\n" not in line
    # The other connection kept flowing, and nothing acked went missing.
    good.send_chunk("t.good", entries(100, 100), "g2")
    good.close()
    lines = agent.wait_for_records("seq", set(range(200)))
    assert {l["tag"] for l in lines} == {"t.good"}


def test_invalid_entries_are_skipped_counted_and_the_rest_acked(agent):
    client = ForwardClient(agent.port)
    mixed = [[T, {"seq": 0}], "junk", [T, "not a map"], [T, {"seq": 1}], [T], [-1, {"seq": 99}], [T, {"seq": 2}]]
    client.send_chunk("t.mixed", mixed, "m1")
    client.close()
    lines = agent.wait_for_records("seq", {0, 1, 2})
    assert sorted(l["record"]["seq"] for l in lines) == [0, 1, 2]
    agent.wait_for_log(r"WARNING .*peer 127\.0\.0\.1:\d+: tag t\.mixed: skipped 4 invalid entries: entry 2 is a string")


def test_a_truncated_frame_is_not_acked_nor_written(agent):
    sock = socket.create_connection(("127.0.0.1", agent.port))
    frame = pack(["t.trunc", b"".join(pack(e) for e in entries(0, 10)), {"chunk": "c"}])
    sock.sendall(frame[:-5])
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(5)
    assert sock.recv(100) == b""
    sock.close()
    agent.wait_for_log(r"connection closed inside a frame")
    client = ForwardClient(agent.port)
    client.send_chunk("t.after", entries(100, 1), "c2")
    client.close()
    lines = agent.wait_for_records("seq", {100})
    assert [l["tag"] for l in lines] == ["t.after"]


def test_heartbeats_empty_connections_nil_and_udp(agent):
    for _ in range(5):  # Fluentd's transport heartbeat: connect, say nothing, close
        socket.create_connection(("127.0.0.1", agent.port)).close()
    client = ForwardClient(agent.port)
    client.send(b"\xc0\xc0")  # bare nil heartbeats keep the connection
    client.send_chunk("t.hb", entries(0, 3), "after-nil")
    client.close()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(5)
    udp.sendto(b"\x00", ("127.0.0.1", agent.port))
    data, _ = udp.recvfrom(16)
    udp.close()
    assert data == b"\x00"
    agent.wait_for_records("seq", {0, 1, 2})
    assert "ERROR" not in agent.log()


def test_no_chunk_no_reply(agent):
    sock = socket.create_connection(("127.0.0.1", agent.port))
    sock.sendall(pack(["t.noack", [[T, {"seq": 1}]]]))
    agent.wait_for_records("seq", {1})
    sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        sock.recv(10)
    sock.close()


# -- handshake -----------------------------------------------------------------


def _handshake(port, key, hostname=b"client-1", username=b"", password=b""):
    client = ForwardClient(port)
    helo = client.recv_object()
    assert helo[0] == "HELO" and set(helo[1]) == {"nonce", "auth", "keepalive"}
    nonce, auth = helo[1]["nonce"], helo[1]["auth"]
    salt = b"0123456789abcdef"
    pw = fwd.password_digest(auth, username, password) if username else b""
    client.send(pack(["PING", hostname, salt, fwd.shared_key_digest(salt, hostname, nonce, key), username, pw]))
    return client, client.recv_object(), salt, nonce


def test_shared_key_handshake_and_failures(tmp_path):
    cfg = forward_input(shared_key="k3y", self_hostname="agent-srv", users=[{"username": "alice", "password": "pw"}])
    with Agent(tmp_path, MONITOR + cfg + file_output()) as agent:
        client, pong, salt, nonce = _handshake(agent.port, b"k3y", username=b"alice", password=b"pw")
        assert pong == [
            "PONG",
            True,
            "",
            "agent-srv",
            fwd.shared_key_digest(salt, b"agent-srv", nonce, b"k3y").decode(),
        ]
        client.send_chunk("t.auth", entries(0, 5), "a1")
        client.close()

        client, pong, _, _ = _handshake(agent.port, b"wrong", username=b"alice", password=b"pw")
        assert pong == ["PONG", False, "shared_key mismatch", "", ""]
        assert closed_by_peer(client.sock)
        client.close()

        # Straight after a failure this host's next PING is not even checked: no guess to make.
        client, pong, _, _ = _handshake(agent.port, b"k3y", username=b"alice", password=b"pw")
        assert pong[:2] == ["PONG", False] and pong[2].startswith("too many failed authentications")
        client.close()
        time.sleep(0.6)  # past the first penalty (0.5 s)
        client, pong, _, _ = _handshake(agent.port, b"k3y", username=b"alice", password=b"nope")
        assert pong == ["PONG", False, "username/password mismatch", "", ""]
        client.close()
        _, text = get_json(agent.monitor_port, "/metrics")
        assert metric(text, "hive_agent_forward_auth_failures_total", component="forward.0") == 3

        client = ForwardClient(agent.port)
        client.recv_object()  # HELO
        client.send(pack(["t.sneaky", [[T, {"seq": 99}]], {"chunk": "x"}]))
        assert closed_by_peer(client.sock)
        client.close()
        agent.wait_for_log(r"sent something other than PING before the handshake")
        agent.wait_for_records("seq", set(range(5)))
    assert {l["record"]["seq"] for l in agent.output_lines()} == set(range(5))
    assert "authentication failed: shared_key mismatch" in agent.log()


# -- transports ----------------------------------------------------------------


def test_tls_with_client_certificates(tmp_path):
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cfg = forward_input(
        tls_cert=str(tmp_path / "server.pem"),
        tls_key=str(tmp_path / "server.pem"),
        tls_ca=str(tmp_path / "ca.pem"),
        udp_heartbeat=False,
    )
    with Agent(tmp_path, cfg + file_output()) as agent:
        assert "tls 127.0.0.1" in agent.log()
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        client_cert = ca.issue_cert("game-server")
        client_cert.configure_cert(ctx)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", agent.port)), server_hostname="localhost") as s:
            s.sendall(pack(["t.tls", b"".join(pack(e) for e in entries(0, 50)), {"chunk": "tls1"}]))
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                unpacker.feed(s.recv(1024))
                reply = next(unpacker, None)
                if reply is not None:
                    break
            assert reply == {"ack": "tls1"}
        # Without a client certificate the agent refuses the connection.
        bare = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        reply = b""
        try:
            with bare.wrap_socket(
                socket.create_connection(("127.0.0.1", agent.port)), server_hostname="localhost"
            ) as s:
                s.settimeout(5)
                s.sendall(pack(["t.tls", [[T, {"seq": 999}]], {"chunk": "x"}]))
                reply = s.recv(10)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
        assert reply == b""
        agent.wait_for_records("seq", set(range(50)))
    assert 999 not in {l["record"]["seq"] for l in agent.output_lines()}


def test_unix_socket_and_source_address(tmp_path):
    sock_path = tmp_path / "fwd.sock"
    cfg = forward_input(unix_path=str(sock_path), source_address_key="source_ip")
    with Agent(tmp_path, cfg + file_output()) as agent:
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.connect(str(sock_path))
        u.sendall(pack(["t.unix", [[T, {"seq": 1}]], {"chunk": "u1"}]))
        u.settimeout(5)
        assert msgpack.unpackb(u.recv(100)) == {"ack": "u1"}
        u.close()
        tcp = ForwardClient(agent.port)
        tcp.send_chunk("t.tcp", [[T, {"seq": 2}]], "t1")
        tcp.close()
        lines = {l["record"]["seq"]: l["record"] for l in agent.wait_for_records("seq", {1, 2})}
    assert lines[1]["source_ip"] == "unix"
    assert lines[2]["source_ip"] == "127.0.0.1"


# -- backpressure ----------------------------------------------------------------


def test_a_full_journal_stops_reading_and_acking_then_everything_arrives(tmp_path):
    (tmp_path / "blocked").write_text("a file where the output wants a directory")
    cfg = forward_input() + file_output(
        path="blocked/events.jsonl", retry_wait="100ms", retry_max_interval="200ms", retry_forever=True
    )
    agent = Agent(tmp_path, cfg, journal='segment_bytes = "64KiB"\nmax_bytes = "256KiB"')
    agent.start()
    acked = []
    errors = []

    def send():
        try:
            client = ForwardClient(agent.port, timeout=60)
            for k in range(100):
                client.send_chunk("t.bp", entries(k * 50, 50, pad="p" * 100), f"bp{k}")
                acked.append(k)
            client.close()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    try:
        sender = threading.Thread(target=send)
        sender.start()
        agent.wait_for_log(r"output local: \d+ records not delivered .*retry")
        time.sleep(1.5)
        stalled_at = len(acked)
        assert 0 < stalled_at < 100, stalled_at
        journal_bytes = sum(p.stat().st_size for p in (tmp_path / "var/journal").glob("*.seg"))
        assert journal_bytes <= 256 * 1024 + 64 * 1024
        time.sleep(0.5)
        assert len(acked) == stalled_at  # no acks while full
        (tmp_path / "blocked").unlink()  # the operator fixes the cause
        sender.join(60)
        assert not errors and len(acked) == 100
        lines = agent.wait_for_records("seq", set(range(5000)), path="blocked/events.jsonl")
        assert agent.stop() == 0
    finally:
        agent.kill()
    assert len({l["record"]["seq"] for l in lines}) == 5000


def test_source_hostname_key_injects_the_peers_name(tmp_path):
    with Agent(tmp_path, forward_input(source_hostname_key="source_host") + file_output()) as agent:
        client = ForwardClient(agent.port)
        client.send_chunk("t.host", [[T, {"seq": 1}]], "h1")
        client.close()
        [line] = agent.wait_for_records("seq", {1})
    name = _reverse_name()
    if name is not None:
        assert line["record"]["source_host"] == name
    else:  # no name, or none within the bound: the agent keeps the address (or a late name)
        assert line["record"]["source_host"] in {"127.0.0.1", _reverse_name(wait=5.0) or "127.0.0.1"}


def _reverse_name(wait: float | None = None) -> str | None:
    """127.0.0.1's name, if reverse DNS gives one within half the agent's bound. Asked in a thread:
    where reverse DNS does not answer, the lookup would hang the test."""
    import concurrent.futures

    from agent.inputs.forward import RESOLVE_TIMEOUT

    pool = concurrent.futures.ThreadPoolExecutor(1)
    lookup = pool.submit(socket.getnameinfo, ("127.0.0.1", 0), socket.NI_NAMEREQD)
    pool.shutdown(wait=False)
    try:
        return lookup.result(timeout=wait or RESOLVE_TIMEOUT / 2)[0]
    except (OSError, concurrent.futures.TimeoutError):
        return None


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs as the agent's data_dir, to be filled for real (mounting needs root)."""
    import subprocess

    var = tmp_path / "var"
    var.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(var)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield var
    finally:
        subprocess.run(["umount", "-l", str(var)], check=False)


def fill(directory) -> None:
    """Write files until the disk is full: ``filler`` in MiB pieces, then ``filler2`` in pages."""
    import os

    for name, piece in (("filler", 1 << 20), ("filler2", 4096)):
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * piece)
        except OSError:
            pass
        finally:
            os.close(fd)


def test_a_full_disk_refuses_acks_says_so_on_health_and_loses_nothing_once_space_is_back(tmp_path, small_disk):
    import os

    from tests.agentproc import MONITOR, get_json, wait_until
    from tests.integration.test_monitor import metric

    with Agent(
        tmp_path,
        MONITOR + forward_input() + file_output(retry_wait="100ms", retry_max_interval="1s"),
        journal='segment_bytes = "1MiB"\nmax_bytes = "8MiB"\nfsync = "always"',
    ) as agent:
        client = ForwardClient(agent.port)
        for k in range(5):
            client.send_chunk("t", entries(k * 100, 100), f"a{k}")
        agent.wait_for_output(500)
        fill(small_disk)
        # Nothing more can be made durable: the next chunk is not acked, /health says why.
        raw = socket.create_connection(("127.0.0.1", agent.port))
        big = entries(500, 100, pad="x" * 1000)  # more than the page a segment may still have free
        raw.sendall(pack(["t", b"".join(pack(e) for e in big), {"chunk": "full"}]))
        status, body = wait_until(
            lambda: (
                (r := get_json(agent.monitor_port, "/health"))[0] == 503
                and "journal: No space left on device" in r[1]
                and r
            )
        )
        assert closed_by_peer(raw), "a chunk the journal could not write was acked"
        raw.close()
        client.close()
        agent.wait_for_log(r"journal: write of \d+ bytes to segment \d+ failed: .*No space left on device")
        # Space comes back: the sender's retry is acked, /health recovers, delivery never died.
        os.remove(small_disk / "filler")
        os.remove(small_disk / "filler2")
        client = ForwardClient(agent.port)
        client.send_chunk("t", big, "full-again")
        for k in range(6, 10):
            client.send_chunk("t", entries(k * 100, 100), f"b{k}")
        client.close()
        wait_until(lambda: get_json(agent.monitor_port, "/health")[0] == 200)
        lines = agent.wait_for_output(1000)
        assert sorted(line["record"]["seq"] for line in lines) == list(range(1000))  # each once
        text = get_json(agent.monitor_port, "/metrics")[1]
        assert metric(text, "hive_agent_delivery_process_up") == 1
        assert agent.stop() == 0

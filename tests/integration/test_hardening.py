"""What one bad record, name or file cannot do to the running agent (issue: hardening)."""

import os
import re
import stat
import threading
import time

import orjson

from tests.agentproc import Agent, file_output, forward_input, wait_until
from tests.wire import ForwardClient, event_time, pack

STRICT_HIVE = '[[filters]]\ntype = "hive"\nname = "hive"\nstrict = true\n'


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_everything_the_agent_writes_is_private_whatever_its_umask(tmp_path):
    old = os.umask(0o022)  # the agent's parent is lax; the agent is not
    try:
        with Agent(tmp_path, forward_input() + STRICT_HIVE + file_output()) as agent:
            client = ForwardClient(agent.port)
            client.send_chunk("ha2union.game.g.purchase_log", [[event_time(1_700_000_000), {"bad": True}]], "c1")
            client.send_chunk("other.tag", [[event_time(1_700_000_000), {"ok": 1}]], "c2")
            client.close()
            agent.wait_for_output(1)
            agent.wait_for_log("dead-lettered")
            assert agent.stop() == 0
    finally:
        os.umask(old)
    data_dir = tmp_path / "var"
    assert mode(data_dir) == 0o700
    written = [p for p in data_dir.rglob("*")]
    assert any(p.suffix == ".seg" for p in written) and any(p.parent.name == "deadletter" for p in written)
    assert any(p.parent.name == "cursors" for p in written)
    for path in written:
        want = 0o700 if path.is_dir() else 0o600
        assert mode(path) == want, f"{path.relative_to(tmp_path)}: {oct(mode(path))}"


def test_a_tag_cannot_lead_a_file_output_out_of_its_directory_nor_stall_it(tmp_path):
    outputs = file_output(path="out/{tag}/events.jsonl", retry_timeout="1h")
    with Agent(tmp_path, forward_input() + outputs) as agent:
        client = ForwardClient(agent.port)
        t = event_time(1_700_000_000)
        client.send_chunk("..", [[t, {"i": 1}]], "c1")
        client.send_chunk("x" * 300, [[t, {"i": 2}]], "c2")  # longer than a file name may be
        client.send_chunk("good", [[t, {"i": 3}]], "c3")
        client.close()
        agent.wait_for_output(1, path="out/good/events.jsonl", timeout=10)
        agent.wait_for_output(1, path="out/__/events.jsonl", timeout=10)
        agent.wait_for_log("records dead-lettered: rejected: .*File name too long")
        assert agent.stop() == 0
    assert not (tmp_path / "events.jsonl").exists()
    [dead] = [orjson.loads(line) for line in (tmp_path / "var/deadletter/local.jsonl").read_bytes().splitlines()]
    assert dead["tag"] == "x" * 300 and dead["record"] == {"i": 2}


def test_listening_beyond_loopback_without_a_key_or_tls_is_warned(tmp_path):
    with Agent(tmp_path, forward_input(bind="0.0.0.0") + file_output()) as agent:
        agent.wait_for_log(r"WARNING .*input forward\.0: listening on 0\.0\.0\.0:\d+ with neither shared_key nor TLS")
        assert agent.stop() == 0
    with Agent(tmp_path / "b", forward_input() + file_output()) as agent:
        assert agent.stop() == 0
        assert "neither shared_key nor TLS" not in agent.log()


def test_tail_reads_logs_not_kernel_files_fifos_or_devices(tmp_path):
    from tests.agentproc import tail_input

    logs = tmp_path / "logs"
    logs.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"seq": 2}\n')
    (logs / "purchase_a.json").write_text('{"seq": 1}\n')
    (logs / "purchase_b.json").symlink_to(elsewhere)  # followed, as in_tail on Kubernetes
    (logs / "purchase_proc.json").symlink_to("/proc/self/status")
    (logs / "purchase_dev.json").symlink_to("/dev/zero")
    os.mkfifo(logs / "purchase_fifo.json")
    cfg = tail_input(str(logs / "purchase_*.json"), read_from_head=True) + file_output()
    with Agent(tmp_path, cfg) as agent:
        agent.wait_for_records("seq", {1, 2})
        agent.wait_for_log(r"purchase_proc\.json is /proc/.*a kernel file, not a log; not read")
        with (logs / "purchase_a.json").open("a") as f:
            f.write('{"seq": 3}\n')
        agent.wait_for_records("seq", {1, 2, 3})  # the input still works
        assert agent.stop() == 0
    assert sorted(line["record"]["seq"] for line in agent.output_lines()) == [1, 2, 3]
    assert agent.log().count("purchase_proc.json is /proc/") == 1  # said once, not at every scan
    assert not (tmp_path / "var/deadletter").exists() or not any((tmp_path / "var/deadletter").iterdir())


def test_what_a_peer_writes_cannot_forge_flood_or_bloat_the_log(tmp_path):
    import msgpack

    from agent.protocol import forward as fwd

    def bad_ping(port: int, hostname: bytes) -> None:
        client = ForwardClient(port)
        try:
            helo = fwd.parse_helo(msgpack.unpackb(client.sock.recv(4096), raw=True))
            client.send(fwd.ping(helo, hostname=hostname, shared_key=b"wrong", salt=b"s" * 16))
            client.sock.recv(4096)  # the PONG that refuses it
        except OSError:
            pass  # a PING over the limit is cut off: the connection is reset under the sender
        finally:
            client.close()

    cfg = forward_input(shared_key="right-key", self_hostname="agent") + file_output()
    with Agent(tmp_path, cfg) as agent:
        before = agent.log_path.stat().st_size
        bad_ping(agent.port, b"evil\n2026-11-25 00:00:00,000 INFO [main] agent: hive-agent ready: forged")
        bad_ping(agent.port, b"h" * (4 << 20))  # a 4 MiB hostname
        for _ in range(50):
            bad_ping(agent.port, b"again")
        agent.wait_for_log("authentication failed")
        assert agent.stop() == 0
    lines = agent.log().splitlines()
    assert not any(line.startswith("2026-11-25 00:00:00,000") for line in lines)  # nothing forged
    assert any("evil\\n2026-11-25" in line for line in lines)  # escaped instead
    assert agent.log_path.stat().st_size - before < 20_000  # not the 4 MiB hostname
    assert sum("authentication failed" in line for line in lines) <= 2  # summarized per peer
    assert sum("PING larger than" in line for line in lines) == 1


def test_before_the_handshake_only_a_small_ping_is_read(tmp_path):
    import gzip
    import time

    import msgpack

    from agent.protocol import forward as fwd

    cfg = forward_input(shared_key="right-key", self_hostname="agent", handshake_timeout="1s") + file_output()
    with Agent(tmp_path, cfg) as agent:
        # 32 KiB on the wire, 32 MiB of zeros inside: never decompressed before authentication.
        bomb = gzip.compress(b"\0" * (32 << 20))
        evil = ForwardClient(agent.port)
        evil.sock.recv(4096)  # HELO
        evil.send(msgpack.packb(["t", bomb, {"compressed": "gzip", "chunk": "c"}]))
        agent.wait_for_log("sent something other than PING before the handshake")
        idle = ForwardClient(agent.port)
        started = time.monotonic()
        agent.wait_for_log(r"no handshake within handshake_timeout \(1s\)", timeout=5)
        assert time.monotonic() - started < 4
        # A peer that authenticates is served as ever.
        good = ForwardClient(agent.port)
        helo = fwd.parse_helo(msgpack.unpackb(good.sock.recv(4096), raw=True))
        good.send(fwd.ping(helo, hostname=b"game-1", shared_key=b"right-key", salt=b"s" * 16))
        assert msgpack.unpackb(good.sock.recv(4096))[1] is True  # PONG: authenticated
        good.send_chunk("game.purchase", [[event_time(1_700_000_000), {"ok": 1}]], "c1")
        agent.wait_for_output(1)
        with open(f"/proc/{agent.proc.pid}/status") as status:
            peak_kb = int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
        assert peak_kb < 300_000, f"peak RSS {peak_kb} kB"
        for client in (evil, idle, good):
            client.close()
        assert agent.stop() == 0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS:")))


def test_connections_are_bounded_in_number_time_and_bytes(tmp_path):
    import socket

    import msgpack

    cfg = (
        forward_input(max_connections=20, frame_timeout="1s", idle_timeout="2s", max_buffered_bytes="256KiB")
        + file_output()
    )
    with Agent(tmp_path, cfg) as agent:
        frame = msgpack.packb(["t", [[event_time(1_700_000_000), {"pad": "x" * 150_000}]], {"chunk": "c"}])
        # A frame started and never finished (a slowloris): closed at frame_timeout.
        slow = socket.create_connection(("127.0.0.1", agent.port))
        slow.sendall(frame[:1000])
        agent.wait_for_log(r"closing connection: a frame not complete within frame_timeout \(1s\)", timeout=5)
        # Incomplete frames may not hold more than max_buffered_bytes together.
        parts = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(2)]
        for sock in parts:
            sock.sendall(frame[:-10])
        agent.wait_for_log(r"incomplete frames of all connections hold over max_buffered_bytes", timeout=5)
        # More connections than max_connections: the extra ones are closed at once.
        held = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(25)]
        agent.wait_for_log(r"20 connections already \(max_connections\)", timeout=5)
        for sock in held + parts + [slow]:
            sock.close()
        # Silent connections are closed at idle_timeout; a healthy client is served throughout.
        quiet = socket.create_connection(("127.0.0.1", agent.port))
        agent.wait_for_log(r"closing connection: idle for idle_timeout \(2s\)", timeout=8)
        quiet.close()
        client = ForwardClient(agent.port)
        client.send_chunk("game.purchase", [[event_time(1_700_000_000), {"ok": 1}]], "c1")
        client.close()
        agent.wait_for_output(1)
        assert agent.stop() == 0
    assert agent.log().count("connections already (max_connections)") <= 2  # summarized, not 5 lines


def test_idle_connections_and_churn_do_not_grow_memory(tmp_path):
    import socket

    with Agent(tmp_path, forward_input() + file_output()) as agent:
        client = ForwardClient(agent.port)
        client.send_chunk("warm.up", [[event_time(1_700_000_000), {"i": 0}]], "c0")
        before = rss_kb(agent.proc.pid)
        idle = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(2000)]
        client.send_chunk("still.served", [[event_time(1_700_000_000), {"i": 1}]], "c1")
        with_idle = rss_kb(agent.proc.pid)
        for sock in idle:
            sock.close()
        for _ in range(8):  # churn: connections that send a little and go
            batch = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(500)]
            for sock in batch:
                sock.sendall(pack(["churn", [[event_time(1_700_000_000), {"c": 1}]]]))
                sock.close()
        client.send_chunk("after.churn", [[event_time(1_700_000_000), {"i": 2}]], "c2")
        after = rss_kb(agent.proc.pid)
        client.close()
        assert agent.stop() == 0
    print(f"RSS kB: {before} before, {with_idle} with 2,000 idle connections, {after} after 4,000 more came and went")
    # Before the read buffer was made lazy: 2,000 idle connections held about 93 MB.
    assert with_idle - before < 40_000 and after - before < 40_000


def test_a_costly_frame_does_not_hold_up_other_connections(tmp_path):
    """A frame inflating to 64 MiB of tiny entries takes seconds to scan: it is scanned off the event
    loop, and a healthy connection's acks keep coming meanwhile."""
    import gzip
    import threading
    import time

    import msgpack

    from tests.wire import pack

    entry = pack([event_time(1_700_000_000), {}])
    bomb = gzip.compress(entry * ((60 << 20) // len(entry)), 1)
    cfg = forward_input(max_decompressed_size="64MiB") + file_output(match="healthy.**")
    latencies: list[float] = []
    with Agent(tmp_path, cfg) as agent:
        attacker = ForwardClient(agent.port)
        healthy = ForwardClient(agent.port)
        stop = threading.Event()

        def send_bombs():
            for k in range(3):
                attacker.send(msgpack.packb(["attack", bomb, {"compressed": "gzip", "chunk": f"b{k}"}]))
                attacker.recv_object()
            stop.set()

        thread = threading.Thread(target=send_bombs)
        thread.start()
        k = 0
        while not stop.is_set():
            started = time.monotonic()
            healthy.send_chunk("healthy.x", [[event_time(1_700_000_000), {"k": k}]], f"h{k}")
            latencies.append(time.monotonic() - started)
            k += 1
            time.sleep(0.02)
        thread.join()
        attacker.close()
        healthy.close()
        assert agent.stop() == 0
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if len(latencies) > 1 else latencies[0]
    print(f"healthy acks during 3 bombs: {len(latencies)}, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")
    assert len(latencies) > 10 and p99 < 1.0


def test_under_a_small_open_file_limit_peers_cannot_take_every_descriptor(tmp_path):
    import re
    import socket
    import time

    import msgpack

    from agent.protocol import forward as fwd
    from tests.agentproc import MONITOR, get_json, run_with_fd_limit, wait_until

    agent = Agent(
        tmp_path,
        MONITOR + forward_input(shared_key="right-key", self_hostname="agent", handshake_timeout="2s") + file_output(),
    )
    proc = run_with_fd_limit(agent, 256)
    try:
        text = wait_until(lambda: "hive-agent ready" in agent.log() and agent.log())
        port = int(re.search(r"tcp 127\.0\.0\.1:(\d+)", text).group(1))
        monitor = int(re.search(r"monitor on http \S+:(\d+)", text).group(1))
        assert "at most 128 connections" in text
        idle = []
        for _ in range(300):  # more than the descriptors the agent has
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        time.sleep(0.5)
        status, body = get_json(monitor, "/health")  # the monitor still has descriptors
        assert status == 200, body
        # The unauthenticated ones are gone after handshake_timeout; then a real client is served.
        wait_until(lambda: "no handshake within handshake_timeout" in agent.log(), timeout=10)
        time.sleep(1.0)
        good = ForwardClient(port)
        helo = fwd.parse_helo(msgpack.unpackb(good.sock.recv(4096), raw=True))
        good.send(fwd.ping(helo, hostname=b"game-1", shared_key=b"right-key", salt=b"s" * 16))
        assert msgpack.unpackb(good.sock.recv(4096))[1] is True
        good.send_chunk("game.purchase", [[event_time(1_700_000_000), {"ok": 1}]], "c1")
        good.close()
        for sock in idle:
            sock.close()
        agent.proc = proc
        agent.wait_for_output(1)
        assert agent.stop() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_ping_whose_command_is_a_str8_is_still_a_ping(tmp_path):
    import msgpack

    from agent.protocol import forward as fwd

    with Agent(tmp_path, forward_input(shared_key="right-key", self_hostname="agent") + file_output()) as agent:
        client = ForwardClient(agent.port)
        helo = fwd.parse_helo(msgpack.unpackb(client.sock.recv(4096), raw=True))
        ping = fwd.ping(helo, hostname=b"game-1", shared_key=b"right-key", salt=b"s" * 16)
        assert ping.startswith(b"\x96\xa4PING")
        client.send(b"\x96\xd9\x04PING" + ping[6:])  # the same PING from an encoder that prefers str8
        assert msgpack.unpackb(client.sock.recv(4096))[1] is True
        client.send_chunk("game.purchase", [[event_time(1_700_000_000), {"ok": 1}]], "c1")
        client.close()
        agent.wait_for_output(1)
        assert agent.stop() == 0


def test_a_record_with_a_key_that_is_not_a_string_is_refused_and_never_holds_up_the_rest(tmp_path):
    # Found by fuzzing: {[1]: "x"} was acknowledged; the file output then failed on it and
    # retried, so the records behind it never arrived.
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        client = ForwardClient(agent.port)
        t = event_time(1_700_000_000)
        good = [pack([t, {"i": i}]) for i in range(20)]
        bad = b"\x92" + pack(t) + b"\x81\x91\x01\xa1x"
        client.send(pack(["t", b"".join(good[:10]) + bad + b"".join(good[10:]), {"chunk": "c1"}]))
        assert client.recv_object() == {"ack": "c1"}
        client.close()
        assert sorted(line["record"]["i"] for line in agent.wait_for_output(20)) == list(range(20))
        agent.wait_for_log(r"skipped 1 invalid entries: .*a key of a record is not a string")
        assert agent.stop() == 0


def test_a_dead_letter_file_someone_holds_locked_never_holds_up_other_acks(tmp_path):
    # The strict filter's dead letters used to be written, fsync and flock, on the event loop:
    # a replay (or anyone) holding the file's lock stopped every connection's acks.
    import fcntl

    with Agent(tmp_path, forward_input() + STRICT_HIVE + file_output()) as agent:
        lock_dir = tmp_path / "var" / "deadletter"
        lock_dir.mkdir(mode=0o700, exist_ok=True)
        lock = os.open(lock_dir / ".hive.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        refused = ForwardClient(agent.port)
        refused.send(
            pack(["ha2union.game.g.purchase_log", pack([event_time(1_700_000_000), {"bad": True}]), {"chunk": "bad"}])
        )
        others = ForwardClient(agent.port)
        for i in range(3):
            others.send_chunk("other.tag", [[event_time(1_700_000_000), {"i": i}]], f"c{i}")  # acked meanwhile
        agent.wait_for_output(3)
        assert not (lock_dir / "hive.jsonl").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        assert refused.recv_object() == {"ack": "bad"}  # once the dead letter is durable, not before
        [dead] = [orjson.loads(line) for line in (lock_dir / "hive.jsonl").read_bytes().splitlines()]
        assert dead["record"] == {"bad": True}
        refused.close()
        others.close()
        assert agent.stop() == 0


def test_a_spool_line_that_cannot_be_journaled_again_never_stops_the_start(tmp_path):
    """(2^32-1 s, 2^32-1 ns), once acked and dead-lettered, made the agent exit 1 before ready at
    every start after a replay. Now the line is dead-lettered again with its reason; the rest go on."""
    spool = tmp_path / "var" / "replay"
    spool.mkdir(parents=True)
    lines = [
        {"output": "local", "reason": "x", "tag": "t.good", "time_ns": 1_700_000_000 * 10**9, "record": {"seq": 1}},
        {
            "output": "local",
            "reason": "x",
            "tag": "t.bad",
            "time_ns": (2**32 - 1) * 10**9 + 2**32 - 1,
            "record": {"seq": 2},
        },
        {"output": "local", "reason": "x", "tag": ["not", "a", "tag"], "time_ns": 0, "record": {"seq": 3}},
    ]
    body = b"".join(orjson.dumps(line) + b"\n" for line in lines) + b"{not json\n"
    (spool / "local.1.jsonl").write_bytes(body)
    (tmp_path / "var").chmod(0o700)
    spool.chmod(0o700)
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        agent.wait_for_records("seq", {1})
        dead = tmp_path / "var" / "deadletter" / "local.jsonl"
        wait_until(
            lambda: dead.exists() and len(dead.read_bytes().splitlines()) == 3, what="3 lines dead-lettered again"
        )
        assert not list(spool.glob("*.jsonl"))  # the spool is done with
        assert agent.proc.poll() is None
    again = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert all("cannot be journaled again" in d["reason"] for d in again)
    assert {d["tag"] for d in again} == {"t.bad", "replay.unreadable"}


def test_stalled_tls_handshakes_count_from_accept_and_end_at_their_deadline(tmp_path):
    import re
    import select
    import socket
    import ssl
    import time

    import msgpack
    import trustme

    from tests.agentproc import MONITOR, get_json, run_with_fd_limit
    from tests.integration.test_monitor import metric

    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    agent = Agent(
        tmp_path,
        MONITOR
        + forward_input(
            tls_cert=str(tmp_path / "server.pem"),
            tls_key=str(tmp_path / "server.pem"),
            tls_handshake_timeout="1s",
            udp_heartbeat=False,
        )
        + file_output(),
    )
    proc = run_with_fd_limit(agent, 256)
    stalled: list[socket.socket] = []
    try:
        text = wait_until(lambda: "hive-agent ready" in agent.log() and agent.log())
        port = int(re.search(r"tls 127\.0\.0\.1:(\d+)", text).group(1))
        monitor = int(re.search(r"monitor on http \S+:(\d+)", text).group(1))
        assert "at most 128 connections" in text
        started = time.monotonic()
        for _ in range(300):  # never a ClientHello: more than the descriptors the agent has
            stalled.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.3)
        # Those past max_connections were closed at accept, not held until a handshake deadline.
        readable, _, _ = select.select(stalled, [], [], 0)
        closed_at_accept = sum(1 for s in readable if s.recv(1) == b"")
        assert closed_at_accept >= 300 - 128, closed_at_accept
        status, body = get_json(monitor, "/health")  # the descriptor reserve held
        assert status == 200, body
        # The rest end at tls_handshake_timeout, not asyncio's 60 s: then a real client is served.
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        while True:
            try:
                with ctx.wrap_socket(
                    socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost"
                ) as good:
                    good.sendall(pack(["game.purchase", [[event_time(1_700_000_000), {"ok": 1}]], {"chunk": "c1"}]))
                    assert msgpack.unpackb(good.recv(100)) == {"ack": "c1"}
                    break
            except (ssl.SSLError, ConnectionError, OSError):
                assert time.monotonic() - started < 10, "no healthy TLS client served within 10 s"
                time.sleep(0.2)
        served_after = time.monotonic() - started
        assert served_after < 10, served_after
        _, metrics = get_json(monitor, "/metrics")
        assert metric(metrics, "hive_agent_component_errors_total", component="forward.0", reason="tls") >= 100
        agent.proc = proc
        agent.wait_for_output(1)
        assert agent.stop() == 0
    finally:
        for sock in stalled:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_parked_partial_frames_are_shed_before_a_healthy_senders_chunks(tmp_path):
    """One host parks incomplete frames near max_buffered_bytes; a sender from another host sends
    chunks of 4 MiB (Fluentd's buffer chunks reach 8 MiB): the parker's connections are closed,
    every healthy chunk is acked."""
    import socket

    import msgpack

    cfg = forward_input(max_buffered_bytes="16MiB", max_frame_size="8MiB", frame_timeout="60s") + file_output()
    with Agent(tmp_path, cfg) as agent:
        parked_frame = msgpack.packb(["t", [[event_time(1_700_000_000), {"pad": "p" * (7 << 20)}]]])
        parkers = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(5)]
        for sock in parkers:
            sock.sendall(parked_frame[: 3 << 20])  # 15 MiB parked, each frame under max_frame_size
        time.sleep(0.5)
        healthy = ForwardClient(agent.port, source_address=("127.0.0.2", 0))
        for i in range(10):
            healthy.send_chunk(
                "game.purchase", [[event_time(1_700_000_000), {"seq": i, "pad": "h" * (4 << 20)}]], f"h{i}"
            )
        healthy.close()
        agent.wait_for_records("seq", set(range(10)))
        agent.wait_for_log(r"peer 127\.0\.0\.1:\d+: closing connection: incomplete frames .* hold the most")
        assert not re.search(r"peer 127\.0\.0\.2:\d+: closing", agent.log())
        for sock in parkers:
            sock.close()
        assert agent.stop() == 0


def test_a_peer_that_never_reads_its_acks_is_read_no_further_and_loses_nothing(tmp_path):
    """Acks not taken by the peer stop the agent reading that connection (the ack backlog stays
    at the write buffer's mark, not 600 MB); once the peer reads them, every frame is acked."""
    import socket

    import msgpack

    frames = 300_000
    # Frames with no entries: acked at once, nothing to journal, so only the acks pile up.
    frame = pack(["t", b"", {"chunk": "Zg1NSndpSnHv1bJH217tXg=="}])
    data = frame * frames
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the peer takes no acks
        sock.connect(("127.0.0.1", agent.port))
        sock.setblocking(False)
        sent, last_progress = 0, time.monotonic()
        while sent < len(data) and time.monotonic() - last_progress < 2.0:
            try:
                n = sock.send(data[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
                continue
            sent += n
            last_progress = time.monotonic()
        assert sent < len(data), "the agent read every frame while no ack was taken"
        # Now the peer reads its acks: the agent reads on, and every frame is acked, in order.
        sock.setblocking(True)
        sock.settimeout(20)
        acks = []

        def read_acks():
            unpacker = msgpack.Unpacker(raw=False)
            while len(acks) < frames:
                unpacker.feed(sock.recv(1 << 20))
                acks.extend(unpacker)

        reader = threading.Thread(target=read_acks, daemon=True)
        reader.start()
        sock.sendall(data[sent:])
        reader.join(30)
        sock.close()
        assert len(acks) == frames and all(a == {"ack": "Zg1NSndpSnHv1bJH217tXg=="} for a in acks)
        assert agent.stop() == 0


def test_a_frame_of_many_entries_is_journaled_as_bounded_records_and_acked_once_all_are(tmp_path):
    import gzip

    from agent.journal.reader import JournalReader
    from agent.protocol.forward.entries import MAX_RECORD_ENTRIES

    n = 2 * MAX_RECORD_ENTRIES + 100
    payload = gzip.compress(b"".join(pack([event_time(1_700_000_000), {"seq": i}]) for i in range(n)))
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        client = ForwardClient(agent.port)
        client.send(pack(["game.flood", payload, {"compressed": "gzip", "chunk": "flood", "size": n}]))
        assert client.recv_object() == {"ack": "flood"}
        client.close()
        agent.wait_for_records("seq", set(range(n)), timeout=60)
        assert agent.stop() == 0
    reader = JournalReader(tmp_path / "var" / "journal")
    records = 0
    try:
        while batch := reader.read():
            records += len(batch)
    finally:
        reader.close()
    assert records == 3  # 65,536 + 65,536 + 100 entries: three records, none larger

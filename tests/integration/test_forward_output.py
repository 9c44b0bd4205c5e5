"""Agent → agent over forward: acks, handshake, TLS, gzip, failover, a silent receiver, a bad key."""

import socket
import threading

import pytest
import trustme

from tests.agentproc import Agent, file_output, forward_input, forward_output, free_port
from tests.unit.test_hive_purchase_log import COMPLETE
from tests.wire import ForwardClient, event_time

TAG = "ha2union.game.misample.purchase_log"
HIVE_FILTER = '[[filters]]\ntype = "hive"\nmatch = "ha2union.game.*.purchase_log"\n'


def send_purchases(port: int, start: int, n: int, chunk: int = 50) -> None:
    client = ForwardClient(port)
    for k in range(start, start + n, chunk):
        entries = [
            [event_time(1_700_000_000, i), dict(COMPLETE, transaction_id=f"T-{i}", appsflyer_id=f"af-{i}")]
            for i in range(k, min(k + chunk, start + n))
        ]
        client.send_chunk(TAG, entries, f"c{k}")
    client.close()


def txns(n, start=0):
    return {f"T-{i}" for i in range(start, start + n)}


def test_agent_to_agent_with_acks_handshake_tls_and_gzip(tmp_path):
    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    receiver_cfg = (
        forward_input(
            shared_key="hive-key",
            self_hostname="collector",
            tls_cert=str(tmp_path / "server.pem"),
            tls_key=str(tmp_path / "server.pem"),
            udp_heartbeat=False,
        )
        + file_output()
    )
    with Agent(tmp_path / "collector", receiver_cfg) as collector:
        sender_cfg = (
            forward_input()
            + HIVE_FILTER
            + forward_output(
                [("localhost", collector.port)],
                require_ack_response=True,
                ack_response_timeout="10s",
                shared_key="hive-key",
                self_hostname="game-01",
                tls=True,
                tls_ca=str(tmp_path / "ca.pem"),
                compress="gzip",
            )
        )
        with Agent(tmp_path / "sidecar", sender_cfg) as sidecar:
            send_purchases(sidecar.port, 0, 300)
            lines = collector.wait_for_records("transaction_id", txns(300))
    assert len(lines) == 300
    for line in lines:
        assert line["tag"] == TAG
        assert "_extra" not in line["record"] and "appsflyer_id" not in line["record"]
        assert line["record"]["category"] == "misample_purchase_log"


def test_failover_to_the_next_server_when_one_is_down(tmp_path):
    dead = free_port()
    with Agent(tmp_path / "collector", forward_input() + file_output()) as collector:
        cfg = forward_input() + forward_output(
            [("127.0.0.1", dead), ("127.0.0.1", collector.port)], require_ack_response=True, retry_wait="100ms"
        )
        with Agent(tmp_path / "sidecar", cfg) as sidecar:
            send_purchases(sidecar.port, 0, 200)
            collector.wait_for_records("transaction_id", txns(200))
            # Our line, not the words of the event loop's error (uvloop and asyncio say it differently).
            sidecar.wait_for_log(rf"server 127\.0\.0\.1:{dead} failed \(")


class SilentReceiver:
    """Accepts connections and reads everything, but never acks (a hung collector)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn):
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_receiver_that_never_acks_gets_the_chunks_resent_elsewhere_without_loss(tmp_path):
    silent = SilentReceiver()
    try:
        with Agent(tmp_path / "collector", forward_input() + file_output()) as collector:
            cfg = forward_input() + forward_output(
                [("127.0.0.1", silent.port), ("127.0.0.1", collector.port)],
                require_ack_response=True,
                ack_response_timeout="1s",
                retry_wait="100ms",
            )
            with Agent(tmp_path / "sidecar", cfg) as sidecar:
                send_purchases(sidecar.port, 0, 100)
                collector.wait_for_records("transaction_id", txns(100))
                sidecar.wait_for_log(rf"server 127\.0\.0\.1:{silent.port} failed \(timed out\)")
        assert silent.received > 0
    finally:
        silent.close()


class FloodingReceiver(SilentReceiver):
    """Answers the first bytes of each connection with ``reply`` (no ack), or sends it as soon as
    the connection is open (``first``: where a HELO would be): a broken or hostile collector."""

    def __init__(self, reply: bytes, first: bool = False):
        self.reply = reply
        self.first = first
        super().__init__()

    def _drain(self, conn):
        try:
            if not self.first:
                self.received += len(conn.recv(65536))
            conn.sendall(self.reply)
        except OSError:
            return
        super()._drain(conn)


def _nested_strings() -> bytes:
    """Arrays of 32 arrays of 32 arrays of 32 strs of 200 bytes: each part within msgpack's
    bounds, 6.6 MB in all."""
    array = b"\xdc\x00\x20"  # 32 items
    leaf = array + (b"\xd9\xc8" + b"y" * 200) * 32
    return array + (array + leaf * 32) * 32


@pytest.mark.parametrize(
    "reply",
    [
        b"\xdb" + (50 << 20).to_bytes(4, "big") + b"x" * (1 << 20),  # a str of 50 MiB: 1 MiB of it sent
        b"\xdd" + (10**8).to_bytes(4, "big") + b"\xc0" * (1 << 20),  # an array of 10^8 items: 1 MiB of them
        _nested_strings()[: 4 << 20],  # parts within the bounds, 4 MiB of them
    ],
    ids=["a-length-past-the-bound", "a-count-past-the-bound", "parts-past-the-bound"],
)
def test_a_reply_no_forward_server_sends_fails_that_server_at_once(tmp_path, reply):
    """A reply is a few dozen bytes: a server that sends megabytes instead is failed once its
    reply passes the bounds, not read on (a list of 10^8 items allocated for a 5-byte header,
    a reply built up to 100 MiB) until the ack timeout, and the chunks go to the next server."""
    flooding = FloodingReceiver(reply)
    try:
        with Agent(tmp_path / "collector", forward_input() + file_output()) as collector:
            servers = [("127.0.0.1", flooding.port), ("127.0.0.1", collector.port)]
            output = forward_output(servers, require_ack_response=True, ack_response_timeout="120s", recover_wait="60s")
            # The collector as standby: every chunk goes to the flooding server first.
            output = output.replace(f"port = {collector.port} }}", f"port = {collector.port}, standby = true }}")
            cfg = forward_input() + output
            with Agent(tmp_path / "sidecar", cfg) as sidecar:
                send_purchases(sidecar.port, 0, 100)
                collector.wait_for_records("transaction_id", txns(100), timeout=30)
                assert sidecar.proc.poll() is None
        assert flooding.received > 0
    finally:
        flooding.close()


def test_a_helo_no_forward_server_sends_fails_that_server_at_once(tmp_path):
    """The handshake reads its HELO within the same bounds: a server that floods instead of
    saying HELO is failed once it passes them, not read on until connect_timeout."""
    flooding = FloodingReceiver(_nested_strings()[: 4 << 20], first=True)
    keys = {"shared_key": "hive-key"}
    try:
        receiver = forward_input(self_hostname="collector", udp_heartbeat=False, **keys) + file_output()
        with Agent(tmp_path / "collector", receiver) as collector:
            servers = [("127.0.0.1", flooding.port), ("127.0.0.1", collector.port)]
            output = forward_output(
                servers, require_ack_response=True, connect_timeout="120s", self_hostname="game-01", **keys
            )
            output = output.replace(f"port = {collector.port} }}", f"port = {collector.port}, standby = true }}")
            with Agent(tmp_path / "sidecar", forward_input() + output) as sidecar:
                send_purchases(sidecar.port, 0, 100)
                collector.wait_for_records("transaction_id", txns(100), timeout=30)
                assert sidecar.proc.poll() is None
    finally:
        flooding.close()


def test_a_failed_handshake_is_a_clear_error_and_the_backlog_waits_for_the_fix(tmp_path):
    port = free_port()
    wrong = forward_input(port=port, shared_key="collector-key", self_hostname="collector") + file_output()
    collector = Agent(tmp_path / "collector", wrong).start()
    try:
        cfg = forward_input() + forward_output(
            [("127.0.0.1", port)],
            require_ack_response=True,
            shared_key="sidecar-key",
            self_hostname="game-01",
            retry_wait="200ms",
            retry_max_interval="500ms",
            recover_wait="200ms",
        )
        with Agent(tmp_path / "sidecar", cfg) as sidecar:
            send_purchases(sidecar.port, 0, 50)
            sidecar.wait_for_log(r"handshake failed: authentication refused by the server: shared_key mismatch")
            assert collector.output_lines() == []
            collector.stop()
            fixed = forward_input(port=port, shared_key="sidecar-key", self_hostname="collector") + file_output()
            collector = Agent(tmp_path / "collector", fixed).start()
            collector.wait_for_records("transaction_id", txns(50))
    finally:
        collector.kill()


def test_both_collectors_down_then_back_every_purchase_arrives_once(tmp_path):
    """One down → failover; both down → the backlog waits on disk; both back → all arrive, once."""
    ports = [free_port(), free_port()]
    receiver = forward_input(port=0) + HIVE_FILTER + file_output()

    def collector(i):
        cfg = receiver.replace("port = 0", f"port = {ports[i]}", 1)
        return Agent(tmp_path / f"collector{i}", cfg, journal="").start()

    cfg = (
        forward_input()
        + HIVE_FILTER
        + forward_output(
            [("127.0.0.1", p) for p in ports],
            require_ack_response=True,
            ack_response_timeout="2s",
            retry_wait="100ms",
            retry_max_interval="300ms",
            recover_wait="300ms",
        )
    )
    c0 = collector(0)
    sidecar = Agent(tmp_path / "sidecar", cfg).start()
    c1 = None
    try:
        send_purchases(sidecar.port, 0, 100)  # collector 1 is down: all go to collector 0
        c0.wait_for_records("transaction_id", txns(100))
        # Now both are down. (A clean stop: a collector killed with -9 may repeat its own last
        # batch into its own file on restart, which is its at-least-once, not ours.)
        c0.stop()
        send_purchases(sidecar.port, 100, 100)
        sidecar.wait_for_log(r"no server took the chunks")
        journal_bytes = sum(p.stat().st_size for p in (tmp_path / "sidecar/var/journal").glob("*.seg"))
        assert journal_bytes > 100 * 500  # the backlog is on disk
        c0, c1 = collector(0), collector(1)
        send_purchases(sidecar.port, 100, 100)  # a game server re-sending the same purchases
        deadline = __import__("time").monotonic() + 30
        while __import__("time").monotonic() < deadline:
            got = [l["record"]["transaction_id"] for c in (c0, c1) for l in c.output_lines()]
            if set(got) >= txns(200):
                break
            __import__("time").sleep(0.1)
        sidecar.stop()
        got = [l["record"]["transaction_id"] for c in (c0, c1) for l in c.output_lines()]
    finally:
        for a in (c0, c1, sidecar):
            if a is not None:
                a.kill()
    assert set(got) == txns(200)
    # Exactly once at the receivers: the sidecar's dedup dropped the re-sent copies, and
    # each collector's own dedup drops a chunk resent after a lost ack.
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"


def test_sigkill_during_delivery_loses_nothing(tmp_path):
    with Agent(tmp_path / "collector", forward_input() + file_output()) as collector:
        cfg = forward_input() + forward_output([("127.0.0.1", collector.port)], require_ack_response=True)
        sidecar = Agent(tmp_path / "sidecar", cfg).start()
        try:
            send_purchases(sidecar.port, 0, 2000, chunk=100)
            sidecar.kill()  # acked by the sidecar, most likely not all forwarded yet
            sidecar.start()
            lines = collector.wait_for_records("transaction_id", txns(2000))
        finally:
            sidecar.kill()
    got = [l["record"]["transaction_id"] for l in lines]
    assert set(got) == txns(2000)
    # Duplicates at most the batch in flight at the kill.
    assert len(got) - len(set(got)) <= 2000


def test_heartbeats_bring_a_recovered_server_back_before_recover_wait(tmp_path):
    ports = [free_port(), free_port()]
    receiver = forward_input(port=0) + file_output()
    c0 = Agent(tmp_path / "c0", receiver.replace("port = 0", f"port = {ports[0]}", 1)).start()
    c1 = None
    cfg = forward_input() + forward_output(
        [("127.0.0.1", p) for p in ports],
        require_ack_response=True,
        heartbeat_type="udp",
        heartbeat_interval="200ms",
        recover_wait="60s",
        chunk_limit_records=20,
    )
    sidecar = Agent(tmp_path / "sidecar", cfg).start()
    try:
        sidecar.wait_for_log(rf"server 127\.0\.0\.1:{ports[1]} does not answer heartbeats")
        c1 = Agent(tmp_path / "c1", receiver.replace("port = 0", f"port = {ports[1]}", 1)).start()
        sidecar.wait_for_log(rf"server 127\.0\.0\.1:{ports[1]} answers heartbeats again")
        send_purchases(sidecar.port, 0, 400, chunk=20)
        c0.wait_for_records("transaction_id", set(), timeout=1)
        deadline = __import__("time").monotonic() + 20
        while __import__("time").monotonic() < deadline:
            got0 = {l["record"]["transaction_id"] for l in c0.output_lines()}
            got1 = {l["record"]["transaction_id"] for l in c1.output_lines()}
            if got0 | got1 >= txns(400):
                break
            __import__("time").sleep(0.1)
        # Weighted round robin over both: each took a share, long before recover_wait (60 s).
        assert got0 | got1 == txns(400) and got0 and got1
    finally:
        for a in (c0, c1, sidecar):
            if a is not None:
                a.kill()

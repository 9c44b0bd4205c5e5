"""Real Forward clients written by others, against the agent as a subprocess.

fluent-logger (PyPI) in plain and nanosecond mode, and @fluent-org/logger (npm)
in PackedForward, CompressedPackedForward, Message and Forward mode, with acks
and with the shared-key handshake. Every record sent arrives, with its tag,
time and fields.
"""

import datetime
import json
import subprocess

import pytest
from fluent import sender

from tests.agentproc import Agent, file_output, forward_input


def _by_seq(lines):
    return {line["record"]["seq"]: line for line in lines}


@pytest.fixture
def agent(tmp_path):
    with Agent(tmp_path, forward_input() + file_output()) as a:
        yield a


@pytest.mark.parametrize("nanosecond", [False, True])
def test_fluent_logger_python(tmp_path, nanosecond):
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        s = sender.FluentSender("game", host="127.0.0.1", port=agent.port, nanosecond_precision=nanosecond)
        sent = []
        for i in range(200):
            rec = {"seq": i, "product_id": f"p{i}", "price": 1.5 * i, "tags": ["a", i], "user": {"uid": i}}
            t = 1_700_000_000 + i + (0.123456789 if nanosecond else 0)
            assert s.emit_with_time("purchase_log", t, rec), s.last_error
            sent.append((t, rec))
        s.close()
        lines = _by_seq(agent.wait_for_output(200))
    for i, (t, rec) in enumerate(sent):
        line = lines[i]
        assert line["tag"] == "game.purchase_log"
        assert line["record"] == rec
        if nanosecond:
            # msgpack EventTime keeps nanoseconds (as far as a float carries them).
            stamp = datetime.datetime.fromtimestamp(int(t), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            assert line["time"][:19] == stamp
            assert line["time"][20:25] == "12345"
        else:
            assert (
                line["time"]
                == datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".000000000Z"
            )


MODES = [
    ("PackedForward", {"ack": True}),
    ("CompressedPackedForward", {"ack": True}),
    ("Message", {"ack": True}),
    ("Forward", {"ack": False, "eventTime": True}),
    ("PackedForward", {"ack": True, "sharedKey": "s3cret", "clientHostname": "game-01"}),
    ("CompressedPackedForward", {"ack": True, "sharedKey": "s3cret", "eventTime": True}),
]


@pytest.mark.parametrize("mode,options", MODES, ids=[f"{m}-{'-'.join(o)}" for m, o in MODES])
def test_fluent_org_logger_node(tmp_path, node_client, mode, options):
    extra = {"shared_key": options["sharedKey"], "self_hostname": "hive-agent-test"} if "sharedKey" in options else {}
    with Agent(tmp_path, forward_input(**extra) + file_output()) as agent:
        args = dict(
            options,
            port=agent.port,
            tag="ha2union.game.samplegame",
            label="purchase_log",
            count=300,
            mode=mode,
            flushInterval=5,
        )
        run = subprocess.run(["node", str(node_client), json.dumps(args)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == {"sent": 300}
        # With acks, every emit promise resolved only on its ack: exit 0 means all were acked.
        lines = _by_seq(agent.wait_for_output(300))
    assert sorted(lines) == list(range(300))
    for i, line in lines.items():
        assert line["tag"] == "ha2union.game.samplegame.purchase_log"
        assert line["record"] == {
            "seq": i,
            "product_id": f"sg.gem_pack_{i % 5}",
            "price": 0.99 + i,
            "nested": {"ok": True, "list": [i, "x"]},
        }
        stamp = datetime.datetime.fromtimestamp(1_700_000_000 + i, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        nanos = "123456789" if options.get("eventTime") else "000000000"
        assert line["time"] == f"{stamp}.{nanos}Z"


def test_node_client_with_wrong_shared_key_gets_nothing_in(tmp_path, node_client):
    with Agent(tmp_path, forward_input(shared_key="right", self_hostname="srv") + file_output()) as agent:
        args = dict(port=agent.port, tag="t", count=3, mode="PackedForward", ack=True, sharedKey="wrong")
        run = subprocess.Popen(
            ["node", str(node_client), json.dumps(args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            agent.wait_for_log(r"peer 127\.0\.0\.1:\d+ \(node-client\): authentication failed: shared_key mismatch")
        finally:
            run.kill()
            run.wait()
        assert agent.output_lines() == []

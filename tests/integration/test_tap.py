"""hive-agent tap: what normalization did to a live record, as JSON lines, secrets masked."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.agentproc import MONITOR, Agent, file_output, forward_input, http_output
from tests.fakes.hive_http import FakeHiveHttp
from tests.integration.test_forward_output import HIVE_FILTER
from tests.unit.test_hive_purchase_log import COMPLETE
from tests.wire import ForwardClient, event_time

SECRET = "tap-secret-0123456789"


def test_tap_shows_records_after_the_filters_for_the_tags_asked_for(tmp_path):
    with FakeHiveHttp() as hive:
        cfg = (
            MONITOR + forward_input() + HIVE_FILTER + file_output() + http_output(hive.url, headers={"X-Token": SECRET})
        )
        with Agent(tmp_path, cfg) as agent:
            tap = subprocess.Popen(
                [sys.executable, "-m", "agent", "tap", "-c", str(agent.config), "--match", "ha2union.game.**"],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            lines: list[dict] = []
            reader = threading.Thread(target=lambda: lines.extend(json.loads(x) for x in tap.stdout), daemon=True)
            reader.start()
            client = ForwardClient(agent.port)
            sent = 0
            deadline = time.monotonic() + 20
            while not lines and time.monotonic() < deadline:  # until the tap is listening
                sent += 1
                record = dict(COMPLETE, transaction_id=f"W-{sent}")
                client.send_chunk("ha2union.game.g.purchase_log", [[event_time(1_700_000_000), record]], f"w{sent}")
                time.sleep(0.2)
            aliased = dict(COMPLETE, transaction_id="T-TAP", note=SECRET)
            aliased["ip"] = aliased.pop("client_ip")
            client.send_chunk("other.tag", [[event_time(1_700_000_000), {"hidden": True}]], "o1")
            client.send_chunk("ha2union.game.g.purchase_log", [[event_time(1_700_000_000), aliased]], "t1")
            client.close()
            while not any(line.get("record", {}).get("transaction_id") == "T-TAP" for line in lines):
                assert time.monotonic() < deadline, lines[-3:]
                time.sleep(0.05)
            tap.terminate()
            tap.wait(10)
            reader.join(10)
            tap.stdout.close()
            tap.stderr.close()
            assert agent.stop() == 0
    [shown] = [line for line in lines if line.get("record", {}).get("transaction_id") == "T-TAP"]
    assert shown["tag"] == "ha2union.game.g.purchase_log"
    assert shown["record"]["client_ip"] == COMPLETE["client_ip"] and "ip" not in shown["record"]  # normalized
    assert SECRET not in json.dumps(lines) and shown["record"]["_extra"]["note"] == "***"
    assert all(line["tag"].startswith("ha2union.game.") for line in lines)  # other.tag was not asked for


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another local user needs root")
def test_another_local_user_reads_no_purchase_from_the_tap():
    # A workdir every user may enter, as a service's is: only the agent's own modes keep them out.
    workdir = Path(tempfile.mkdtemp(prefix="tap-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    with Agent(workdir, MONITOR + forward_input() + file_output()) as agent:
        socket_path = workdir / "var" / "state" / "control.sock"
        assert socket_path.exists()
        as_nobody = subprocess.run(
            [
                "/usr/bin/python3",
                "-I",
                "-c",
                "import socket, sys, urllib.request\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "try:\n"
                f"    s.connect({str(socket_path)!r})\n"
                "except PermissionError:\n"
                "    unix = 'refused'\n"
                "else:\n"
                "    unix = 'connected'\n"
                "try:\n"
                f"    urllib.request.urlopen('http://127.0.0.1:{agent.monitor_port}/api/tap', timeout=5)\n"
                "    tcp = 'served'\n"
                "except urllib.error.HTTPError as e:\n"
                "    tcp = str(e.code)\n"
                "print(unix, tcp)\n",
            ],
            user=65534,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert as_nobody.stdout.split() == ["refused", "403"], as_nobody.stderr
        assert agent.stop() == 0
    shutil.rmtree(workdir)

"""The command line and the lifecycle an operator sees."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.agentproc import Agent, file_output, forward_input
from tests.wire import ForwardClient, event_time

ROOT = Path(__file__).resolve().parents[2]


def hive_agent(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, cwd=cwd, timeout=60, env=env
    )


def test_version():
    run = hive_agent("version")
    assert run.returncode == 0 and run.stdout.startswith("hive-agent ")


def test_check_prints_what_would_run_for_the_default_and_example_configs():
    run = hive_agent("check", "-c", "conf/agent.toml")
    assert run.returncode == 0, run.stderr
    assert "input  forward.0: forward 127.0.0.1:24224" in run.stdout
    assert "output local: file match '**' path var/out/events.jsonl" in run.stdout
    env = dict(
        os.environ,
        HIVE_FORWARD_SHARED_KEY="example-key",
        AF_TOKEN_SAMPLEGAME="af-1",
        AF_TOKEN_SAMPLEGAME_IOS="af-2",
        WT_TOKEN_SAMPLEGAME="wt",
        NAVER_RELAY_TOKEN="nv",
    )
    for example in sorted((ROOT / "conf/examples").glob("*.toml")):
        run = hive_agent("check", "-c", str(example), env=env)
        assert run.returncode == 0, f"{example}: {run.stderr}"
        if example.name == "sidecar.toml":
            assert (
                "output appsflyer: appsflyer match 'ha2union.game.*.purchase_log' to https://api3.appsflyer.com "
                "for 2 apps" in run.stdout
            )
            assert "af-1" not in run.stdout and "af-2" not in run.stdout
        if example.name == "legacy-tail.toml":
            assert (
                "input  purchase-files: tail /var/log/*/purchase*.json tag ha2union.game.{game}.purchase_log"
                in run.stdout
            )


OUT = '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "stdout"\n'


def test_check_rejects_a_bad_config_with_exit_2_and_says_where(tmp_path):
    cases = {
        '[[inputs]]\ntype = "forward"\nprot = 24224\n': "inputs.0.prot: unknown key",
        '[[inputs]]\ntype = "kafka"\n': "inputs.0",
        '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "file"\n': "outputs.0.path: Field required",
        '[agent]\nshutdown_timeout = "soon"\n[[inputs]]\ntype = "forward"\n': "is not a duration",
        '[[inputs]]\ntype = "forward"\nshared_key = "env:HIVE_TEST_UNSET_KEY"\n': "HIVE_TEST_UNSET_KEY is not set",
        '[[inputs]]\ntype = "forward"\ntls_cert = "/nonexistent.pem"\n': "tls_cert and tls_key go together",
        "not toml at all [": "not valid TOML",
        # Names map to files under data_dir: two names must never share one, nor leave the directory.
        OUT + 'name = "a/b"\n': "outputs.0.name: 'a/b' is not a usable name",
        OUT + 'name = ".."\n': "outputs.0.name: '..' is not a usable name",
        OUT + "retry_wait = nan\n": "outputs.0.retry_wait: nan is not a duration",
        OUT + 'retry_wait = "0s"\n': "outputs.0.retry_wait: must be at least 1ms",
        '[agent.journal]\nfsync = "interval"\nfsync_interval = "0s"\n' + OUT: "agent.journal.fsync_interval",
        '[[inputs]]\ntype = "forward"\nmax_frame_size = 0\n'
        + OUT[len('[[inputs]]\ntype = "forward"\n') :]: "inputs.0.max_frame_size",
        '[[inputs]]\ntype = "forward"\n': "at least one [[outputs]] is needed",
        '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "http"\nurl = "http://u:p@127.0.0.1:9"\n'
        'headers = { Authorization = "Bearer x" }\n': "give one of them",
        f'[agent]\ndata_dir = "{tmp_path / "a-file"}"\n' + OUT: "is not a directory",
    }
    (tmp_path / "a-file").write_text("")
    for text, message in cases.items():
        cfg = tmp_path / "bad.toml"
        cfg.write_text(text)
        run = hive_agent("check", "-c", str(cfg))
        assert run.returncode == 2, text
        assert message in run.stderr, (text, run.stderr)
        assert "Traceback" not in run.stderr
    run = hive_agent("run", "-c", str(tmp_path / "missing.toml"))
    assert run.returncode == 2 and "no such file" in run.stderr


def test_secrets_from_environment_are_never_printed(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text(
        '[[inputs]]\ntype = "forward"\nshared_key = "env:HIVE_TEST_KEY"\n[[outputs]]\ntype = "stdout"\n'
        '[[outputs]]\ntype = "http"\nurl = "https://hive:url-secret-pw@collector.example"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "agent", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        env={"HIVE_TEST_KEY": "super-secret-value", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "super-secret-value" not in run.stdout + run.stderr
    assert "url-secret-pw" not in run.stdout + run.stderr and "https://hive:***@collector.example" in run.stdout
    assert "shared_key" in run.stdout


def test_sigterm_stops_cleanly_with_exit_0_after_delivering(tmp_path):
    agent = Agent(tmp_path, forward_input() + file_output()).start()
    client = ForwardClient(agent.port)
    for k in range(20):
        client.send_chunk("t.stop", [[event_time(1_700_000_000, i), {"seq": k * 100 + i}] for i in range(100)], f"c{k}")
    assert agent.stop() == 0
    client.close()
    assert {l["record"]["seq"] for l in agent.output_lines()} == set(range(2000))
    log = agent.log()
    assert "SIGTERM received: stopping" in log and "hive-agent stopped" in log
    # The journal is collected once every output has passed it, on the next start.
    agent.start()
    assert agent.stop() == 0
    segments = list((tmp_path / "var/journal").glob("*.seg"))
    assert len(segments) <= 2


def test_a_second_agent_on_the_same_data_dir_is_refused(tmp_path):
    with Agent(tmp_path, forward_input() + file_output()):
        second = hive_agent("run", "-c", str(tmp_path / "agent.toml"), cwd=tmp_path)
    assert second.returncode != 0 and "in use by another agent" in second.stderr


def test_a_dead_delivery_process_is_restarted(tmp_path):
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        children = subprocess.run(["pgrep", "-P", str(agent.proc.pid)], capture_output=True, text=True)
        [child] = children.stdout.split()
        subprocess.run(["kill", "-9", child])
        agent.wait_for_log(r"delivery process exited with code -9; restarting")
        client = ForwardClient(agent.port)
        client.send_chunk("t.after", [[event_time(1_700_000_000), {"seq": 1}]], "x")
        client.close()
        agent.wait_for_records("seq", {1})


def test_a_second_signal_forces_exit(tmp_path):
    (tmp_path / "blocked").write_text("not a directory")
    cfg = forward_input() + file_output(path="blocked/x.jsonl", retry_wait="50ms", retry_forever=True)
    agent = Agent(tmp_path, cfg).start()
    try:
        client = ForwardClient(agent.port)
        client.send_chunk("t", [[event_time(1_700_000_000), {"seq": 1}]], "c")
        client.close()
        agent.wait_for_log(r"records not delivered")
        agent.proc.send_signal(signal.SIGTERM)
        agent.wait_for_log(r"SIGTERM received: stopping")
        time.sleep(0.3)
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(10) == 1
        assert "received again: forced exit" in agent.log()
    finally:
        agent.kill()
    # Nothing acknowledged is lost: the next start delivers it.
    (tmp_path / "blocked").unlink()
    with Agent(tmp_path, cfg) as again:
        again.wait_for_records("seq", {1}, path="blocked/x.jsonl")


def test_a_monitor_port_in_use_is_a_failed_start_exit_1_with_one_clear_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = Agent(tmp_path, f'[monitor]\nbind = "127.0.0.1"\nport = {port}\n' + forward_input() + file_output())
        with open(agent.log_path, "ab") as log:
            code = subprocess.run(
                [sys.executable, "-m", "agent", "run", "-c", str(agent.config)],
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=60,
            ).returncode
    assert code == 1
    text = agent.log()
    import re

    assert re.search(
        rf"ERROR .*monitor: cannot listen on 127\.0\.0\.1:{port}: .*address already in use.*; stopping", text, re.I
    ), text
    assert "Traceback" not in text


def test_every_command_makes_private_files_whatever_the_umask(tmp_path):
    import os
    import stat

    from agent.deadletter import DeadLetterStore

    (tmp_path / "agent.toml").write_text(
        f'[agent]\ndata_dir = "{tmp_path / "var"}"\n[[inputs]]\ntype = "forward"\nport = 0\n'
        '[[outputs]]\ntype = "stdout"\nname = "out"\n'
    )
    store = DeadLetterStore(tmp_path / "var" / "deadletter")
    store.write_records("out", [("t", 0, {"a": 1}, "HTTP 400")])
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.umask(0); from agent.cli import main; sys.exit(main(sys.argv[1:]))",
            "deadletter",
            "replay",
            "-c",
            str(tmp_path / "agent.toml"),
            "--output",
            "out",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    replay = tmp_path / "var" / "replay"
    assert stat.S_IMODE(replay.stat().st_mode) == 0o700
    [spool] = list(replay.iterdir())
    assert stat.S_IMODE(os.stat(spool).st_mode) == 0o600

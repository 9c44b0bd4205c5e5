"""Installed like a tool: from its wheel, outside the repository, with no config named."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.defaults import render

ROOT = Path(__file__).resolve().parents[2]


def test_conf_agent_toml_is_the_embedded_default():
    assert (ROOT / "conf" / "agent.toml").read_text() == render("var").replace(
        "# hive-agent: the embedded default (agent/defaults/agent.toml).", "# hive-agent: the embedded default."
    )


def test_the_wheel_installed_elsewhere_checks_inits_and_runs_on_its_embedded_default(tmp_path):
    dist, venv, home = tmp_path / "dist", tmp_path / "venv", tmp_path / "home"
    home.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("hive_agent-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    tool = str(venv / "bin/hive-agent")
    work = tmp_path / "elsewhere"  # no conf/ here: the config comes from the package
    work.mkdir()

    check = subprocess.run([tool, "check"], cwd=work, env=env, capture_output=True, text=True)
    state = home / ".local/state/hive-agent"
    assert check.returncode == 0, check.stderr
    assert f"config {state / 'agent.toml'}: OK" in check.stdout and f"data_dir {state}" in check.stdout

    init = subprocess.run(
        [tool, "init", "mine.toml", "--data-dir", str(tmp_path / "data")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0 and (work / "mine.toml").exists(), init.stderr
    assert subprocess.run([tool, "check", "-c", "mine.toml"], cwd=work, env=env).returncode == 0
    again = subprocess.run([tool, "init", "mine.toml"], cwd=work, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr

    # A short run on the embedded default, on other ports than a running agent's would use.
    text = (state / "agent.toml").read_text().replace("port = 24224", "port = 0").replace("port = 24220", "port = 0")
    (work / "ports.toml").write_text(text)
    proc = subprocess.Popen(
        [tool, "run", "-c", "ports.toml"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, out = time.monotonic() + 30, ""
        while "hive-agent ready" not in out and time.monotonic() < deadline and proc.poll() is None:
            out += proc.stdout.readline()
        assert "hive-agent ready" in out and f"data in {state}" in out, out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()

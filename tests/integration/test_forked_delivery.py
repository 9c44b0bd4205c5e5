"""The delivery process is forked from the main process before it starts: it shares the
main process's pages, holds none of its descriptors, and never outlives a refused start."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.agentproc import Agent, file_output, forward_input, wait_until
from tests.wire import ForwardClient, event_time


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def fd_targets(pid: int) -> set[str]:
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return targets


def shared_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = dict((line.split()[0].rstrip(":"), line.split()[1]) for line in f if len(line.split()) >= 2)
    return int(fields["Shared_Clean"]) + int(fields["Shared_Dirty"])


def test_the_delivery_process_is_forked_shares_pages_and_holds_no_descriptor_of_the_main_process(tmp_path):
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        [child] = children(agent.proc.pid)
        with open(f"/proc/{child}/cmdline", "rb") as f:
            assert b"\0deliver\0" not in f.read()  # forked, not a fresh `python -m agent deliver`
        with open(f"/proc/{child}/comm") as f:
            assert f.read().strip() == "hive-delivery"  # what ps -o comm and top show
        # Anonymous pages (the heap the interpreter and the config filled before the fork) are
        # shared: a fresh interpreter shares nothing but the files it maps.
        assert shared_kb(child) > 10_000
        main_fds, child_fds = fd_targets(agent.proc.pid), fd_targets(child)
        lock = str(tmp_path / "var" / "agent.lock")
        assert lock in main_fds
        assert lock not in child_fds, child_fds  # the data_dir lock is the main process's alone
        shared_sockets = {t for t in child_fds if t.startswith("socket:")} & main_fds
        assert not shared_sockets, f"the delivery process holds the main process's sockets {shared_sockets}"
        client = ForwardClient(agent.port)
        client.send_chunk("t.forked", [[event_time(1_700_000_000), {"seq": i}] for i in range(10)], "c1")
        client.close()
        agent.wait_for_records("seq", set(range(10)))


def test_a_refused_start_leaves_no_delivery_process_behind(tmp_path):
    with Agent(tmp_path, forward_input() + file_output()):
        second = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "agent.toml")],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, to find what it left
        )
        _, err = second.communicate(timeout=30)
        assert second.returncode != 0 and b"in use by another agent" in err

        def group_gone() -> bool:
            out = subprocess.run(["pgrep", "-g", str(second.pid)], capture_output=True, text=True).stdout
            return not out.split()

        wait_until(group_gone, timeout=10, what="the refused agent's delivery process to exit")


def test_a_delivery_process_restarted_after_a_crash_is_a_fresh_interpreter_and_delivers(tmp_path):
    with Agent(tmp_path, forward_input() + file_output()) as agent:
        [child] = children(agent.proc.pid)
        os.kill(child, 9)
        agent.wait_for_log(r"delivery process exited with code -9; restarting")

        def restarted() -> list[int]:
            return [c for c in children(agent.proc.pid) if c != child]

        [fresh] = wait_until(restarted, what="a new delivery process")
        time.sleep(0.2)
        with open(f"/proc/{fresh}/cmdline", "rb") as f:
            assert b"\0deliver\0" in f.read()
        client = ForwardClient(agent.port)
        client.send_chunk("t.after", [[event_time(1_700_000_000), {"seq": 1}]], "x")
        client.close()
        agent.wait_for_records("seq", {1})

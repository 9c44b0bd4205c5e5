"""What the agent loads at start: the modules that would cost memory in every sidecar stay out."""

from __future__ import annotations

import subprocess
import sys

LOADED = """
import sys
from agent.app import App
from agent.delivery.process import run_delivery
from agent.config.document import load_config
cfg = load_config({config!r})
print(" ".join(sorted(sys.modules)))
"""


def loaded_by_start(config: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", LOADED.format(config=config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_shipped_config_loads_no_http_client_no_code_lists_no_pydantic_and_no_package_metadata():
    modules = loaded_by_start("conf/agent.toml")
    assert "agent.config.types" in modules and "agent.hive.purchase_log" in modules  # the config and the spec did load
    heavy = {"aiohttp", "prometheus_client", "pycountry", "importlib.metadata", "yaml", "watchfiles", "zstandard"}
    heavy |= {"pydantic", "pydantic_core"}
    assert not heavy & modules, heavy & modules


STARTED = """
import asyncio, os, sys, tempfile
from agent.config.document import load_config
from agent.registry import OUTPUTS
names = ["AF_TOKEN_SAMPLEGAME", "AF_TOKEN_SAMPLEGAME_IOS", "WT_TOKEN_SAMPLEGAME", "NAVER_RELAY_TOKEN"]
names.append("HIVE_FORWARD_SHARED_KEY")
os.environ.update(dict.fromkeys(names, "t"))
cfg = load_config({config!r})
async def start_all():
    data_dir = tempfile.mkdtemp()
    for o in cfg.outputs:
        output = OUTPUTS[o.type].build(o, data_dir)
        await output.start()
        await output.close()
    return sorted(o.type for o in cfg.outputs)
print(" ".join(asyncio.run(start_all())))
print(" ".join(sorted(sys.modules)))
"""


def test_the_sidecars_mirrors_start_without_aiohttp():
    out = subprocess.run(
        [sys.executable, "-c", STARTED.format(config="conf/examples/sidecar.toml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    types, modules = out.stdout.splitlines()
    assert {"appsflyer", "wisetracker", "naver"} <= set(types.split())
    assert "h11" in modules.split() and "aiohttp" not in modules.split()


async def test_memory_is_released_once_after_each_burst_and_never_while_idle(monkeypatch):
    import asyncio

    from agent import memory

    released = []
    monkeypatch.setattr(memory, "release", lambda: released.append(1) or True)
    activity = {"n": 0}
    shrunk = []
    trimmer = memory.Trimmer(lambda: activity["n"], lambda: shrunk.append(len(released)), interval=0.05)
    task = asyncio.create_task(trimmer.run())
    await asyncio.sleep(0.2)
    assert released == []  # idle from the start: nothing to give back
    for _ in range(4):  # a burst
        activity["n"] += 1
        await asyncio.sleep(0.03)
    await asyncio.sleep(0.3)
    assert trimmer.releases == 1 and released == [1]  # once, after it ended
    assert shrunk == [0]  # the components' caches first, then the allocator
    task.cancel()


def test_release_gives_pages_back_where_the_allocator_is_glibc():
    import platform

    from agent import memory

    if platform.libc_ver()[0] != "glibc":
        return
    assert memory.cap_arenas() is True
    assert isinstance(memory.release(), bool)


THREAD_BURST = """
import sys, threading
from agent import memory
memory.cap_arenas(int(sys.argv[1]))

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

def burst():  # what a writer thread does: malloc'd buffers (4 KiB, past pymalloc), held, then freed
    held = [bytes(4096) for _ in range(1500)]
    del held

# A 4 MiB buffer, mapped and unmapped, as a journal read or a big frame does: glibc then raises its
# thresholds, and an arena's free top under 8 MiB is no longer given back as it is freed.
buffer = bytearray(4 << 20)
del buffer
memory.release()
before = rss_kb()
t = threading.Thread(target=burst)
t.start()
t.join()
memory.release()
print(rss_kb() - before)
"""


def test_what_a_thread_allocated_in_a_burst_goes_back_at_the_release():
    """glibc's malloc_trim gives back the free top of the main arena only: a second arena's stays
    resident up to the trim threshold. With one arena (the agent's cap) a thread's 6 MB goes back."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    from agent import memory

    def kept_kb(arenas: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", THREAD_BURST, str(arenas)], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    assert kept_kb(memory.ARENAS) < 1024
    assert kept_kb(2) > 4096  # the check can fail: with a second arena the same burst stays


BATCH_BUFFERS = """
import sys
from agent import memory
if sys.argv[1] == "capped":
    memory.cap_arenas()

def faults():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # minflt

segment = open(sys.argv[2], "rb")

def batch(i):  # what delivery does with a journal record: the read, the payload, the chunk it sends
    segment.seek(i % 6 * 730_000)
    data = segment.read(1 << 20)
    payload = bytes(memoryview(data)[16:730_016])
    del data
    chunk = b"\\x93" + b"".join([b"tag", payload[20:], b"option"])
    del payload, chunk

batch(0)
before = faults()
for i in range(100):
    batch(i)
print(faults() - before)
"""


def test_the_buffers_of_one_batch_reuse_the_pages_of_the_last(tmp_path):
    """A batch's big buffers, freed, leave the heap's top free: glibc's own thresholds (twice the
    largest buffer unmapped) cut it back each time, and the next batch faulted every page in
    again. With the agent's thresholds 100 batches of 1.7 MB fault in almost nothing."""
    import os
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    segment = tmp_path / "segment"
    segment.write_bytes(os.urandom(8 << 20))

    def faults(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", BATCH_BUFFERS, mode, str(segment)], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    assert faults("capped") < 1000
    assert faults("glibc") > 100 * 300  # the check can fail: without them each batch faults its pages anew

"""agent/_pools.c: the pages of pymalloc's empty pools go back to the kernel, in arenas a few
survivors keep, and the pools serve new objects afterwards as before."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter: the arenas it tracks are the ones this script makes.
SCRIPT = r"""
import gc, json
from agent import _pools
from agent.memory import release, track_pools

def rss_kb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])

assert track_pools() is True and track_pools() is True  # a second call changes nothing
burst = [("r-%d" % i, i, [i]) for i in range(400_000)]  # tuples, strings, lists: 3 size classes
survivors = burst[::4000]  # one in 4,000: about one per 100 pools, so no arena empties
del burst
gc.collect()
before, tracked = rss_kb(), _pools.tracked()
given = _pools.release()
after = rss_kb()
again = _pools.release()  # nothing more: the pools released stay so until used
renewed = [("n-%d" % i, i, [i]) for i in range(400_000)]  # the released pools, laid out afresh
assert [s[0] for s in survivors] == ["r-%d" % i for i in range(0, 400_000, 4000)]
assert all(r == ("n-%d" % i, i, [i]) for i, r in enumerate(renewed))
del renewed
gc.collect()
print(json.dumps({"tracked": tracked, "given": given, "dropped_kb": before - after, "again": again,
                  "release": release()}))
"""


def test_empty_pools_in_kept_arenas_are_given_back_and_serve_again():
    import json

    import agent._pools  # noqa: F401 -- built at install (setup.py); the tests run where a compiler is

    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["tracked"] >= 20  # the burst's arenas, still mapped for their survivors
    assert found["given"] >= 20 * 2**20  # their empty pools, but for each one's first page
    assert found["dropped_kb"] * 1024 >= found["given"] * 0.9  # and the process's RSS fell as much
    assert found["again"] == 0
    assert isinstance(found["release"], bool)

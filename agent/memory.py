"""Giving memory back: glibc's malloc, told to keep fewer arenas and to return what a burst left.

Why: after a burst of records, freed memory stays in the process. glibc's malloc keeps
one arena per thread that allocates (up to 8 per core), each holding its free chunks,
and returns the top of a heap only past a threshold; so an agent that took 1M records
went on holding twice its idle memory. These calls fix most of it:

* ``mallopt(M_ARENA_MAX, 1)``, once at start: the threads that decode costly frames,
  write dead letters, store dedup keys and settle the ledger use the main arena instead of
  growing one each. Only the main arena's free top goes back at a trim: a second arena's
  stays resident up to the trim threshold, which glibc raises to twice the largest buffer it
  has unmapped (a journal read, a big frame). With two arenas that held 1.9–2.7 MB a process
  after a burst on the sidecar config; the threads hardly ever allocate at the same moment,
  since they run Python under one lock, so sharing one costs no throughput measured;
* ``mallopt(M_MMAP_THRESHOLD, 4 MiB)`` and ``mallopt(M_TRIM_THRESHOLD, 8 MiB)``, at the same
  time: a journal read, a batch's payload and a chunk to send are buffers of up to a megabyte, a
  few of them alive at once. glibc's own thresholds follow the largest buffer unmapped, so each
  batch's buffers were mapped or grew the heap's top anew, and the top was cut back as they were
  freed: fresh pages every time, 0.75 page faults a purchase in the delivery process, which spent
  38% of its CPU in the kernel (15% after). Held up to 8 MiB, the top is used again while the
  agent is busy, and given back by the trim below once it is quiet;
* ``malloc_trim(0)`` once a burst is over (:class:`Trimmer`): every free page of the
  arena goes back to the kernel. It takes a few milliseconds on a heap of 100 MB, and
  it runs only after a quiet interval that followed activity, so an idle agent does not
  run it at all, and a busy one only between bursts.

Elsewhere than glibc (musl has neither call) both are skipped.

And one for pymalloc, which holds the small objects and which ``malloc_trim`` does not reach: an
arena goes back to the kernel only once all its pools are empty, so the few objects that outlive
a burst kept each arena it added resident. :func:`track_pools`, at start, has the compiled helper
(agent/_pools.c) note every arena; :func:`release` then gives back the pages of every empty pool
but its header's. Where the helper was not built (no C compiler at install) it is skipped.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import types
from collections.abc import Callable

log = logging.getLogger("agent")

M_ARENA_MAX = -8  # glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
ARENAS = 1
# Past the buffers of one batch (agent/delivery/runner.py reads the journal 1 MiB at a time); larger
# ones (a huge frame) are still mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 8 << 20  # the free top held while busy: the buffers of a few batches
QUIET_INTERVAL = 5.0  # seconds without activity after which a burst is over

_mallopt: Callable[[int, int], int] | None
_malloc_trim: Callable[[int], int] | None
try:
    _libc = ctypes.CDLL(None)
    _mallopt, _malloc_trim = _libc.mallopt, _libc.malloc_trim
except (OSError, AttributeError):  # not glibc
    _mallopt = _malloc_trim = None

_pools: types.ModuleType | None
try:
    from agent import _pools
except ImportError:  # installed where no C compiler was
    _pools = None


_tracking = False  # track_pools() took: a release that then cannot thin is worth a line


def track_pools() -> bool:
    """Call first, before the imports: the arenas pymalloc maps from then on are the ones
    :func:`release` can thin. True where the helper is built and knows this CPython's layout."""
    global _tracking
    _tracking = _pools is not None and _pools.install()
    return _tracking


def cap_arenas(arenas: int = ARENAS) -> bool:
    """Call before the process starts threads: one arena, and big buffers' pages kept between
    batches (above). True where the allocator took it."""
    if _mallopt is None:
        return False
    return (
        _mallopt(M_ARENA_MAX, arenas) == 1
        and _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )


def release() -> bool:
    """Collect cyclic garbage, then give every free page back to the kernel."""
    # CPython 3.11's method cache holds a reference to the name of each of its 4,096 entries,
    # slotted by the name's address, and C code that calls a method by a C string makes a new
    # name a call (msgspec's pattern checks, "search"; datetime's tzinfo calls, "dst"): after
    # a burst, hundreds of them held pymalloc arenas that had little else alive in them.
    clear_type_cache = getattr(sys, "_clear_type_cache", None)
    if clear_type_cache is not None:
        clear_type_cache()
    gc.collect()
    global _tracking
    if _pools is not None and _pools.release() < 0 and _tracking:
        _tracking = False  # said once: a pool header unlike CPython's layout stopped it for good
        log.warning("memory: empty allocator pools are no longer given back (unexpected pool layout)")
    return _malloc_trim is not None and bool(_malloc_trim(0))


class Trimmer:
    """Calls :func:`release` once after each burst: when ``activity()`` (a count that grows
    while the process works) has not moved for ``QUIET_INTERVAL`` after it had moved."""

    def __init__(
        self, activity: Callable[[], int], shrink: Callable[[], None] = lambda: None, interval: float = QUIET_INTERVAL
    ):
        self.activity = activity
        self.shrink = shrink  # the components' own caches, given back first
        self.interval = interval
        self.releases = 0

    async def run(self) -> None:
        last = self.activity()
        busy = False
        while True:
            await asyncio.sleep(self.interval)
            now = self.activity()
            if now != last:
                busy, last = True, now
            elif busy:
                busy = False
                try:
                    self.shrink()
                except Exception:  # a cache that cannot shrink must not stop the trimming
                    log.exception("giving memory back failed")
                release()
                self.releases += 1

"""The agent's C heap housekeeping: fewer heaps (`limit_malloc_arenas`), free pages given back every minute
(`HeapTrimmer`), so RSS stays flat over hours.

Why: a running line allocates frame-sized buffers all the time (a decoded 640x480 frame is 0.9 MiB; the
model's input tensor 1.2 MiB), on several threads. glibc raises its mmap threshold to the largest block
freed so far, so these buffers come from the per-thread heaps ("arenas", up to 8 per core) instead of
their own mappings; blocks that live long (a frame waiting for the archive) sit between short ones, and
the heaps keep the space. Soaks of the agent at 30 parts/s with every output on (bench/soak.py,
docs/agent.md "Memory over a long run") showed RSS going up in steps of 3-5 MiB every 5-15 minutes while
glibc's bytes in use stayed flat and its bytes held free grew. A fixed mmap threshold
(`MALLOC_MMAP_THRESHOLD_=262144`) kept RSS flat over 20 minutes but cost 20 % more CPU per part (every
frame mapped, faulted in and unmapped). `malloc_trim(0)` gives the whole free pages inside every heap back
(`MADV_DONTNEED`) in milliseconds; what it cannot give back is a page that still holds one small block in
use, and the more heaps, the more such pages: hence both, the heaps capped at `memory.malloc_arenas`
before the agent's threads start and a trim every `memory.trim_every_s`.

Off glibc (musl, macOS, Windows) there is nothing to call and the trimmer does nothing.

    >>> trimmer = HeapTrimmer(interval_s=60)
    >>> trimmer.trim() >= 0 or not trimmer.available
    True
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import time

log = logging.getLogger(__name__)


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (its malloc has `malloc_trim` and `mallinfo2`); else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim"):
        return None
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc


def resident_bytes() -> int:
    """This process's resident set, from /proc (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def limit_malloc_arenas(arenas: int) -> bool:
    """At most `arenas` C heaps for all threads (glibc's M_ARENA_MAX; a thread started later shares one);
    False off glibc or for 0 (glibc's default kept)."""
    libc = glibc()
    if libc is None or arenas <= 0:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


class HeapTrimmer:
    """Calls glibc's `malloc_trim(0)` every `interval_s` seconds on a daemon thread (0: never)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.available = glibc() is not None
        self.trims = 0
        self.released_bytes = 0  # resident bytes given back, all trims together
        self.last_ms = 0.0  # how long the last trim took
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.available or self.interval_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heap-trim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def trim(self) -> int:
        """Trim now; the resident bytes given back (0 off glibc)."""
        libc = glibc()
        if libc is None:
            return 0
        before, t0 = resident_bytes(), time.perf_counter()
        libc.malloc_trim(0)
        self.last_ms = (time.perf_counter() - t0) * 1000
        released = max(0, before - resident_bytes())
        self.trims += 1
        self.released_bytes += released
        return released

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.trim()
            except Exception:  # memory housekeeping must never take the agent down
                log.exception("heap trim failed")
                return

"""HeapTrimmer: the C heap's free pages inside a thread's arena go back to the system (glibc only)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_agent.config import MemoryConfig
from edge_agent.heap_trim import HeapTrimmer, resident_bytes

pytestmark = pytest.mark.skipif(not HeapTrimmer().available, reason="no glibc malloc_trim on this system")

MiB = 2**20


def _fragment_a_thread_arena(kept: list[np.ndarray]) -> None:
    """What a line's threads do: frame-sized blocks freed between smaller ones that live on."""
    big = np.ones(4 * MiB, np.uint8)  # mmapped, and freeing it raises glibc's mmap threshold to 4 MiB
    del big
    frames = []
    for _ in range(48):
        frames.append(np.ones(MiB, np.uint8))  # now from this thread's arena, touched: resident
        kept.append(np.ones(64 * 1024, np.uint8))  # a long-lived neighbour: the holes cannot merge
    frames.clear()  # 48 MiB free inside the arena, not at its top


def test_trim_gives_a_fragmented_arenas_free_pages_back() -> None:
    kept: list[np.ndarray] = []
    t = threading.Thread(target=_fragment_a_thread_arena, args=(kept,))
    t.start()
    t.join()
    before = resident_bytes()
    trimmer = HeapTrimmer()
    released = trimmer.trim()
    assert released > 24 * MiB, f"only {released / MiB:.1f} MiB of ~48 MiB given back"
    assert resident_bytes() < before - 24 * MiB
    assert trimmer.trims == 1 and trimmer.released_bytes == released
    assert len(kept) == 48 and all(int(a[-1]) == 1 for a in kept)  # what is in use is untouched


def test_the_trimmer_thread_trims_every_interval_and_stops() -> None:
    trimmer = HeapTrimmer(interval_s=0.05)
    trimmer.start()
    deadline = time.monotonic() + 10
    while trimmer.trims < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    trimmer.stop()
    assert trimmer.trims >= 3
    count = trimmer.trims
    time.sleep(0.2)
    assert trimmer.trims == count  # stopped


def test_zero_turns_it_off() -> None:
    trimmer = HeapTrimmer(MemoryConfig(trim_every_s=0).trim_every_s)
    trimmer.start()
    time.sleep(0.1)
    trimmer.stop()
    assert trimmer.trims == 0
    assert MemoryConfig().trim_every_s == 60


def test_the_memory_tracer_reports_heap_counters_and_a_trim(tmp_path) -> None:
    """The soak's developer aid (EDGE_INSPECT_TRACEMALLOC, docs/agent.md): RSS, glibc's counters, a trim."""
    from edge_agent.memtrace import MemoryTracer

    out = tmp_path / "mem.txt"
    tracer = MemoryTracer(out, top=0, trim=True)
    tracer.report()
    tracer.report()
    text = out.read_text()
    assert text.count("=== ") == 2 and "report 1" in text
    assert "glibc heap: arena" in text and "in_use" in text and "free" in text
    assert text.count("malloc_trim(0): rss ") == 2


_COUNT_HEAPS = """
import ctypes, sys, threading
from edge_agent.heap_trim import glibc, limit_malloc_arenas
if sys.argv[1] != "default":
    limit_malloc_arenas(int(sys.argv[1]))
libc = glibc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
barrier = threading.Barrier(9)
def work():
    libc.malloc(1000)  # a thread's first malloc gives it a heap (arena)
    barrier.wait(); barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
barrier.wait()
# a thread heap is a 64 MiB-aligned anonymous mapping
maps = [line.split() for line in open("/proc/self/maps")]
print(sum(1 for m in maps if int(m[0].split("-")[0], 16) % 2**26 == 0 and m[1] == "rw-p" and len(m) == 5))
barrier.wait()
"""


@pytest.mark.parametrize("setting", ["2", "default"])
def test_malloc_arenas_caps_the_heaps_threads_get(setting: str) -> None:
    """memory.malloc_arenas: 2 gives eight busy threads one heap beside the main one; glibc's default, 8 per
    core, gives each its own (on a machine with one core or more)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_HEAPS, setting], cwd=repo, capture_output=True, text=True, check=True
    )
    heaps = int(out.stdout.strip())
    if setting == "default":
        assert heaps >= 2  # each busy thread has a heap of its own, up to glibc's limit
    else:
        assert heaps == 1  # and the main heap: 2

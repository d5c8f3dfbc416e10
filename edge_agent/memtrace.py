"""A developer aid for memory soaks: what grows in a running agent, written to a file every few minutes.

Off unless the environment asks for it (docs/agent.md, "Memory"):

    EDGE_INSPECT_TRACEMALLOC=/tmp/agent-mem.txt edge-inspect run --config site.yaml

Tracing starts `EDGE_INSPECT_TRACEMALLOC_S` seconds (default 300) after the start, once the line runs (the
OPC UA server takes minutes to build its address space under tracemalloc). From then on, every as many
seconds, it appends one report: RSS; glibc's heap counters (`mallinfo2`: bytes in use against bytes held
free, the sign of fragmentation); the top `EDGE_INSPECT_TRACEMALLOC_TOP` (default 25) tracemalloc growths
by file:line since the first report and since the last one; and the live object counts by type (`gc`)
that changed most. `EDGE_INSPECT_TRACEMALLOC_TOP=0` leaves tracemalloc off: RSS and heap counters only, at
no cost. With `EDGE_INSPECT_MALLOC_TRIM=1` it also calls glibc's `malloc_trim(0)` and logs the RSS before
and after (free heap memory given back to the system: fragmentation, not a leak). tracemalloc slows
allocation-heavy code down: for soaks and benches only, never on a line.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from edge_agent.heap_trim import HeapTrimmer, glibc, resident_bytes

log = logging.getLogger(__name__)

_MiB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_info() -> dict[str, float] | None:
    """glibc's heap counters in MiB (None off glibc): `in_use` by the program, `free` held by malloc,
    `mmapped` (big blocks), `arena` (the heaps' size, all arenas)."""
    libc = glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "arena": info.arena / _MiB,
        "in_use": info.uordblks / _MiB,
        "free": info.fordblks / _MiB,
        "mmapped": info.hblkhd / _MiB,
    }


def rss_mib() -> float:
    return resident_bytes() / _MiB


def type_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


class MemoryTracer:
    """Writes a growth report to `path` every `interval_s` seconds from a daemon thread."""

    def __init__(self, path: Path, interval_s: float = 300.0, top: int = 25, trim: bool = False) -> None:
        self.path, self.interval_s, self.top, self.trim = path, interval_s, top, trim
        self._trimmer = HeapTrimmer(0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: tracemalloc.Snapshot | None = None
        self._last: tracemalloc.Snapshot | None = None
        self._first_types: Counter[str] = Counter()
        self._last_types: Counter[str] = Counter()
        self.reports = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="memtrace", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        # tracing starts one interval in: start-up (asyncua building its address space) under tracemalloc
        # takes minutes, and what matters is what grows once the line runs
        if self._stop.wait(self.interval_s):
            return
        if self.top and not tracemalloc.is_tracing():
            tracemalloc.start(1)
        while True:
            try:
                self.report()
            except Exception:  # a developer aid must never take the agent down
                log.exception("memtrace: report failed")
            if self._stop.wait(self.interval_s):
                return

    def report(self) -> None:
        lines = [f"=== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} report {self.reports}"]
        traced, peak = tracemalloc.get_traced_memory()
        lines.append(f"rss {rss_mib():.1f} MiB; traced {traced / _MiB:.1f} MiB (peak {peak / _MiB:.1f})")
        heap = heap_info()
        if heap:
            lines.append("glibc heap: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in heap.items()))
        if self.trim and self._trimmer.available:
            before = rss_mib()
            self._trimmer.trim()
            lines.append(f"malloc_trim(0): rss {before:.1f} -> {rss_mib():.1f} MiB")
        if self.top:
            self._growth(lines)
        self.reports += 1
        with self.path.open("a") as f:
            f.write("\n".join(lines) + "\n")

    def _growth(self, lines: list[str]) -> None:
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
        )
        types = type_counts()
        for label, base, base_types in (
            ("since the first report", self._first, self._first_types),
            ("since the last report", self._last, self._last_types),
        ):
            if base is None:
                continue
            lines.append(f"-- tracemalloc growth {label} (file:line, size diff, count diff)")
            for stat in snap.compare_to(base, "lineno")[: self.top]:
                frame = stat.traceback[0]
                lines.append(
                    f"  {frame.filename}:{frame.lineno}  {stat.size_diff / 1024:+.1f} KiB "
                    f"({stat.size / 1024:.1f} KiB)  {stat.count_diff:+d} ({stat.count})"
                )
            lines.append(f"-- gc objects {label} (type, count diff, count)")
            diff = Counter(types)
            diff.subtract(base_types)
            for name, change in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: self.top]:
                if change:
                    lines.append(f"  {name}  {change:+d} ({types[name]})")
        if self._first is None:
            self._first, self._first_types = snap, types
        self._last, self._last_types = snap, types


def start_from_env(environ: dict[str, str] | os._Environ = os.environ) -> MemoryTracer | None:
    """The tracer `EDGE_INSPECT_TRACEMALLOC` asks for, started; None when it is not set."""
    target = environ.get("EDGE_INSPECT_TRACEMALLOC")
    if not target:
        return None
    tracer = MemoryTracer(
        Path(target),
        interval_s=float(environ.get("EDGE_INSPECT_TRACEMALLOC_S", "300")),
        top=int(environ.get("EDGE_INSPECT_TRACEMALLOC_TOP", "25")),
        trim=environ.get("EDGE_INSPECT_MALLOC_TRIM", "") == "1",
    )
    tracer.start()
    log.warning(
        "memtrace: tracemalloc on, a report to %s every %s s (slower: a developer aid)",
        target,
        tracer.interval_s,
    )
    return tracer

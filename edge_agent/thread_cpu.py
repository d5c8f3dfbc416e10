"""CPU time of each thread of this process, by name: where a busy agent's cores go (`/metrics`, bench).

Python threads are named by the agent (`<line>/<camera>/capture`, `<line>/infer_0`, `<line>/journal`,
`archive`, `zmq-pub`, ...); threads started by native libraries (ONNX Runtime's intra-op pool, ZeroMQ's
I/O threads) have no Python name and are summed as `native`. Linux only (it reads /proc); elsewhere the
result is empty.

Example:
    >>> cpu = thread_cpu_seconds()
    >>> all(seconds >= 0 for seconds in cpu.values())
    True
"""

from __future__ import annotations

import os
import threading

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds per thread name, summed over threads of the same name, live threads only."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime, in clock ticks
        name = names.get(int(tid), "native")
        out[name] = out.get(name, 0.0) + seconds
    return out

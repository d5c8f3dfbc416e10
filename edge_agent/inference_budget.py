"""`InferenceBudget`: one inference thread budget for the whole agent, shared by every line's model.

ONNX Runtime's Python API gives each session its own intra-op thread pool. Five lines on a 2-core PC with
2 threads each would run 10 busy threads on 2 cores and every inference would take many times longer than
alone. Instead every model of the agent runs inside one gate: at most `concurrent` inferences at once, each
with `threads // concurrent` intra-op threads, so N lines add up to the machine's throughput instead of
fighting over it. Idle threads do not spin when more than `concurrent` models share the gate.

Example:
    >>> budget = InferenceBudget(threads=2, concurrent=1, models=3)
    >>> budget.threads_per_model, budget.spinning
    (2, False)
    >>> with budget.gate:
    ...     pass  # one ONNX Runtime call at a time
"""

from __future__ import annotations

import threading

from vision.providers import physical_cores


def resolve_concurrent(setting: int | str, threads: int, free_running: bool) -> int:
    """`inference.concurrent`, with `auto` decided for this PC and these lines.

    Two parts in inference at once, one thread each, keep both cores of a small PC busy while the other
    part's frame is decoded, its rules run and its result is journaled (demo model, 2 cores: agent/raw
    ORT 0.65 -> 0.91). That only pays on a free-running line; a triggered part is alone in inference and
    would lose half its threads, so `auto` keeps 1 when no line runs free.

    >>> resolve_concurrent("auto", threads=2, free_running=True), resolve_concurrent("auto", 2, False)
    (2, 1)
    >>> resolve_concurrent("auto", threads=1, free_running=True), resolve_concurrent(3, 4, False)
    (1, 3)
    """
    if setting != "auto":
        return int(setting)
    return 2 if free_running and threads >= 2 else 1


class InferenceBudget:
    """A semaphore of `concurrent` permits entered around every ONNX Runtime call of every line."""

    def __init__(self, threads: int | None = None, concurrent: int = 1, models: int = 1) -> None:
        self.threads = threads or physical_cores()
        self.concurrent = max(1, min(concurrent, self.threads))
        self.models = models
        self.gate = threading.BoundedSemaphore(self.concurrent)

    @property
    def threads_per_model(self) -> int:
        return max(1, self.threads // self.concurrent)

    @property
    def spinning(self) -> bool:
        """Spin-waiting only pays when no other model waits for the cores."""
        return self.models <= self.concurrent

    def describe(self) -> str:
        return (
            f"{self.threads} inference threads, {self.concurrent} inference(s) at a time, "
            f"{self.threads_per_model} thread(s) each, shared by {self.models} line(s)"
        )

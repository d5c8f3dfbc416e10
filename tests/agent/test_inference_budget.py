"""One inference budget for the whole agent: every line's model runs inside the same gate, with its share of
the threads, so several lines on a small PC take turns on the cores instead of fighting for them."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import pytest
from agent_helpers import folder_line, wait_until, write_site

from edge_agent.inference_budget import InferenceBudget
from vision import Model


class _ConcurrencyProbe:
    """A real gate (a semaphore) that also records how many ORT calls ran at the same time."""

    def __init__(self, permits: int) -> None:
        self._sem = threading.Semaphore(permits)
        self._lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.calls = 0

    def __enter__(self) -> None:
        self._sem.acquire()
        with self._lock:
            self.inside += 1
            self.calls += 1
            self.most = max(self.most, self.inside)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.inside -= 1
        self._sem.release()


def test_models_sharing_a_gate_never_run_at_once(tiny_detect_onnx) -> None:
    probe = _ConcurrencyProbe(1)
    models = [Model(tiny_detect_onnx, threads=1, gate=probe, spinning=False) for _ in range(3)]
    frame = np.full((240, 320, 3), 90, np.uint8)

    def work(model: Model) -> None:
        for _ in range(15):
            model.predict(frame)

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert probe.calls == 45
    assert probe.most == 1


def test_budget_splits_threads_and_spins_only_without_competition() -> None:
    alone = InferenceBudget(threads=4, concurrent=1, models=1)
    assert (alone.threads_per_model, alone.spinning) == (4, True)
    shared = InferenceBudget(threads=4, concurrent=2, models=5)
    assert (shared.threads_per_model, shared.spinning) == (2, False)
    assert InferenceBudget(threads=2, concurrent=8).concurrent == 2  # never more at once than threads


def test_every_line_of_an_agent_uses_the_one_budget(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
) -> None:
    lines = [folder_line(name, synthetic_images, tiny_detect_onnx) for name in ("a", "b", "c")]
    for line in lines:
        del line["model"]["threads"]  # the budget decides
    site = write_site(tmp_path, lines, inference={"threads": 2, "concurrent": 1})
    agent = agent_factory(site)
    agent.start()
    wait_until(lambda: all(line.counts["inspected"] > 0 for line in agent.lines.values()))
    budget = agent.budget
    assert budget is not None and budget.describe().startswith("2 inference threads, 1 inference(s)")
    gates = {id(line._inspector.model.gate) for line in agent.lines.values()}
    assert gates == {id(budget.gate)}
    for line in agent.lines.values():
        assert line._inspector.model.session.get_session_options().intra_op_num_threads == 2


def test_two_parts_in_inference_at_once_keep_their_order(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
) -> None:
    """`inference.concurrent: 2`: two parts of a line in inference at once, journaled in the order taken."""
    line = folder_line("a", synthetic_images, tiny_detect_onnx)
    del line["model"]["threads"]
    site = write_site(tmp_path, [line], inference={"threads": 2, "concurrent": 2})
    agent = agent_factory(site)
    agent.start()
    runtime = agent.lines["a"]
    assert runtime._pool is not None
    assert runtime._inspector.model.session.get_session_options().intra_op_num_threads == 1
    expected = len(list(synthetic_images.glob("*.png")))
    wait_until(lambda: runtime.state == "stopped", timeout=60)
    by_seq = agent.journal.since(0, limit=expected + 5)
    assert len(by_seq) == expected
    assert [r.part_id for r in by_seq] == sorted(r.part_id for r in by_seq)
    sources = [r.frames[0].source_ref for r in by_seq]
    assert sources == sorted(sources)  # the folder is read in name order: so are the results


@pytest.mark.parametrize(
    ("trigger", "expected"), [("free_run", (2, 1)), ("triggered", (1, 2))], ids=["free-run", "triggered"]
)
def test_auto_concurrency_runs_two_parts_only_where_a_line_runs_free(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory, trigger, expected
) -> None:
    """The default `concurrent: auto` on 2 threads: a free-run line gets two parts in inference at one
    thread each; a triggered line's lone part keeps both threads."""
    line = folder_line("a", synthetic_images, tiny_detect_onnx)
    del line["model"]["threads"]
    line["trigger"] = {"type": trigger}
    site = write_site(tmp_path, [line], inference={"threads": 2})
    agent = agent_factory(site)
    agent.start()
    budget = agent.budget
    assert budget is not None
    runtime = agent.lines["a"]
    assert (budget.concurrent, budget.threads_per_model) == expected
    assert runtime._inspector.model.session.get_session_options().intra_op_num_threads == expected[1]


def test_a_worker_that_finishes_first_takes_the_next_part_and_results_stay_in_order() -> None:
    """`_settle`: with two parts in inference, the newer one finishing first frees its worker at once
    (no wait behind the older one), while results are still queued in the order the parts were taken."""
    import concurrent.futures

    from edge_agent.line import LineRuntime, _InFlight

    line = LineRuntime.__new__(LineRuntime)  # only the in-flight bookkeeping is exercised
    queued: list[str] = []
    line._workers = 2
    line._inflight = deque()
    line._finish = lambda part: queued.append(part.part_id)  # type: ignore[method-assign]
    older, newer = concurrent.futures.Future(), concurrent.futures.Future()
    line._inflight.extend(_InFlight(f, pid, "r", {}, None) for f, pid in ((older, "p1"), (newer, "p2")))

    threading.Timer(0.2, newer.set_result, args=(None,)).start()
    line._settle(1)  # returns once either part is done: the newer one
    assert newer.done() and not older.done()
    assert queued == [] and len(line._inflight) == 2  # p2 waits behind p1: order is kept

    threading.Timer(0.2, older.set_result, args=(None,)).start()
    line._settle(0)
    assert queued == ["p1", "p2"] and not line._inflight

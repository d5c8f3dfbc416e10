"""Triggered lines through the public `LineRuntime` API and through a real ZeroMQ trigger request:
one inspection per trigger, never dropped; recipe changeover; pause/resume; listeners."""

from __future__ import annotations

import json
import threading
import time

import pytest
import zmq
from agent_helpers import folder_line, wait_until, write_site

from contract.zmq_wire import decode
from edge_agent.line import LineError


def triggered_line(name, images, model, **trigger):
    line = folder_line(name, images, model, trigger={"type": "triggered", **trigger})
    line["cameras"][0]["source"]["mode"] = "loop"
    line["recipes"] = {"standard": {"min_confidence": 0.01}, "strict": {"min_confidence": 0.001}}
    return line


@pytest.mark.parametrize("concurrent", [1, 2], ids=["one-in-inference", "two-in-inference"])
def test_every_trigger_gets_exactly_one_journaled_result(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory, concurrent
):
    line_config = triggered_line("press", synthetic_images, tiny_detect_onnx)
    inference = {"threads": 2, "concurrent": concurrent}
    agent = agent_factory(write_site(tmp_path, [line_config], inference=inference))
    agent.start()
    line = agent.lines["press"]
    assert line.mode == "triggered" and line.recipes == ["standard", "strict"]
    assert line.active_recipe == "standard" and line.model_version

    futures = []
    lock = threading.Lock()

    def fire(worker: int) -> None:
        for i in range(10):
            f = line.trigger(f"P-{worker}-{i}", meas_id=f"M{worker}{i}", product_id="bracket", job_id="J7")
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=fire, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [f.result(timeout=30) for f in futures]
    assert len(results) == 30 and len({r.seq for r in results}) == 30
    assert sorted(r.part_id for r in results) == sorted(f"P-{w}-{i}" for w in range(3) for i in range(10))
    assert all(r.trigger == "triggered" and r.job_id == "J7" and r.product_id == "bracket" for r in results)
    # each future resolves to what the journal holds
    for r in results:
        assert agent.journal.get(r.seq).model_dump() == r.model_dump()
    assert agent.journal.count() == 30 and line.counts["triggers"] == 30
    # journaled in the order the triggers were taken, even with two parts in inference at once
    by_seq = sorted(results, key=lambda r: r.seq)
    for worker in range(3):
        mine = [r.part_id for r in by_seq if r.part_id.startswith(f"P-{worker}-")]
        assert mine == [f"P-{worker}-{i}" for i in range(10)]


def test_recipe_changeover_pause_resume_and_listeners(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    agent = agent_factory(write_site(tmp_path, [triggered_line("press", synthetic_images, tiny_detect_onnx)]))
    agent.start()
    line = agent.lines["press"]
    events: list[tuple[str, dict]] = []
    line.add_listener(lambda event, payload: events.append((event, payload)))

    line.set_recipe("strict")
    assert line.trigger("A").result(timeout=10).recipe == "strict"
    assert line.trigger("B", recipe="standard").result(timeout=10).recipe == "standard"
    assert ("recipe", {"recipe": "strict", "previous": "standard"}) in events
    with pytest.raises(KeyError, match="unknown recipe 'nope'; recipes: standard, strict"):
        line.set_recipe("nope")
    with pytest.raises(KeyError, match="unknown recipe"):
        line.trigger("C", recipe="nope")

    line.pause()
    assert line.state == "paused" and line.status()["state"] == "paused"
    paused = line.trigger("D")  # queued, not dropped
    assert not paused.done()
    line.resume()
    assert paused.result(timeout=10).part_id == "D"
    states = [p["state"] for e, p in events if e == "state"]
    assert states[-2:] == ["paused", "running"]


def test_trigger_without_a_frame_is_answered_ng_with_the_reason(tmp_path, tiny_detect_onnx, agent_factory):
    line = folder_line(
        "dark",
        tmp_path,
        tiny_detect_onnx,
        cameras=[{"name": "cam", "source": {"type": "camera", "device": str(tmp_path / "no-such-device")}}],
        trigger={"type": "triggered", "frame_timeout_s": 0.3},
    )
    agent = agent_factory(write_site(tmp_path, [line]))
    agent.start()
    runtime = agent.lines["dark"]
    result = runtime.trigger("P-1").result(timeout=10)
    assert result.verdict == "NG" and result.seq == 1 and result.part_id == "P-1"
    assert result.reasons == ["camera cam: no frame within 0.3 s (reconnecting)"]
    assert runtime.state == "degraded" and runtime.counts["trigger_failures"] == 1


def test_free_run_line_refuses_triggers(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory):
    agent = agent_factory(write_site(tmp_path, [folder_line("free", synthetic_images, tiny_detect_onnx)]))
    agent.start()
    with pytest.raises(LineError, match="runs free_run"):
        agent.lines["free"].trigger("X")


def start_press_with_zmq_trigger(tmp_path, model, images, agent_factory):
    """A started agent: triggered line "press" + a plain ZeroMQ publisher that accepts trigger requests."""
    publisher = {
        "type": "zmq",
        "pub_endpoint": "tcp://127.0.0.1:*",
        "router_endpoint": "tcp://127.0.0.1:*",
        "security": "plain",
        "allow_trigger": True,
    }
    agent = agent_factory(write_site(tmp_path, [triggered_line("press", images, model)], [publisher]))
    agent.start()
    return agent


def test_zeromq_trigger_request_runs_one_inspection(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    agent = start_press_with_zmq_trigger(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVTIMEO, 15_000)
    dealer.connect(agent.publishers[0].router_endpoint)
    try:
        request = {"op": "trigger", "line": "press", "part_id": "Z-1", "recipe": "strict", "req_id": 7}
        dealer.send(json.dumps(request).encode())
        result = decode(dealer.recv_multipart()).result()
        kind, reply = dealer.recv_multipart()
    finally:
        dealer.close(linger=0)
    assert kind == b"trigger_reply"
    reply = json.loads(reply)
    assert reply["ok"] and reply["req_id"] == 7 and reply["seq"] == result.seq == 1
    assert result.part_id == "Z-1" and result.recipe == "strict"
    assert agent.journal.get(1).part_id == "Z-1"
    wait_until(lambda: agent.lines["press"].counts["inspected"] == 1)


def test_cli_trigger_asks_the_running_agent(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory):
    from typer.testing import CliRunner

    from edge_agent.cli import app

    agent = start_press_with_zmq_trigger(tmp_path, tiny_detect_onnx, synthetic_images, agent_factory)
    endpoint = agent.publishers[0].router_endpoint
    runner = CliRunner()
    out = runner.invoke(app, ["trigger", "press", "--part-id", "CLI-1", "--endpoint", endpoint])
    assert out.exit_code == 0, out.output
    assert "CLI-1" in out.output and "[press]" in out.output
    assert agent.journal.get(1).part_id == "CLI-1"
    out = runner.invoke(app, ["trigger", "press", "--recipe", "nope", "--endpoint", endpoint])
    assert out.exit_code == 1 and "unknown recipe 'nope'" in out.output


def _paused_and_settled(agent, line) -> int:
    """Pause the line and wait until the parts it had taken are journaled; the last seq then."""
    line.pause()
    last = -1
    while True:
        time.sleep(0.5)
        now = agent.journal.last_seq()
        if now == last:
            return now
        last = now


def test_a_continuous_job_puts_its_ids_into_every_free_run_result(
    tmp_path, tiny_detect_onnx, synthetic_images, agent_factory
):
    """`resume(meas_id=, part_id=, product_id=, job_id=)` (OPC UA StartContinuous) on a free-run line."""
    line_config = folder_line("belt", synthetic_images, tiny_detect_onnx)
    line_config["cameras"][0]["source"]["mode"] = "loop"
    agent = agent_factory(write_site(tmp_path, [line_config]))
    agent.start()
    line = agent.lines["belt"]
    wait_until(lambda: line.counts["inspected"] >= 1)
    before = _paused_and_settled(agent, line)
    line.resume(meas_id="M-7", part_id="LOT-7", product_id="bracket", job_id="J-42")
    wait_until(lambda: agent.journal.last_seq() >= before + 4)
    mark = _paused_and_settled(agent, line)
    job = agent.journal.since(before)
    assert len(job) == mark - before >= 4
    assert [r.part_id for r in job] == [f"LOT-7-{i:06d}" for i in range(1, len(job) + 1)]
    assert all((r.meas_id, r.product_id, r.job_id) == ("M-7", "bracket", "J-42") for r in job)
    line.resume()  # a plain resume ends the job: generated part ids, no job ids
    wait_until(lambda: agent.journal.last_seq() >= mark + 3)
    later = agent.journal.since(mark)
    assert later and all(r.job_id is None and r.meas_id is None for r in later)
    assert not any(r.part_id.startswith("LOT-7") for r in later)

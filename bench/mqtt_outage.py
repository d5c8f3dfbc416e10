"""A long broker outage, checked by an independent subscriber: 0 results lost, 0 duplicated.

    .venv/bin/python bench/mqtt_outage.py                  # 2-minute outage at 20 results/s
    .venv/bin/python bench/mqtt_outage.py --outage-s 30 --rate 50

A Debian mosquitto (persistence on) is started on a free port; a subscriber with a persistent session
(the way a historian subscribes) records every plain result and every Sparkplug message. The mqtt
publisher is fed from a journal at `--rate` results/s throughout; after `--before-s` the broker is stopped
for `--outage-s` and started again; the run goes on for `--after-s`. Then the subscriber's record is
compared with the journal: every result once, in order, with its own timestamp, on the plain topic and as
Sparkplug DDATA (the backlog flagged historical), seq continuity and the bdSeq of each birth. The same
checks as tests/mqtt/test_mqtt_delivery.py, over minutes instead of seconds. Prints what it found.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "mqtt"))

from mqtt_support import (  # noqa: E402
    MOSQUITTO,
    Mosquitto,
    Recorder,
    check_seq_continuity,
    sparkplug_messages,
    wait_for,
)

from contract.result import InspectionResult, ModelInfo  # noqa: E402
from edge_agent.journal import ResultJournal  # noqa: E402
from edge_agent.publishers.base import PublisherContext  # noqa: E402
from edge_agent.publishers.mqtt_pub import MqttPublisher, MqttPublisherConfig  # noqa: E402

SITE = "plant-a"


def feed(journal: ResultJournal, publisher: MqttPublisher, rate: float, seconds: float, start: int) -> int:
    t0 = time.monotonic()
    n = start
    while (elapsed := time.monotonic() - t0) < seconds:
        while n - start < int(elapsed * rate):
            n += 1
            result = InspectionResult(
                site=SITE,
                line="press",
                part_id=f"P-{n:06d}",
                recipe="default",
                verdict="NG" if n % 9 == 0 else "OK",
                model=ModelInfo(name="m", version="1"),
            )
            publisher.notify(journal.append(result))
        time.sleep(0.005)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--outage-s", type=float, default=120.0)
    parser.add_argument("--before-s", type=float, default=10.0)
    parser.add_argument("--after-s", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="results per second")
    args = parser.parse_args()
    if MOSQUITTO is None:
        sys.exit("mosquitto is not installed (Debian: apt-get install mosquitto)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "broker").start()
        recorder = Recorder(broker.port, [f"edge-inspect/{SITE}/+/result", "spBv1.0/#"]).start()
        journal = ResultJournal(folder / "journal.sqlite")
        config = MqttPublisherConfig(port=broker.port, reconnect_initial_s=0.5, reconnect_max_s=5.0)
        publisher = MqttPublisher(
            config, PublisherContext(site=SITE, boot_id=uuid.uuid4().hex, journal=journal)
        )
        publisher.start(journal)
        try:
            wait_for(lambda: all(s.online for s in publisher.sessions), 10, "the publisher's connections")
            n = feed(journal, publisher, args.rate, args.before_s, 0)
            acked_at_stop = min(s.cursor for s in publisher.sessions)
            broker.stop()
            t_stop = time.monotonic()
            print(f"broker stopped after {n} results ({acked_at_stop} acknowledged)", flush=True)
            n = feed(journal, publisher, args.rate, args.outage_s, n)
            during_cursor = min(s.cursor for s in publisher.sessions)
            broker.start()
            print(
                f"broker back after {time.monotonic() - t_stop:.0f} s; {n} results journaled, cursor "
                f"{during_cursor} while it was away",
                flush=True,
            )
            t_back = time.monotonic()
            wait_for(lambda: min(s.cursor for s in publisher.sessions) >= n, 120, "the backlog delivered")
            print(
                f"backlog of {n - during_cursor} delivered {time.monotonic() - t_back:.1f} s after the broker"
                " came back",
                flush=True,
            )
            n = feed(journal, publisher, args.rate, args.after_s, n)
            wait_for(lambda: min(s.cursor for s in publisher.sessions) >= n, 60, "the last results")
            wait_for(
                lambda: len(recorder.snapshot(f"edge-inspect/{SITE}/press/result")) >= n, 60, "the recorder"
            )
            time.sleep(1.0)  # duplicates, if any, would arrive now
        finally:
            publisher.stop()
            recorder.stop()
            broker.stop()
        journaled = list(journal.iter_since(0))
        journal.close()

    ids = [r.result_id for r in journaled]
    plain = [json.loads(m.payload) for m in recorder.snapshot(f"edge-inspect/{SITE}/press/result")]
    plain_ids = [b["result_id"] for b in plain]
    messages = sparkplug_messages(recorder, "edge-inspect")
    wraps = check_seq_continuity(messages)
    data = [p.by_name() for k, _d, p, _r in messages if k == "DDATA" and "Result/Result ID" in p.by_name()]
    sp_ids = [d["Result/Result ID"].value for d in data]
    historical = sum(d["Result/Result ID"].is_historical for d in data)
    births = [p.by_name()["bdSeq"].value for k, _d, p, _r in messages if k == "NBIRTH"]
    same_time = all(
        InspectionResult.model_validate(b).timestamp == r.timestamp
        for b, r in zip(plain, journaled, strict=False)
    )
    print(
        f"journaled {len(ids)}; plain: received {len(plain_ids)}, lost {len(set(ids) - set(plain_ids))}, "
        f"duplicated {len(plain_ids) - len(set(plain_ids))}, in journal order {plain_ids == ids}, "
        f"original timestamps {same_time}"
    )
    print(
        f"sparkplug: DDATA {len(sp_ids)}, lost {len(set(ids) - set(sp_ids))}, duplicated "
        f"{len(sp_ids) - len(set(sp_ids))}, in order {sp_ids == ids}, historical {historical}, "
        f"NBIRTH bdSeq {births}, seq continuous (wraps {wraps})"
    )


if __name__ == "__main__":
    main()

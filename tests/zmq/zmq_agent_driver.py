"""A separate agent process for the crash tests: journals results and runs the real ZeroMQ publishers.

Usage: python tests/zmq/zmq_agent_driver.py JOURNAL --mes tcp://127.0.0.1:PORT --count N [--pub-port P]

It appends results one by one (journal commit, then notify() of every publisher, as the daemon does),
printing `seq <n>` after each, then waits for the MES delivery backlog to drain and prints `drained`.
The crash test kills it with SIGKILL in the middle and starts it again on the same journal.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, when run as a script

from contract.result import InspectionResult, ModelInfo
from edge_agent.journal import ResultJournal
from edge_agent.publishers.base import PublisherContext
from edge_agent.publishers.mes_delivery import MesDeliveryConfig, MesDeliveryPublisher
from edge_agent.publishers.zmq_pub import ZmqPublisher, ZmqPublisherConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("journal", type=Path)
    parser.add_argument("--mes", required=True)
    parser.add_argument("--count", type=int, required=True, help="total results the journal must hold")
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between results")
    parser.add_argument("--pub-port", type=int, default=0)
    args = parser.parse_args()

    journal = ResultJournal(args.journal)
    context = PublisherContext(site="plant-a", boot_id=uuid.uuid4().hex, journal=journal)
    port = args.pub_port or "*"
    publishers = [
        ZmqPublisher(ZmqPublisherConfig(pub_endpoint=f"tcp://127.0.0.1:{port}", router_endpoint=None,
                                        security="plain"), context),
        MesDeliveryPublisher(MesDeliveryConfig(endpoint=args.mes, security="plain", window=32,
                                               resend_initial_s=0.2, resend_max_s=1.0), context),
    ]
    for publisher in publishers:
        publisher.start(journal)
    print(f"started boot={context.boot_id} journal_last_seq={journal.last_seq()}", flush=True)

    while journal.last_seq() < args.count:
        n = journal.last_seq() + 1
        result = journal.append(InspectionResult(
            site="plant-a", line=f"line-{n % 2 + 1}", part_id=f"P-{n:06d}", recipe="default",
            verdict="NG" if n % 7 == 0 else "OK", model=ModelInfo(name="tiny", version="1")))
        for publisher in publishers:
            publisher.notify(result)
        print(f"seq {result.seq}", flush=True)
        time.sleep(args.interval)

    mes = publishers[1]
    while mes.stats()["backlog"] > 0:
        time.sleep(0.05)
    print("drained", flush=True)
    for publisher in publishers:
        publisher.stop()
    journal.close()


if __name__ == "__main__":
    main()

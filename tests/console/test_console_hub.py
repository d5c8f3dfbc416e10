"""The console's live side without a web server: shift boundaries, seeding from an existing journal
(a restarted agent keeps this shift's counts), the hook, review rates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
from console_helpers import result

from edge_agent.console.live import ConsoleHub, shift_start
from edge_agent.journal import ResultJournal


def test_shift_start_wraps_midnight() -> None:
    starts = ["06:00", "14:00", "22:00"]
    assert shift_start(datetime(2026, 12, 2, 15, 30), starts) == datetime(2026, 12, 2, 14, 0)
    assert shift_start(datetime(2026, 12, 2, 3, 0), starts) == datetime(2026, 12, 1, 22, 0)
    assert shift_start(datetime(2026, 12, 2, 6, 0), starts) == datetime(2026, 12, 2, 6, 0)


def test_hub_seeds_from_the_journal_then_counts_offers(tmp_path) -> None:
    path = tmp_path / "j.sqlite"
    journal = ResultJournal(path)
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=2)  # before this shift: in the totals, not in the shift
    stored = journal.append_many(
        [
            result("a", "NG", ["pit"], old),
            result("a", "OK", [], now),
            result("a", "NG", ["pit", "stain"], now),
            result("b", "NG", ["crack"], now),
        ]
    )
    journal.add_review(stored[2].seq, "false_reject", [], "qa")
    hub = ConsoleHub(path, ["a", "b"], ["00:00"])
    hub.seed()
    a = hub.lines["a"].shift.to_dict()
    assert (a["parts"], a["ok"], a["ng"]) == (2, 1, 1)
    assert a["ng_by_class"] == {"pit": 1, "stain": 1}
    assert hub.lines["a"].totals == {"NG": 2, "OK": 1}
    assert [r["seq"] for r in hub.lines["a"].recent] == [stored[2].seq, stored[1].seq, stored[0].seq]
    assert hub.review_rates("a")["false_reject_rate"] == 1.0
    assert hub.lines["b"].shift.ng_by_class == {"crack": 1}

    # the hook after start: counted on top of the seed, frames kept for browsers, nothing encoded yet
    live = journal.append(result("a", "NG", ["scratch"], datetime.now(timezone.utc)))
    hub.offer("a", live, {"top": np.zeros((48, 64, 3), np.uint8)})
    assert hub.lines["a"].shift.ng == 2 and hub.lines["a"].shift.ng_by_class["scratch"] == 1
    assert hub.lines["a"].recent[0]["seq"] == live.seq
    assert hub.frames_encoded == 0
    seq, jpeg = hub.frame_jpeg("a", "top", live.seq, 80)
    assert seq == live.seq and jpeg[:2] == b"\xff\xd8"
    hub.frame_jpeg("a", "top", live.seq, 80)
    assert hub.frames_encoded == 1
    assert hub.frame_jpeg("a", "side", None, 80) is None
    journal.close()

"""Issue 28, the line console over real HTTP against a real agent (demo line, demo model): reviews that
cannot contradict their boxes (and exporters that refuse the ones stored before), the review queue, the
what-if against the running rules, the gallery thumbnail of a reviewed part, the model page at the card's
operating point, and the camera's error while it is being reconnected."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
import zipfile
from io import BytesIO

import cv2
import httpx
import numpy as np
import pytest
import yaml
from console_helpers import REPO, add_line, demo_site, wait_until
from typer.testing import CliRunner

from edge_agent.cli import app


def client(agent) -> httpx.Client:
    return httpx.Client(base_url=agent.console.url, timeout=30, follow_redirects=False)


def csrf_headers(c: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": re.search(r'name="csrf-token" content="([^"]*)"', c.get("/").text).group(1)}


def newest(agent, verdict: str, counted: int = 1):
    def find():
        for r in agent.journal.query(verdict=verdict, newest_first=True, limit=50):
            if sum(d.counts_for_verdict for d in r.defects) >= counted and agent.console.archive.has_images(
                r
            ):
                return r
        return None

    return wait_until(find, timeout=60)


def box_of(d) -> dict:
    return {"camera": d.camera, "class": d.class_name, "class_id": d.class_id, "xyxy": d.xyxy}


def test_reviews_that_contradict_their_boxes_are_refused(console_agent) -> None:
    agent = console_agent()
    ng, ok = newest(agent, "NG"), newest(agent, "OK", counted=0)
    model_boxes = [box_of(d) for d in ng.defects if d.counts_for_verdict]
    with client(agent) as c:
        h = csrf_headers(c)

        def review(seq, **body):
            return c.post(f"/api/results/{seq}/review", json=body, headers=h)

        kept = review(ng.seq, decision="false_reject", boxes=model_boxes)
        assert kept.status_code == 400 and "cannot keep" in kept.json()["error"]
        empty_escape = review(ok.seq, decision="escape", boxes=[])
        assert empty_escape.status_code == 400 and "not localised" in empty_escape.json()["error"]
        empty_ng = review(ng.seq, decision="confirmed_ng", boxes=[])
        assert empty_ng.status_code == 400 and "draw a box" in empty_ng.json()["error"]
        both = review(ok.seq, decision="escape", boxes=model_boxes[:1] or [], not_localised=True)
        assert both.status_code == 400
        assert agent.journal.current_review(ng.seq) is None and agent.journal.current_review(ok.seq) is None

        good = review(ng.seq, decision="false_reject", boxes=[])
        assert good.status_code == 200 and good.json()["boxes"] == [] and not good.json()["not_localised"]
        vague = review(ok.seq, decision="escape", boxes=[], not_localised=True, comment="a dent, no edge")
        assert vague.status_code == 200 and vague.json()["not_localised"] is True
        assert agent.journal.current_review(ok.seq)["not_localised"] is True
        page = c.get(f"/results/{ok.seq}").text
        assert "not localised" in page


def test_exporters_refuse_contradictory_reviews_stored_before(console_agent, tmp_path) -> None:
    """Reviews written before the console refused them (straight into the journal, as an old console
    did) never become labels: `dataset from-reviews` and the hub's `collect` say which and why."""
    agent = console_agent()
    ngs = wait_until(
        lambda: (
            [
                r
                for r in agent.journal.query(verdict="NG", newest_first=True, limit=40)
                if agent.console.archive.has_images(r) and any(d.counts_for_verdict for d in r.defects)
            ][:3]
            if agent.journal.last_seq() >= 12
            else None
        ),
        timeout=60,
    )
    assert len(ngs) == 3
    ok = newest(agent, "OK", counted=0)
    kept_boxes, no_box, fine = ngs
    path = agent.config.site.journal.path
    with sqlite3.connect(path, timeout=30) as db:  # what an older console stored without asking
        for r, decision, boxes in (
            (kept_boxes, "false_reject", [box_of(d) for d in kept_boxes.defects if d.counts_for_verdict]),
            (no_box, "confirmed_ng", []),
            (ok, "escape", []),
        ):
            db.execute(
                "INSERT INTO reviews(result_seq, result_id, line, verdict, decision, boxes, changes, comment,"
                " reviewer, ts) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    r.seq,
                    r.result_id,
                    r.line,
                    r.verdict,
                    decision,
                    json.dumps(boxes),
                    "{}",
                    "",
                    "old",
                    time.time(),
                ),
            )
    agent.journal.add_review(
        fine.seq, "confirmed_ng", [box_of(d) for d in fine.defects if d.counts_for_verdict], "qa"
    )
    out = tmp_path / "ds"
    archive = agent.config.site.archive.path
    done = CliRunner().invoke(
        app, ["dataset", "from-reviews", str(out), "--journal", str(path), "--archive", str(archive)]
    )
    assert done.exit_code == 0, done.output
    assert f"refused #{kept_boxes.seq} (false_reject)" in done.output and "cannot keep" in done.output
    assert f"refused #{no_box.seq} (confirmed_ng)" in done.output
    assert f"refused #{ok.seq} (escape)" in done.output
    assert "3 contradictory review(s) refused" in done.output
    labels = sorted(p.name for p in (out / "labels").iterdir())
    assert labels == [f"demo_{fine.seq:010d}_top.txt"]

    from edge_agent.hub_collect import collect_zip

    with zipfile.ZipFile(BytesIO(collect_zip(agent, {"selection": ["reviewed"]}))) as z:
        items = [json.loads(x) for x in z.read("items.jsonl").decode().splitlines()]
        missing = [json.loads(x) for x in z.read("missing.jsonl").decode().splitlines()]
    assert [i["seq"] for i in items] == [fine.seq]
    refused = {m["seq"]: m["why"] for m in missing}
    assert set(refused) == {kept_boxes.seq, no_box.seq, ok.seq}
    assert all(why.startswith("refused:") for why in refused.values())

    # an escape marked not localised is kept in the journal, and left out of detection data
    agent.journal.add_review(ok.seq, "escape", [], "qa", not_localised=True)
    again = CliRunner().invoke(
        app,
        [
            "dataset",
            "from-reviews",
            str(out),
            "--overwrite",
            "--journal",
            str(path),
            "--archive",
            str(archive),
        ],
    )
    assert f"left out #{ok.seq} (escape): escape (NG part judged OK), not localised" in again.output


def test_gallery_thumbnail_shows_the_reviewed_boxes(console_agent) -> None:
    agent = console_agent()
    ng = newest(agent, "NG")
    raw_path = agent.console.archive.image(ng, "top", False)
    raw = cv2.imread(str(raw_path))
    with client(agent) as c:

        def thumb():
            r = c.get(f"/results/{ng.seq}/thumb/top")
            assert r.status_code == 200
            return cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)

        def boxed_area_difference(picture) -> float:
            """Largest mean difference from the raw image in any 16x16 block below the banner."""
            small = cv2.resize(raw, (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_AREA)
            diff = np.abs(picture.astype(int) - small.astype(int)).mean(axis=2)[picture.shape[0] // 6 :]
            h, w = diff.shape[0] // 16 * 16, diff.shape[1] // 16 * 16
            return float(diff[:h, :w].reshape(h // 16, 16, w // 16, 16).mean(axis=(1, 3)).max())

        assert boxed_area_difference(thumb()) > 20  # the model's boxes are drawn
        assert (
            c.post(
                f"/api/results/{ng.seq}/review",
                json={"decision": "false_reject", "boxes": []},
                headers=csrf_headers(c),
            ).status_code
            == 200
        )
        assert boxed_area_difference(thumb()) < 12  # reviewed as good: no box drawn any more
        css = c.get("/static/console.css").text
        assert ".tile img { object-fit: contain; }" in css  # a square part is never cropped


def test_review_queue_of_uncertain_parts_and_next_unreviewed(console_agent) -> None:
    agent = console_agent()
    wait_until(lambda: agent.journal.last_seq() >= 12, timeout=60)
    lo, hi = agent.console.config.uncertain_band
    with client(agent) as c:
        page = c.get("/results?reviewed=uncertain&limit=100").text
        seqs = [int(s) for s in re.findall(r'data-seq="(\d+)"', page)]
        assert seqs, "the demo images have detections between 0.25 and 0.6"
        for seq in seqs:
            r = agent.journal.get(seq)
            assert any(lo <= d.confidence <= hi for d in r.defects), seq
        first = c.get("/results/next?queue=uncertain")
        assert first.status_code == 303 and first.headers["location"] == f"/results/{seqs[0]}?queue=uncertain"
        seq = agent.journal.last_seq()
        nxt = c.get(f"/results/next?queue=none&line=demo&after={seq}")
        assert nxt.headers["location"] == f"/results/{seq - 1}?queue=none"
        r = agent.journal.get(seq - 1)
        decision = "confirmed_ok" if r.verdict == "OK" else "false_reject"
        c.post(
            f"/api/results/{seq - 1}/review",
            json={"decision": decision, "boxes": []},
            headers=csrf_headers(c),
        )
        assert c.get(f"/results/next?queue=none&line=demo&after={seq}").headers["location"] == (
            f"/results/{seq - 2}?queue=none"
        )  # the reviewed one is skipped
        done = c.get("/results/next?queue=none&after=1")
        assert done.headers["location"] == "/results?reviewed=none"  # nothing older: back to the gallery
        assert c.get("/results/next?queue=bogus").status_code == 400


def test_what_if_without_a_change_after_a_save_reports_no_change(console_agent) -> None:
    """The baseline is re-judged with the running rules: results journaled under the older rules do not
    show up as changes when nothing is changed."""
    agent = console_agent()
    # enough parts journaled with their frames (the what-if judges those) and at least one NG among them
    wait_until(
        lambda: sum(1 for r in agent.journal.query(limit=50) if r.frames) >= 6
        and agent.journal.query(verdict="NG", limit=1),
        timeout=60,
    )
    tiny = [[0, 0], [3, 0], [3, 3]]  # an ROI no defect centre lies in: every part turns OK
    roi_in_a_corner = {"recipe": "standard", "camera_roi": {"top": {"include": [tiny]}}}
    with client(agent) as c:
        h = csrf_headers(c)
        preview = c.post("/api/setup/demo/preview", json={"setup": roi_in_a_corner}, headers=h).json()
        body = {"setup": roi_in_a_corner, "base_sha": preview["base_sha"]}
        saved = c.post("/api/setup/demo/save", json=body, headers=h)
        assert saved.status_code == 200 and saved.json()["reload"]["ok"], saved.text
        assert preview["whatif"]["ng_to_ok"] >= 1  # the older NG parts
        after = c.post("/api/setup/demo/preview", json={"setup": roi_in_a_corner}, headers=h).json()
        assert after["diff"] == ""
        w = after["whatif"]
        assert w["judged"] >= 5 and w["ng_to_ok"] == 0 and w["ok_to_ng"] == 0, w["summary"]


def test_model_page_shows_the_operating_point_and_the_cards_split(tmp_path) -> None:
    from edge_agent.agent import Agent
    from edge_agent.config import load_agent_config

    models = tmp_path / "models" / "demo"
    shutil.copytree(REPO / "models" / "demo", models)
    card = json.loads((models / "model.json").read_text())
    for m in card["metrics"].values():
        m["split"] = "test"
        m["operating_point"]["split"] = "test"
    (models / "model.json").write_text(json.dumps(card))
    site = demo_site(tmp_path / "site")
    line = site.parent / "lines" / "demo.yaml"
    line.write_text(line.read_text().replace(str(REPO / "models"), str(tmp_path / "models")))
    agent = Agent(load_agent_config(site))
    agent.start()
    try:
        html = httpx.get(agent.console.url + "/model/demo", timeout=30).text
    finally:
        agent.stop()
    fp32 = card["metrics"]["fp32"]
    assert 'on the <span class="split">test</span> split' in html and "on val" not in html
    op_escape = f"{fp32['operating_point']['escape_rate'] * 100:.2f} %"
    assert f'<span class="v" data-f="op-escape">{op_escape}</span>' in html
    assert "escape rate at the operating point" in html
    assert "pit ≥ 0.491" in html  # the card's per-class thresholds are named


def test_last_error_is_shown_while_a_camera_reconnects(tmp_path) -> None:
    from edge_agent.agent import Agent
    from edge_agent.config import load_agent_config

    site = demo_site(tmp_path)
    add_line(site, "lost", tmp_path / "unplugged")
    agent = Agent(load_agent_config(site))
    agent.start()
    try:
        lost = wait_until(
            lambda: (
                (o := httpx.get(agent.console.url + "/api/overview", timeout=30).json()["lines"]["lost"])[
                    "last_error"
                ]
                and o
            ),
            timeout=30,
        )
        assert lost["cameras"][0]["state"] == "reconnecting"
        assert (
            "camera top reconnecting" in lost["last_error"]
            and "unplugged is not a folder" in lost["last_error"]
        )
        page = httpx.get(agent.console.url + "/", timeout=30).text
        assert "unplugged is not a folder" in page
    finally:
        agent.stop()
    assert yaml  # the site file was written with it


@pytest.mark.parametrize("rate", [0.25, 0.01])
def test_ok_parts_are_sampled_into_the_archive_evenly(tmp_path, rate) -> None:
    from edge_agent.archive import Archive
    from edge_agent.config import ArchiveConfig

    archive = Archive(ArchiveConfig(path=tmp_path / "a", ok_sample_rate=rate), seed=3)
    picks = [archive.wants("OK") for _ in range(400)]
    assert sum(picks) == round(400 * rate)  # no long gaps, no bursts: one in every 1/rate
    gaps = np.diff(np.flatnonzero(picks))
    assert len(gaps) == 0 or (gaps.min() >= round(1 / rate) - 1 and gaps.max() <= round(1 / rate) + 1)
    assert all(archive.wants("NG") for _ in range(10))


def test_only_the_line_control_role_stops_starts_and_hands_over(console_agent) -> None:
    from contract.passwords import hash_password

    users = [
        {"name": "vera", "role": "viewer", "password_hash": hash_password("viewer-pass")},
        {"name": "otto", "role": "operator", "password_hash": hash_password("operator-pass")},
    ]
    agent = console_agent(console={"auth": "login", "users": users})
    for user, password, allowed in (("vera", "viewer-pass", False), ("otto", "operator-pass", True)):
        with client(agent) as c:
            c.post("/login", data={"user": user, "password": password, "next": "/"})
            page = c.get("/operator").text
            assert ("line-toggle" in page) is allowed and ("handover" in page) is allowed
            h = csrf_headers(c)
            stop = c.post("/api/lines/demo/control", json={"action": "stop"}, headers=h)
            handover = c.post("/api/lines/demo/shift/handover", json={}, headers=h)
            if not allowed:
                assert stop.status_code == handover.status_code == 403
                assert "operator role" in stop.json()["error"]
                assert agent.lines["demo"].state == "running"
                continue
            assert stop.status_code == 200 and stop.json()["state"] == "paused"
            assert handover.status_code == 200 and handover.json()["handed_over"]["parts"] >= 1
            assert c.post("/api/lines/demo/control", json={"action": "jump"}, headers=h).status_code == 400
            start = c.post("/api/lines/demo/control", json={"action": "start"}, headers=h)
            assert start.status_code == 200 and start.json()["state"] == "running"
    audit = [(e["user"], e["action"]) for e in agent.journal.audit_log(target="demo")]
    assert (
        ("otto", "line.stop") in audit
        and ("otto", "shift.handover") in audit
        and ("otto", "line.start") in audit
    )
    assert not [a for u, a in audit if u == "vera" and a.startswith(("line.", "shift."))]

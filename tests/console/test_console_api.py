"""The console over real HTTP against a real agent running the demo line (demo model, images/):
pages, live data, frames only while watched, reviews, setup, and the security rules."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time

import cv2
import httpx
import numpy as np
import pytest
from console_helpers import REPO, wait_until
from pydantic import ValidationError

PAGES = ["/", "/lines/demo", "/results", "/results?verdict=NG&class=pit", "/setup/demo", "/model/demo"]


def client(agent, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=agent.console.url, timeout=30, follow_redirects=False, **kwargs)


def csrf_of(page_html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]*)"', page_html).group(1)


def an_ng_seq(agent) -> int:
    ng = wait_until(lambda: agent.journal.query(verdict="NG", newest_first=True, limit=1), timeout=60)
    return ng[0].seq


def test_pages_live_data_and_frames_only_while_watched(console_agent) -> None:
    agent = console_agent()
    with client(agent) as c:
        wait_until(lambda: agent.journal.last_seq() >= 6, timeout=60)
        assert agent.console.hub.frames_encoded == 0, "nobody watched: no frame may have been encoded"
        for page in [*PAGES, f"/results/{an_ng_seq(agent)}"]:
            r = c.get(page)
            assert r.status_code == 200, (page, r.text[:300])
            assert "No login" in r.text  # auth: none says so on every page
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
        overview = c.get("/api/overview").json()
        line = overview["lines"]["demo"]
        assert line["state"] == "running" and line["model"]["name"] == "demo"
        assert line["shift"]["parts"] >= 6 and line["shift"]["ng"] >= 1
        assert line["shift"]["ng_by_class"], "NG parts of the demo images have classes"
        assert line["recent"][0]["seq"] >= line["recent"][-1]["seq"]

        # live events: a result event per new result, overview about once a second
        events, seqs = [], set()
        with c.stream("GET", "/api/events?line=demo") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            t0 = time.monotonic()
            for raw in stream.iter_lines():
                if raw.startswith("event: "):
                    events.append(raw[7:])
                    assert agent.console.hub.watchers == 1  # counted while the stream runs
                elif raw.startswith("data: ") and events[-1] == "result":
                    seqs.add(json.loads(raw[6:])["seq"])
                if (len(seqs) >= 3 and "overview" in events) or time.monotonic() - t0 > 20:
                    break
        assert len(seqs) >= 3 and "overview" in events
        # the frame of a result we were told about, as JPEG, once however often it is asked for
        seq = max(seqs)
        first = c.get(f"/api/lines/demo/frame/top.jpg?seq={seq}")
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(first.content, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[2] == 3
        served = int(first.headers["x-result-seq"])
        encoded = agent.console.hub.frames_encoded
        again = c.get(f"/api/lines/demo/frame/top.jpg?seq={served}")
        assert again.content == first.content or int(again.headers["x-result-seq"]) != served
        if int(again.headers["x-result-seq"]) == served:
            assert agent.console.hub.frames_encoded == encoded, "a kept frame is encoded once"


def test_result_detail_downloads_and_gallery(console_agent) -> None:
    agent = console_agent()
    seq = an_ng_seq(agent)
    wait_until(lambda: agent.archive.stats.written >= 2, timeout=30)
    with client(agent) as c:
        detail = c.get(f"/results/{seq}")
        assert detail.status_code == 200 and "Why" in detail.text
        body = c.get(f"/results/{seq}.json")
        assert body.headers["content-disposition"].startswith("attachment")
        assert json.loads(body.text)["seq"] == seq
        wait_until(lambda: c.get(f"/results/{seq}/image/top").status_code == 200, timeout=20)
        image = c.get(f"/results/{seq}/image/top?download=1")
        assert image.headers["content-disposition"].startswith("attachment")
        raw = cv2.imdecode(np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR)
        assert raw is not None
        assert not list(agent.archive.root.rglob("*_annotated*"))  # the demo site writes no annotated copies
        drawn = c.get(f"/results/{seq}/image/top?annotated=1&download=1")  # so this one is drawn now
        assert drawn.status_code == 200 and "_annotated.jpg" in drawn.headers["content-disposition"]
        picture = cv2.imdecode(np.frombuffer(drawn.content, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == raw.shape and np.abs(picture.astype(int) - raw).mean() > 1  # boxes, banner
        thumb = c.get(f"/results/{seq}/thumb/top")
        assert cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR).shape[1] <= 320
        gallery = c.get("/results?verdict=NG&line=demo")
        assert f'href="/results/{seq}"' in gallery.text or "Older results" in gallery.text
        ok_only = c.get("/results?verdict=OK")
        assert "verdict-NG" not in ok_only.text
        assert c.get("/results/999999").status_code == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"decision": "escape", "boxes": []}, "judged NG"),
        ({"decision": "maybe", "boxes": []}, "decision"),
        (
            {
                "decision": "false_reject",
                "boxes": [{"camera": "top", "class": "pit", "class_id": 1, "xyxy": [5, 5, 99999, 20]}],
            },
            "leaves",
        ),
        (
            {
                "decision": "false_reject",
                "boxes": [{"camera": "side", "class": "pit", "class_id": 1, "xyxy": [5, 5, 9, 20]}],
            },
            "no camera",
        ),
        (
            {
                "decision": "false_reject",
                "boxes": [{"camera": "top", "class": "pit", "class_id": 0, "xyxy": [5, 5, 9, 20]}],
            },
            "class 0",
        ),
        (
            {
                "decision": "false_reject",
                "boxes": [{"camera": "top", "class": "pit", "class_id": 1, "xyxy": [9, 5, 5, 20]}],
            },
            "x1 < x2",
        ),
        ({"decision": "confirmed_ng", "extra": 1}, "extra"),
    ],
)
def test_bad_review_gets_a_clear_message_and_changes_nothing(console_agent, body, fragment) -> None:
    agent = console_agent()
    seq = an_ng_seq(agent)
    with client(agent) as c:
        token = csrf_of(c.get("/").text)
        r = c.post(f"/api/results/{seq}/review", json=body, headers={"X-CSRF-Token": token})
        assert r.status_code == 400, r.text
        assert fragment in json.dumps(r.json()), r.json()
        bad_json = c.post(f"/api/results/{seq}/review", content=b"{nope", headers={"X-CSRF-Token": token})
        assert bad_json.status_code == 400 and "not JSON" in bad_json.json()["error"]
    assert agent.journal.review_history(seq) == []


def test_review_is_audited_counted_and_becomes_a_dataset(console_agent, tmp_path) -> None:
    agent = console_agent(metrics=True)
    seq = an_ng_seq(agent)
    result = agent.journal.get(seq)
    wait_until(lambda: agent.console.archive.image(result, "top", False), timeout=20)
    with client(agent) as c:
        token = csrf_of(c.get("/").text)
        refused = c.post(f"/api/results/{seq}/review", json={"decision": "false_reject", "boxes": []})
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
        assert agent.journal.review_history(seq) == []
        drawn = {"camera": "top", "class": "crack", "class_id": 2, "xyxy": [10, 20, 60, 40]}
        first = c.post(
            f"/api/results/{seq}/review",
            json={"decision": "confirmed_ng", "boxes": [drawn], "comment": "missed crack"},
            headers={"X-CSRF-Token": token},
        )
        assert first.status_code == 200, first.text
        second = c.post(
            f"/api/results/{seq}/review",
            json={"decision": "false_reject", "boxes": []},
            headers={"X-CSRF-Token": token},
        )
        assert second.status_code == 200
        rates = c.get("/api/overview").json()["lines"]["demo"]["reviews"]
    history = agent.journal.review_history(seq)
    assert [h["decision"] for h in history] == ["confirmed_ng", "false_reject"]
    assert history[0]["reviewer"] == "local" and history[0]["changes"]["added"][0]["xyxy"] == drawn["xyxy"]
    assert history[1]["changes"]["decision"] == ["confirmed_ng", "false_reject"]
    assert history[1]["changes"]["removed"] == [drawn]
    assert agent.journal.reviews_since(0)[-1]["id"] == history[1]["id"]
    assert rates["counts"] == {"confirmed_ng": 0, "false_reject": 1}
    assert rates["false_reject_rate"] == 1.0
    prometheus = httpx.get(agent.metrics_server.url + "/metrics").text
    assert 'edge_inspect_false_reject_rate{line="demo"} 1.0' in prometheus
    assert 'edge_inspect_reviewed_results{decision="false_reject",line="demo"} 1.0' in prometheus

    # and the data loop: the reviewed image with its corrected (here: empty) labels
    out = tmp_path / "reviewed"
    site = agent.config.site
    cmd = [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "dataset",
        "from-reviews",
        str(out),
        "--journal",
        str(site.journal.path),
        "--archive",
        str(site.archive.path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    labels = list((out / "labels").glob("*.txt"))
    assert len(labels) == 1 and labels[0].read_text() == ""  # a false reject: a good part, no boxes
    assert (out / "images" / (labels[0].stem + ".jpg")).is_file()
    manifest = [json.loads(x) for x in (out / "reviews.jsonl").read_text().splitlines()]
    assert manifest[0]["seq"] == seq and manifest[0]["decision"] == "false_reject"


def test_a_reviewed_part_is_captured_for_labelling(console_agent) -> None:
    """With `capture:` on, a review made on the console also puts the part (raw images from the NG archive,
    the model's boxes as pre-annotations) into the capture archive that `dataset from-archive` reads."""
    agent = console_agent(capture={"enabled": True, "band": [0.99, 1.0]})  # nothing is "uncertain" here
    seq = an_ng_seq(agent)
    result = agent.journal.get(seq)
    wait_until(lambda: agent.console.archive.image(result, "top", False), timeout=20)
    root = agent.config.site.capture.path
    assert not list(root.rglob("*.capture.json"))
    with client(agent) as c:
        token = csrf_of(c.get("/").text)
        r = c.post(
            f"/api/results/{seq}/review",
            json={"decision": "false_reject", "boxes": [], "comment": "glare"},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 200, r.text
    sidecars = wait_until(lambda: list(root.rglob(f"{seq:010d}_*.capture.json")), timeout=20)
    sidecar = json.loads(sidecars[0].read_text())
    assert sidecar["reason"] == "review" and sidecar["note"] == "false_reject: glare"
    assert sidecar["seq"] == seq and (sidecars[0].parent / sidecar["cameras"]["top"]["file"]).is_file()


def test_no_login_answers_only_to_localhost_hosts(console_agent) -> None:
    agent = console_agent()
    with client(agent) as c:
        r = c.get("/", headers={"Host": "evil.example:8080"})
        assert r.status_code == 421
        assert c.get("/", headers={"Host": f"localhost:{agent.console.port}"}).status_code == 200


def test_console_config_refuses_unsafe_settings() -> None:
    from edge_agent.console.settings import ConsoleConfig

    with pytest.raises(ValidationError, match="only allowed on localhost"):
        ConsoleConfig(enabled=True, host="0.0.0.0", auth="none")
    with pytest.raises(ValidationError, match="at least one entry in `users`"):
        ConsoleConfig(enabled=True, auth="login")
    with pytest.raises(ValidationError, match="scrypt hash"):
        ConsoleConfig(enabled=True, users=[{"name": "a", "role": "viewer", "password_hash": "hunter2"}])
    with pytest.raises(ValidationError, match="HH:MM"):
        ConsoleConfig(shift_starts=["25:00"])


def _users():
    from contract.passwords import hash_password

    return [
        {"name": "vera", "role": "viewer", "password_hash": hash_password("viewer-pass")},
        {"name": "otto", "role": "operator", "password_hash": hash_password("operator-pass")},
        {"name": "ines", "role": "integrator", "password_hash": hash_password("integrator-pass")},
    ]


def login(c: httpx.Client, user: str, password: str) -> httpx.Response:
    return c.post("/login", data={"user": user, "password": password, "next": "/"})


def test_login_roles_cookies_csrf_and_rate_limit(console_agent) -> None:
    agent = console_agent(console={"auth": "login", "users": _users(), "login_attempts": 3})
    seq = an_ng_seq(agent)
    with client(agent) as anon:
        page = anon.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert anon.get("/api/overview").status_code == 401
        assert anon.get(f"/results/{seq}.json").status_code in (303, 401)
        assert "No login" not in anon.get("/login").text
    review = {"decision": "false_reject", "boxes": []}
    with client(agent) as c:
        r = login(c, "vera", "viewer-pass")
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # no TLS here
        token = csrf_of(c.get("/").text)
        assert c.get("/api/overview").status_code == 200
        r = c.post(f"/api/results/{seq}/review", json=review, headers={"X-CSRF-Token": token})
        assert r.status_code == 403 and "operator" in r.json()["error"]
        assert c.get("/setup/demo").status_code == 403
    with client(agent) as c:
        login(c, "otto", "operator-pass")
        token = csrf_of(c.get("/").text)
        assert c.post(f"/api/results/{seq}/review", json=review).status_code == 403  # no CSRF token
        r = c.post(f"/api/results/{seq}/review", json=review, headers={"X-CSRF-Token": "x" + token})
        assert r.status_code == 403
        r = c.post(f"/api/results/{seq}/review", json=review, headers={"X-CSRF-Token": token})
        assert r.status_code == 200 and r.json()["reviewer"] == "otto"
        r = c.post(
            "/api/setup/demo/preview", json={"setup": {"recipe": "standard"}}, headers={"X-CSRF-Token": token}
        )
        assert r.status_code == 403 and "integrator" in r.json()["error"]
        assert c.post("/logout", data={"csrf": token}).status_code == 303
        assert c.get("/api/overview").status_code == 401  # the session is gone
    with client(agent) as c:
        login(c, "ines", "integrator-pass")
        token = csrf_of(c.get("/").text)
        r = c.post(
            "/api/setup/demo/preview", json={"setup": {"recipe": "standard"}}, headers={"X-CSRF-Token": token}
        )
        assert r.status_code == 200, r.text
    with client(agent) as c:
        foreign = c.post(
            "/login",
            data={"user": "ines", "password": "integrator-pass"},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
        for _ in range(3):
            assert login(c, "ines", "wrong").status_code == 401
        limited = login(c, "ines", "integrator-pass")  # even the right password waits now
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "too many failed logins" in limited.text
    assert [e["action"] for e in agent.journal.audit_log(action="login.refused")].count("login.refused") >= 3


TRAVERSALS = [
    "/results/1/image/..%2F..%2F..%2Fagent.yaml",
    "/results/1/image/../../agent.yaml",
    "/results/1/image/%2e%2e",
    "/results/1/thumb/..%2F..%2Fagent.yaml",
    "/static/../agent.yaml",
    "/static/..%2F..%2F..%2Fagent.yaml",
    "/static/%2e%2e/%2e%2e/console/server.py",
    "/model/demo/plot/fp32/..%2F..%2Fmodel.json",
    "/model/demo/plot/..%2F..%2F..%2F/pr_curve",
    "/api/lines/demo/frame/..%2F..%2Fagent.yaml.jpg",
    "/api/lines/..%2F..%2Fetc/frame/top.jpg",
    "/api/lines/demo/reference/..%2Fagent.yaml.jpg",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_route_reads_outside_the_archive(console_agent, path) -> None:
    agent = console_agent()
    with client(agent) as c:
        r = c.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        for secret in (b"ok_sample_rate", b"class Console", b"card_version", b"root:"):
            assert secret not in r.content, (path, secret)


def test_setup_preview_save_hot_reload_and_restore(console_agent) -> None:
    agent = console_agent()
    line_file = agent.loaded_line("demo").file
    original = line_file.read_text()
    wait_until(lambda: agent.journal.query(verdict="NG", limit=1), timeout=60)
    tiny = [[0, 0], [3, 0], [3, 3]]  # a corner no defect centre lies in: every part turns OK
    setup = {"recipe": "standard", "camera_roi": {"top": {"include": [tiny]}}}
    with client(agent) as c:
        token = csrf_of(c.get("/setup/demo").text)
        h = {"X-CSRF-Token": token}
        preview = c.post("/api/setup/demo/preview", json={"setup": setup}, headers=h).json()
        assert preview["whatif"]["ng_to_ok"] >= 1 and preview["whatif"]["ok_to_ng"] == 0
        assert "+    roi:" in preview["diff"]
        assert line_file.read_text() == original, "a preview writes nothing"
        stale = c.post("/api/setup/demo/save", json={"setup": setup, "base_sha": "0" * 64}, headers=h)
        assert stale.status_code == 409
        saved = c.post(
            "/api/setup/demo/save", json={"setup": setup, "base_sha": preview["base_sha"]}, headers=h
        )
        assert saved.status_code == 200, saved.text
        assert saved.json()["reload"]["ok"] is True
        text = line_file.read_text()
        assert "# px: smaller dark dots are texture" in text and "# a demo; remove" in text  # comments kept
        assert "include:\n        - [[0, 0], [3, 0], [3, 3]]" in text
        assert agent.lines["demo"].config.recipes["standard"].roi.include == [[(0, 0), (3, 0), (3, 3)]]
        after = agent.journal.last_seq()
        wait_until(lambda: len(agent.journal.since(after)) >= 8, timeout=60)
        assert {r.verdict for r in agent.journal.since(after)[2:]} == {"OK"}  # the ROI changed the verdicts
        entry = agent.journal.audit_log(action="setup.save")[0]
        assert entry["user"] == "local" and entry["detail"]["before"] == original
        restored = c.post("/api/setup/demo/restore", json={"version": saved.json()["version"]}, headers=h)
        assert restored.status_code == 200 and restored.json()["reload"]["ok"]
        assert line_file.read_text() == original
        assert agent.lines["demo"].config.recipes["standard"].roi.include == []


@pytest.mark.parametrize(
    ("setup", "status", "fragment"),
    [
        ({"recipe": "standard", "classes": {"crak": {"max_count": 1}}}, 400, "did you mean 'crack'"),
        ({"recipe": "standard", "min_confidence": 2}, 400, "less than or equal to 1"),
        ({"recipe": "nope"}, 400, "no recipe 'nope'"),
        ({"recipe": "standard", "camera_roi": {"side": {"include": []}}}, 400, "no camera side"),
        ({"recipe": "standard", "camera_roi": {"top": {"include": [[[0, 0], [1, 1]]]}}}, 400, "at least 3"),
        ({"recipe": "standard", "bogus": 1}, 400, "bogus"),
    ],
)
def test_bad_setup_is_refused_with_the_reason(console_agent, setup, status, fragment) -> None:
    agent = console_agent()
    line_file = agent.loaded_line("demo").file
    original = line_file.read_text()
    with client(agent) as c:
        token = csrf_of(c.get("/setup/demo").text)
        r = c.post(
            "/api/setup/demo/save", json={"setup": setup, "base_sha": "x"}, headers={"X-CSRF-Token": token}
        )
        assert r.status_code == status, r.text
        assert fragment in json.dumps(r.json()), r.json()
    assert line_file.read_text() == original


def _self_signed_pem(folder):
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (folder / "console.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "console.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "console.crt", folder / "console.key"


def test_tls_from_certificate_files(console_agent, tmp_path) -> None:
    cert, key = _self_signed_pem(tmp_path)
    agent = console_agent(
        console={"auth": "login", "users": _users(), "tls": {"cert": str(cert), "key": str(key)}}
    )
    assert agent.console.url.startswith("https://")
    with httpx.Client(base_url=agent.console.url, verify=str(cert), timeout=30) as c:
        r = c.post("/login", data={"user": "vera", "password": "viewer-pass"}, headers={"Host": "localhost"})
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(agent.console.url.replace("https", "http") + "/login", timeout=5)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/results?verdict=maybe", "OK or NG"),
        ("/results?from=yesterday", "not a date/time"),
        ("/results?from=2026-12-02T10:00&to=2026-12-01T10:00", "after"),
        ("/results?limit=9999", "outside"),
        ("/results?before=abc", "not a whole number"),
        ("/results?line=../x", "only letters"),
        ("/results?reviewed=perhaps", "reviewed"),
        ("/api/lines/demo/frame/top.jpg?seq=-1", "outside"),
        ("/api/lines/nope/frame/top.jpg", "no line 'nope'"),
        ("/lines/nope", "no line 'nope'"),
    ],
)
def test_bad_query_gets_a_clear_message(console_agent, path, fragment) -> None:
    agent = console_agent()
    with client(agent) as c:
        r = c.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert fragment in html.unescape(r.text), r.text[-600:]


def test_restore_and_review_of_what_does_not_exist(console_agent) -> None:
    agent = console_agent()
    with client(agent) as c:
        h = {"X-CSRF-Token": csrf_of(c.get("/").text)}
        r = c.post("/api/setup/demo/restore", json={"version": 424242}, headers=h)
        assert r.status_code == 404 and "no saved setup version" in r.json()["error"]
        r = c.post("/api/setup/demo/restore", json={}, headers=h)
        assert r.status_code == 400
        r = c.post("/api/results/999999/review", json={"decision": "confirmed_ng"}, headers=h)
        assert r.status_code == 404
        r = c.post("/api/results/1/review", content=b"x" * 300_000, headers=h)
        assert r.status_code == 413

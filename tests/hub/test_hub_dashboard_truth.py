"""The dashboard tells the truth, in a real headless Chromium against a real hub and a real agent: model
columns show the card's name and version (not the ONNX file's export date); the rollouts page shows each
line's status and no Promote button for a canary that refused the model; refused models are listed on the
programme page; a cleanly stopped agent's lines read "stopped", a silent agent's "unknown"; NG by class
says how many classes it leaves out; the 30-day chart's labels lie inside the chart."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from hub_browser import make_driver, quit_driver, why_no_browser
from hub_support import hub_config, rollout_site, wait_for
from test_hub_dashboard_browser import _history, _login, screenshot_dir
from test_hub_rollout import _variant

from contract.model_signing import file_sha256, generate_signing_key
from edge_agent.agent import Agent
from edge_agent.config import load_agent_config
from hub.auth import Users
from hub.registry import Registry
from hub.rollout import Rollouts
from hub.server import HubServer

pytestmark = pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))
SITE = "acme-north"
FILE_DATE = "2026-12-07T10:11:12.345678"  # what an Ultralytics export writes as the file's version


def test_dashboard_tells_the_truth(tmp_path: Path, tiny_detect_onnx: Path, synthetic_images: Path):
    from selenium.webdriver.common.by import By

    server = HubServer(hub_config(tmp_path, f"sqlite:///{tmp_path / 'hub.sqlite'}"))
    server.start()
    driver = None
    agent = None
    try:
        Users(server.web_store.db).set("ana", "ana-password", "ml")
        registry = Registry(server.web_store.db)
        # a company whose NG parts have five classes, and an agent that has gone silent
        registry.add_agent("many-pc", "Many Classes")
        registry.register(
            "many-pc", {"site": "many", "heartbeat_s": 10, "lines": {"bend": {"state": "running"}}}
        )
        _history(server.web_store, "many", "bend", 0.02, random.Random(5))
        server.web_store.db.execute(
            "INSERT INTO rollup_day_class(site, line, day, class_name, count) VALUES "
            "('many', 'bend', ?, 'dent', 3), ('many', 'bend', ?, 'burr', 2)",
            (int(time.time() // 86400), int(time.time() // 86400)),
        )
        registry.add_agent("quiet-pc", "Quiet Works")
        registry.register(
            "quiet-pc", {"site": "quiet", "heartbeat_s": 1, "lines": {"saw": {"state": "running"}}}
        )
        server.web_store.db.execute(
            "UPDATE agents SET last_seen = ? WHERE agent_id = 'quiet-pc'", (time.time() - 60,)
        )

        # a real agent with two lines on its own model, a file with a model card (no version in it)
        keys = generate_signing_key(tmp_path / "keys", "ml-team")
        own = _variant(tiny_detect_onnx, tmp_path / "own" / "model.onnx", FILE_DATE)
        own.with_name("model.json").write_text(json.dumps({"card_version": 1, "name": "acme-own"}))
        site_file = rollout_site(
            server, tmp_path, own, synthetic_images, keys.public_file, max_fps=10, mode="loop", copies=20
        )
        agent = Agent(load_agent_config(site_file))
        agent.start()
        rollouts = Rollouts(server.web_store.db, server.config.data_dir)
        v7 = _variant(tiny_detect_onnx, tmp_path / "v7" / "model.onnx", FILE_DATE + "7")
        card = {"name": "press-detector", "version": "7.1"}
        r_good = rollouts.publish(
            v7, card, [f"{SITE}/press", f"{SITE}/weld"], keys.private_file, canary=f"{SITE}/press"
        )
        broken = tmp_path / "broken" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"not an onnx model" * 100)
        r_bad = rollouts.publish(
            broken,
            {"name": "weld-detector", "version": "2.0"},
            [f"{SITE}/weld"],
            keys.private_file,
            canary=f"{SITE}/weld",
        )
        wait_for(
            lambda: rollouts.line_status(r_good)[f"{SITE}/press"]["status"] == "applied", what="press applied"
        )
        wait_for(
            lambda: rollouts.line_status(r_bad)[f"{SITE}/weld"]["status"] == "failed", what="weld refused"
        )
        assert agent.lines["press"].model_version == FILE_DATE + "7"  # what the file itself says
        wait_for(
            lambda: (registry.line(SITE, "weld") or {}).get("hub_model_status") == "failed",
            what="the weld refusal in a heartbeat",
        )

        driver = make_driver()
        base = server.http_url
        _login(driver, base, "ana", "ana-password")
        wait_for(lambda: driver.find_elements(By.ID, "companies"), what="the programme page")
        rows = {
            r.get_attribute("data-company"): r for r in driver.find_elements(By.CSS_SELECTOR, "tr.company")
        }
        own_card = f"acme-own {file_sha256(own)[:12]}"  # the card's name; no version in it: the sha256's
        assert "press-detector 7.1" in rows["Acme"].text and own_card in rows["Acme"].text
        assert FILE_DATE[:10] not in rows["Acme"].text
        more = rows["Many Classes"].find_element(By.CSS_SELECTOR, ".more-classes")
        assert more.text == "+ 2 more classes (5)" and "dent 3" in more.get_attribute("title")
        refused = driver.find_element(By.CSS_SELECTOR, "#refused tr[data-line='acme-north/weld']").text
        assert "weld-detector 2.0" in refused and f"#{r_bad}" in refused and "ONNX" in refused.upper()
        shots = screenshot_dir(tmp_path / "screenshots")
        driver.save_screenshot(str(shots / "hub-truth-programme.png"))

        driver.get(base + "/rollouts")
        good = driver.find_element(By.CSS_SELECTOR, f"tr[data-rollout='{r_good}']")
        status = {li.get_attribute("data-line"): li.text for li in good.find_elements(By.CSS_SELECTOR, "li")}
        assert status[f"{SITE}/press"].endswith("applied") and status[f"{SITE}/weld"].endswith("waiting")
        assert good.find_elements(By.CSS_SELECTOR, "button.promote")
        bad = driver.find_element(By.CSS_SELECTOR, f"tr[data-rollout='{r_bad}']")
        assert "failed" in bad.find_element(By.CSS_SELECTOR, f"li[data-line='{SITE}/weld']").text
        assert "canary refused it" in bad.text
        assert not bad.find_elements(By.CSS_SELECTOR, "button.promote")  # nothing to promote
        assert bad.find_elements(By.CSS_SELECTOR, "button.rollback")
        driver.save_screenshot(str(shots / "hub-truth-rollouts.png"))

        driver.get(base + "/company/Acme")
        lines = {
            r.get_attribute("data-line"): r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr.line")
        }
        assert "press-detector 7.1" in lines[f"{SITE}/press"] and own_card in lines[f"{SITE}/weld"]
        assert not any(FILE_DATE[:10] in text for text in lines.values())
        assert "running" in lines[f"{SITE}/press"]
        driver.get(base + "/company/Quiet%20Works")
        quiet = driver.find_element(By.CSS_SELECTOR, "tr.line").text
        assert "unknown" in quiet and "last said: running" in quiet

        # every label of the 30-day chart inside the chart (the first one was cut in half)
        driver.get(base + "/line/many/bend")
        boxes = driver.execute_script(
            "const svg = document.querySelector('#chart-30d svg'); const w = svg.viewBox.baseVal.width;"
            "return [w, [...svg.querySelectorAll('text:not(.axis)')].map(t => {const b = t.getBBox();"
            "return [b.x, b.x + b.width];})];"
        )
        width, spans = boxes
        assert len(spans) >= 10 and all(left >= 0 and right <= width for left, right in spans), spans

        agent.stop()  # a clean stop: the last heartbeat says so
        wait_for(lambda: registry.line(SITE, "press")["state"] == "stopped", what="the stop in the registry")
        driver.get(base + "/company/Acme")
        lines = {
            r.get_attribute("data-line"): r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr.line")
        }
        assert all("stopped" in t and "running" not in t for t in lines.values()), lines
    finally:
        if driver is not None:
            quit_driver(driver)
        if agent is not None:
            agent.stop()
        server.stop()

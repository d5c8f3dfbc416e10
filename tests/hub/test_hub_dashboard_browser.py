"""The programme dashboard in a real headless Chromium, against a real hub with a real agent: login
and roles, the programme overview with a drift flag, drill-down company → line with charts and recent
NG images pulled from the agent on demand, rollback from the rollouts page. Screenshots go to the test's
temporary folder, or to docs/img with EDGE_INSPECT_SCREENSHOTS=docs/img (how the committed ones are made)."""

from __future__ import annotations

import json
import os
import random
import shutil
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hub_browser import make_driver, quit_driver, why_no_browser
from hub_support import hub_config, provision, wait_for, write_site

from contract.model_signing import generate_signing_key
from contract.result import Defect, InspectionResult, ModelInfo
from edge_agent.agent import Agent
from edge_agent.config import load_agent_config
from hub.auth import Users
from hub.registry import Registry
from hub.rollout import Rollouts
from hub.server import HubServer
from mes.store import StoreItem

pytestmark = pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))


def screenshot_dir(default: Path) -> Path:
    target = Path(os.environ.get("EDGE_INSPECT_SCREENSHOTS") or default)
    target.mkdir(parents=True, exist_ok=True)
    return target


def _history(store, site: str, line: str, ng_recent: float, rng: random.Random) -> None:
    """A week of a line's results at 2 % NG, then its last 20 minutes at `ng_recent`."""
    now = datetime.now(timezone.utc)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=7)
    rows = []
    for i in range(3000):
        ts = (
            start + timedelta(days=7) * (i / 3000)
            if i < 2400
            else now - timedelta(minutes=20) * ((3000 - i) / 600)
        )
        ng = rng.random() < (0.02 if i < 2400 else ng_recent)
        cls = ("scratch", "pit", "crack")[i % 3]
        defects = [
            Defect(
                camera="top",
                class_name=cls,
                class_id=i % 3,
                confidence=0.8,
                xyxy=[1, 1, 9, 9],
                area_px=64.0,
                counts_for_verdict=ng,
            )
        ]
        rows.append(
            InspectionResult(
                site=site,
                line=line,
                part_id=f"{line}-{i}",
                recipe="default",
                verdict="NG" if ng else "OK",
                defects=defects,
                seq=i,
                timestamp=ts,
                model=ModelInfo(name="tiny", version="1"),
            )
        )
    store.store_batch([StoreItem(result=r) for r in rows])


@pytest.fixture
def hub_with_agent(tmp_path: Path, tiny_classify_onnx: Path, synthetic_images: Path):
    server = HubServer(hub_config(tmp_path, f"sqlite:///{tmp_path / 'hub.sqlite'}"))
    server.start()
    users = Users(server.web_store.db)
    users.set("ana", "ana-password", "ml")
    users.set("vic", "vic-password", "viewer")
    registry = Registry(server.web_store.db)
    rng = random.Random(3)
    # two more companies whose agents report through the API's registry calls (no PC here for them)
    tokens = {}
    for agent_id, company, site, line, ng in (
        ("bolt-pc", "Bolt Forge", "bolt-east", "lathe", 0.25),
        ("cast-pc", "Cast Works", "cast-1", "mould", 0.02),
    ):
        tokens[agent_id] = registry.add_agent(agent_id, company)
        registry.register(
            agent_id,
            {
                "site": site,
                "version": "0.1.0",
                "heartbeat_s": 10,
                "lines": {
                    line: {"state": "running", "recipe": "default", "model": {"name": "tiny", "version": "1"}}
                },
            },
        )
        _history(server.web_store, site, line, ng, rng)
    # review events from Bolt's line console, through the agents' API: 3 of 10 reviewed NG were false
    # rejects, 1 of 10 reviewed OK an escape
    ng_ids = [
        r[0]
        for r in server.web_store.db.query(
            "SELECT result_id FROM results WHERE site = 'bolt-east' AND verdict = 'NG' LIMIT 10"
        )
    ]
    ok_ids = [
        r[0]
        for r in server.web_store.db.query(
            "SELECT result_id FROM results WHERE site = 'bolt-east' AND verdict = 'OK' LIMIT 10"
        )
    ]
    events = [
        {"result_id": rid, "line": "lathe", "review": "false_reject" if i < 3 else "confirmed_ng"}
        for i, rid in enumerate(ng_ids)
    ]
    events += [
        {"result_id": rid, "line": "lathe", "review": "escape" if i < 1 else "confirmed_ok"}
        for i, rid in enumerate(ok_ids)
    ]
    request = urllib.request.Request(
        server.http_url + "/api/v1/reviews",
        method="POST",
        data=json.dumps({"events": events}).encode(),
        headers={"Authorization": f"Bearer {tokens['bolt-pc']}", "Content-Type": "application/json"},
    )
    assert json.loads(urllib.request.urlopen(request, timeout=10).read())["applied"] == 20
    images = tmp_path / "images"
    images.mkdir()
    for i, src in enumerate(sorted(synthetic_images.glob("*.png")) * 10):
        shutil.copy(src, images / f"part_{i:04d}.png")
    site_dir = tmp_path / "site"
    provision(server, "acme-pc1", "Acme Stamping", site_dir / "hub.token")
    site_file = write_site(
        site_dir,
        images,
        tiny_classify_onnx,
        server.ingest.endpoint,
        site="acme-north",
        max_fps=5,
        mode="loop",
        hub={
            "url": server.http_url,
            "agent_id": "acme-pc1",
            "token_file": "hub.token",
            "heartbeat_s": 0.5,
            "command_poll_s": 5,
        },
    )
    agent = Agent(load_agent_config(site_file))
    agent.start()
    wait_for(
        lambda: (
            server.web_store.db.scalar(
                "SELECT COUNT(*) FROM results WHERE site = 'acme-north' AND verdict = 'NG'"
            )
            >= 3
        ),
        what="NG results of the real agent in the hub",
    )
    wait_for(lambda: agent.archive.stats.written >= 3, what="archived NG images on the agent")
    driver = make_driver()
    yield server, agent, driver, tmp_path
    quit_driver(driver)
    agent.stop()
    server.stop()


def _login(driver, base: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    assert "/login" in driver.current_url  # every page needs a login
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()


def test_dashboard_overview_drilldown_images_and_roles(hub_with_agent):
    from selenium.webdriver.common.by import By

    server, agent, driver, tmp = hub_with_agent
    base = server.http_url
    _login(driver, base, "ana", "wrong password")
    # the form posts and the page comes back with the message: read it once it has come back
    wait_for(
        lambda: any("wrong user or password" in e.text for e in driver.find_elements(By.ID, "login-error")),
        what="the login error after a wrong password",
    )
    _login(driver, base, "ana", "ana-password")
    wait_for(lambda: driver.find_elements(By.ID, "companies"), what="the programme page")
    rows = {
        r.get_attribute("data-company"): r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr.company")
    }
    assert set(rows) == {"Acme Stamping", "Bolt Forge", "Cast Works"}
    assert "bolt-east/lathe" in rows["Bolt Forge"]  # NG 2 % → 25 %: flagged
    assert "none" in rows["Cast Works"]  # steady: no flag
    assert "10.00 %" in rows["Bolt Forge"] and "30.00 %" in rows["Bolt Forge"]  # escape, false-reject rates
    assert driver.find_element(By.ID, "t-drift").text == "1"
    assert driver.find_element(By.ID, "t-companies").text == "3"
    shots = screenshot_dir(tmp / "screenshots")
    driver.save_screenshot(str(shots / "hub-programme.png"))

    driver.get(base + "/line/bolt-east/lathe")  # a week of history and a drift flag
    assert "drift" in driver.find_element(By.ID, "l-drift").text
    driver.save_screenshot(str(shots / "hub-line-drift.png"))

    driver.get(base + "/")
    driver.find_element(By.LINK_TEXT, "Acme Stamping").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "tr.line"), what="the company page")
    line_row = driver.find_element(By.CSS_SELECTOR, "tr.line").text
    assert "acme-north/press" in line_row and "online" in line_row and "running" in line_row
    driver.find_element(By.LINK_TEXT, "acme-north/press").click()
    wait_for(lambda: driver.find_elements(By.ID, "recent-ng"), what="the line page")
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-30d svg rect")
    assert driver.find_elements(By.CSS_SELECTOR, "#chart-24h svg rect")
    # the NG images come from the agent's archive through its long poll, then load in the browser
    wait_for(
        lambda: driver.execute_script(
            "const imgs = [...document.querySelectorAll('#recent-ng img')];"
            "return imgs.length > 0 && imgs.slice(0, 3).every(i => i.complete && i.naturalWidth > 0);"
        ),
        timeout=60,
        what="recent NG images fetched from the agent",
    )
    width = driver.execute_script("return document.querySelector('#recent-ng img').naturalWidth")
    assert width == 128  # the archived frame itself (synthetic images are 128 px wide)
    driver.execute_script("document.querySelector('#recent-ng').scrollIntoView()")
    driver.save_screenshot(str(shots / "hub-line-images.png"))

    # a rollout, rolled back from the page by the ml user
    keys = generate_signing_key(tmp / "keys", "ml")
    rollouts = Rollouts(server.web_store.db, server.config.data_dir)
    rid = rollouts.publish(
        agent.lines["press"].config.model.path,
        {"name": "tiny", "version": "9"},
        ["acme-north/press"],
        keys.private_file,
    )
    driver.get(base + "/rollouts")
    driver.find_element(By.CSS_SELECTOR, f"tr[data-rollout='{rid}'] button.rollback").click()
    wait_for(lambda: driver.find_elements(By.ID, "flash"), what="the rollback message")
    assert "rolled back" in driver.find_element(By.ID, "flash").text
    assert rollouts.get(rid)["stage"] == "rolled_back"

    # a viewer sees everything but cannot act
    driver.find_element(By.CSS_SELECTOR, "header button").click()  # log out
    _login(driver, base, "vic", "vic-password")
    driver.get(base + "/rollouts")
    assert not driver.find_elements(By.CSS_SELECTOR, "button.rollback")
    status = driver.execute_script(
        "const csrf = document.querySelector('meta[name=csrf]').content;"
        "return fetch('/rollouts/1/promote', {method: 'POST', headers: {'X-CSRF-Token': csrf}})"
        ".then(r => r.status)"
    )
    assert status == 403

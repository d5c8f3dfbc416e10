"""The console in a real browser (headless Chromium) against `edge-inspect run` on the demo line:
pages load without console errors, live updates arrive, a review made on the page lands in the journal
and in `dataset from-reviews`, an ROI drawn with the mouse lands in the YAML and changes verdicts.

The screenshots in docs/img/ are made here:
`EDGE_INSPECT_SCREENSHOTS=docs/img pytest tests/console -k browser`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from console_browser import console_errors, find_binaries, full_page_screenshot, screenshot_dir
from console_helpers import REPO, AgentProcess, demo_site, wait_until

if find_binaries() is None:
    pytest.skip(
        "chromium + chromedriver not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return demo_site(tmp_path_factory.mktemp("browser-site"), max_fps=4)


@pytest.fixture(scope="module")
def agent(site):
    proc = AgentProcess(site)
    yield proc
    assert proc.stop() == 0, proc.log.read_text()


def journal(site: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{site.parent / 'data' / 'journal.sqlite'}?mode=ro", uri=True, timeout=10)


def newest_seq(site: Path, verdict: str, with_defects: int = 1) -> int:
    def find():
        with journal(site) as db:
            for seq, body in db.execute(
                "SELECT seq, body FROM results WHERE verdict = ? ORDER BY seq DESC LIMIT 50", (verdict,)
            ):
                counted = [d for d in json.loads(body)["defects"] if d["counts_for_verdict"]]
                if len(counted) >= with_defects and (site.parent / "data" / "archive").exists():
                    return seq
        return None

    return wait_until(find, timeout=60)


def wait(driver, seconds: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, seconds)


def free_spot(driver, svg, w: int, h: int) -> tuple[int, int]:
    """Viewport coordinates of a w x h area on `svg`, in view, where no box lies (a drag there draws)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", svg)
    spot = driver.execute_script(
        """const [svg, w, h] = arguments; const r = svg.getBoundingClientRect();
        for (let y = Math.max(r.top, 0) + 10; y + h < Math.min(r.bottom, innerHeight) - 10; y += 15)
          for (let x = r.left + 10; x + w < r.right - 10; x += 15) {
            const hits = [[x, y], [x + w, y], [x, y + h], [x + w, y + h], [x + w / 2, y + h / 2]]
              .map(([px, py]) => document.elementFromPoint(px, py));
            if (hits.every(e => e === svg)) return [x, y];
          }
        return null;""",
        svg,
        w,
        h,
    )
    assert spot, "no free area on the image to draw in"
    return round(spot[0]), round(spot[1])


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait(driver).until(lambda d: d.execute_script("return document.readyState") == "complete")


def test_every_page_loads_without_console_errors_and_is_photographed(agent, site, driver, tmp_path) -> None:
    shots = screenshot_dir(tmp_path)
    seq = newest_seq(site, "NG", with_defects=2)
    time.sleep(2.0)  # a few parts for the charts; the NG images are archived
    pages = {
        "overview": "/",
        "line": "/lines/demo",
        "results": "/results?verdict=NG",
        "result": f"/results/{seq}",
        "setup": "/setup/demo",
        "model": "/model/demo",
    }
    console_errors(driver)  # start clean
    for name, path in pages.items():
        open_page(driver, agent.url + path)
        if name == "line":
            wait(driver).until(
                lambda d: d.find_element(By.CSS_SELECTOR, "figure.view").get_attribute("data-seq")
            )
            wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#yield-chart svg"))
        elif name == "overview":
            wait(driver).until(
                lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-updates") or 0)
            )
        elif name == "setup":
            wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        elif name == "results":
            wait(driver).until(
                lambda d: all(
                    i.get_attribute("complete") for i in d.find_elements(By.CSS_SELECTOR, ".tile img")
                )
            )
        elif name == "result":
            wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.overlay g.box"))
        time.sleep(0.3)
        errors = console_errors(driver)
        assert not errors, f"{path}: {errors}"
        full_page_screenshot(driver, shots / f"console-{name}.jpg")
        assert (shots / f"console-{name}.jpg").stat().st_size > 10_000


def test_live_updates_arrive(agent, driver) -> None:
    open_page(driver, agent.url + "/lines/demo")
    fig = driver.find_element(By.CSS_SELECTOR, "figure.view")
    first = wait(driver).until(lambda d: fig.get_attribute("data-seq"))
    second = wait(driver).until(lambda d: (s := fig.get_attribute("data-seq")) != first and s)
    assert int(second) > int(first)
    banner = driver.find_element(By.ID, "banner").text
    assert banner.startswith(("OK", "NG"))
    assert driver.find_elements(By.CSS_SELECTOR, "#recent li")
    src = driver.find_element(By.CSS_SELECTOR, "figure.view img").get_attribute("src")
    assert "/api/lines/demo/frame/top.jpg?seq=" in src
    assert not console_errors(driver)


def test_review_on_the_page_lands_in_the_journal_and_the_dataset(agent, site, driver, tmp_path) -> None:
    seq = newest_seq(site, "NG", with_defects=1)
    with journal(site) as db:
        body = json.loads(db.execute("SELECT body FROM results WHERE seq = ?", (seq,)).fetchone()[0])
    counted = [d for d in body["defects"] if d["counts_for_verdict"]]
    open_page(driver, f"{agent.url}/results/{seq}")
    svg = wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "svg.overlay")))
    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "g.box.removable")) == len(counted))
    # delete the first box the model found ...
    driver.find_elements(By.CSS_SELECTOR, "g.box.removable rect")[-1].click()  # the top one
    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "g.box.removable")) == len(counted) - 1)
    # ... and draw a missing crack with the mouse
    driver.find_element(By.CSS_SELECTOR, "#new-class option[value='2']").click()
    x, y = free_spot(driver, svg, 60, 40)
    mouse = ActionBuilder(driver)
    mouse.pointer_action.move_to_location(x, y).pointer_down().move_to_location(x + 60, y + 40).pointer_up()
    mouse.perform()
    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "g.box.removable")) == len(counted))
    driver.find_element(By.ID, "review-comment").send_keys("one pit was dust; crack missed")
    driver.find_element(By.CSS_SELECTOR, "button[data-decision='confirmed_ng']").click()
    wait(driver).until(lambda d: "Saved" in d.find_element(By.ID, "review-message").text)
    assert not console_errors(driver)
    with journal(site) as db:
        decision, boxes, changes, reviewer, comment = db.execute(
            "SELECT decision, boxes, changes, reviewer, comment FROM reviews WHERE result_seq = ? "
            "ORDER BY id DESC LIMIT 1",
            (seq,),
        ).fetchone()
    boxes, changes = json.loads(boxes), json.loads(changes)
    assert decision == "confirmed_ng" and reviewer == "local" and comment.startswith("one pit")
    assert len(changes["removed"]) == 1 and len(changes["added"]) == 1
    assert changes["added"][0]["class"] == "crack"
    assert len(boxes) == len(counted)

    out = tmp_path / "from-reviews"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "dataset",
            "from-reviews",
            str(out),
            "-c",
            str(site),
            "--line",
            "demo",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    label = out / "labels" / f"demo_{seq:010d}_top.txt"
    rows = [r.split() for r in label.read_text().splitlines()]
    assert len(rows) == len(boxes) and ["2"] in [r[:1] for r in rows]
    # the training side reads it as any YOLO dataset
    imported = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "dataset",
            "import",
            "--format",
            "yolo",
            str(out),
            str(tmp_path / "imported"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr + imported.stdout
    assert (tmp_path / "imported" / "data.yaml").is_file()


def test_roi_drawn_with_the_mouse_is_saved_and_changes_verdicts(agent, site, driver) -> None:
    line_file = site.parent / "lines" / "demo.yaml"
    original = line_file.read_text()
    open_page(driver, agent.url + "/setup/demo")
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    svg = driver.find_element(By.ID, "roi-svg")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", svg)
    top_left = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top]", svg
    )
    # a small triangle in the top-left corner: no defect centre of the demo images lies in it
    for x, y in ((4, 4), (40, 4), (4, 40)):
        mouse = ActionBuilder(driver)
        mouse.pointer_action.move_to_location(round(top_left[0] + x), round(top_left[1] + y)).click()
        mouse.perform()
    driver.find_element(By.ID, "finish-poly").click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "#roi-svg polygon.roi-include")) == 1
    driver.find_element(By.ID, "preview").click()
    summary = wait(driver, 60).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#whatif .whatif-summary").text
    )
    assert "NG part(s) OK" in summary and " 0 NG part(s) OK" not in summary
    assert "+    roi:" in driver.find_element(By.ID, "diff").text
    full_page_screenshot(driver, screenshot_dir(site.parent) / "console-setup-whatif.jpg")
    driver.find_element(By.ID, "save").click()
    wait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-saved"))
    assert "reloaded" in driver.find_element(By.ID, "setup-message").text
    assert not console_errors(driver)
    text = line_file.read_text()
    assert "roi:" in text and "include:" in text and "# px: smaller dark dots are texture" in text
    assert text != original
    with journal(site) as db:
        after = db.execute("SELECT MAX(seq) FROM results").fetchone()[0]

    def verdicts_since_reload():
        with journal(site) as db:
            rows = db.execute("SELECT verdict FROM results WHERE seq > ? ORDER BY seq", (after,)).fetchall()
        return [r[0] for r in rows] if len(rows) >= 10 else None

    verdicts = wait_until(verdicts_since_reload, timeout=60)
    assert set(verdicts[2:]) == {"OK"}, verdicts  # every defect is outside the ROI now


def test_login_in_the_browser_and_what_a_viewer_sees(tmp_path, driver) -> None:
    from contract.passwords import hash_password

    users = [
        {"name": "vera", "role": "viewer", "password_hash": hash_password("viewer-pass")},
        {"name": "ines", "role": "integrator", "password_hash": hash_password("integrator-pass")},
    ]
    agent = AgentProcess(demo_site(tmp_path / "login-site", console={"auth": "login", "users": users}))
    try:
        driver.delete_all_cookies()
        open_page(driver, agent.url + "/lines/demo")
        assert "/login" in driver.current_url  # sent to log in first
        assert "No login" not in driver.page_source
        driver.find_element(By.NAME, "user").send_keys("vera")
        driver.find_element(By.NAME, "password").send_keys("wrong")
        driver.find_element(By.CSS_SELECTOR, "form button").click()
        assert "wrong password" in wait(driver).until(lambda d: d.find_element(By.ID, "login-message")).text
        console_errors(driver)  # the 401 of the refused login is logged by the browser: expected
        driver.find_element(By.NAME, "user").send_keys("vera")
        driver.find_element(By.NAME, "password").send_keys("viewer-pass")
        driver.find_element(By.CSS_SELECTOR, "form button").click()
        wait(driver).until(lambda d: d.current_url.rstrip("/").endswith("/lines/demo"))
        wait(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, "figure.view").get_attribute("data-seq"))
        assert "vera" in driver.find_element(By.CSS_SELECTOR, ".who").text
        assert not driver.find_elements(By.LINK_TEXT, "Setup")  # a viewer is not offered the setup
        assert not console_errors(driver)
        cookie = driver.get_cookie("ei_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        driver.find_element(By.CSS_SELECTOR, ".who button").click()  # log out
        wait(driver).until(lambda d: "/login" in d.current_url)
    finally:
        driver.delete_all_cookies()
        assert agent.stop() == 0

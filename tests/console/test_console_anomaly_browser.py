"""The anomaly heat overlay in a real browser (headless Chromium): a line running an anomaly model
(tests.anomaly_factory, real ONNX Runtime) with its console; the live view lays the heat over the frame,
the result detail shows it (and hides it on request), the NG gallery's thumbnails have it drawn in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from console_browser import console_errors, find_binaries, full_page_screenshot, screenshot_dir
from console_helpers import wait_until

from tests.anomaly_factory import (
    DEFECT_BOX,
    build_mean_image_model,
    defect_part,
    good_part,
    part_surface,
    write_parts,
)

if find_binaries() is None:
    pytest.skip(
        "chromium + chromedriver not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
pytest.importorskip("onnx")

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    from edge_agent.agent import Agent
    from edge_agent.config import load_agent_config

    root = tmp_path_factory.mktemp("anomaly-console")
    rng = np.random.default_rng(5)
    base = part_surface()
    train = [good_part(rng, base) for _ in range(10)]
    model = build_mean_image_model(root / "models" / "parts" / "model.onnx", train)
    images = root / "images"
    write_parts(images, [good_part(rng, base) for _ in range(2)], "a_good")
    write_parts(images, [defect_part(rng, base) for _ in range(2)], "b_defect")
    line = {
        "name": "tiles",
        "cameras": [{"name": "top", "source": {"type": "folder", "path": str(images), "mode": "loop"}}],
        "trigger": {"type": "free_run", "max_fps": 4},
        "model": {"path": str(model), "providers": "cpu", "threads": 1},
    }
    (root / "lines").mkdir()
    (root / "lines" / "tiles.yaml").write_text(yaml.safe_dump(line, sort_keys=False))
    site = {
        "site": "test-site",
        "lines": ["lines/*.yaml"],
        "journal": {"path": "data/journal.sqlite"},
        "archive": {"path": "data/archive", "ok_sample_rate": 1.0, "min_free_mb": 0},
        "metrics": {"enabled": False},
        "reload": {"enabled": False},
        "console": {"enabled": True, "host": "127.0.0.1", "port": 0, "auth": "none"},
    }
    (root / "agent.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    running = Agent(load_agent_config(root / "agent.yaml"))
    running.start()
    wait_until(lambda: running.journal.last_seq() >= 4, timeout=60)
    yield running
    running.stop()


def _open(driver, url: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _shown(driver, img) -> bool:
    """The image is displayed, loaded and has pixels (not a broken image)."""
    return bool(
        driver.execute_script(
            "const i = arguments[0]; return !i.hidden && i.complete && i.naturalWidth > 0 "
            "&& getComputedStyle(i).display !== 'none' && i.getBoundingClientRect().width > 0;",
            img,
        )
    )


#: mean red, blue and alpha inside the scratch's box of an <img> (128x96 parts), read back through a canvas
RED_IN_BOX = """const [img, x1, y1, x2, y2] = arguments; const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d'); g.drawImage(img, 0, 0);
const sx = img.naturalWidth / 128, sy = img.naturalHeight / 96;
const d = g.getImageData(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy).data; let r = 0, b = 0, a = 0;
for (let i = 0; i < d.length; i += 4) { r += d[i]; b += d[i + 2]; a += d[i + 3]; }
const n = d.length / 4; return [r / n, b / n, a / n];"""


def test_heat_overlay_in_live_view_result_detail_and_ng_gallery(agent, driver) -> None:
    url = agent.console.url
    driver.get_log("browser")  # start clean

    # live view: the heat layer appears over the frame of an anomaly result, the score in the caption
    _open(driver, f"{url}/lines/tiles")
    heat = driver.find_element(By.CSS_SELECTOR, ".view img.heat")
    WebDriverWait(driver, 30).until(lambda d: _shown(d, heat))
    caption = driver.find_element(By.CSS_SELECTOR, ".view .anomaly-score").text
    assert caption.startswith("anomaly ") and "NG from" in caption

    # result detail of an NG part: the heat layer from the archived map, red over the scratch
    ng = wait_until(lambda: next((r for r in reversed(agent.journal.since(0)) if r.verdict == "NG"), None))
    wait_until(lambda: agent.console.archive.anomaly_map(ng, "top"), timeout=20)
    _open(driver, f"{url}/results/{ng.seq}")
    heat = driver.find_element(By.CSS_SELECTOR, ".view img.heat")
    WebDriverWait(driver, 20).until(lambda d: _shown(d, heat))
    red, blue, alpha = driver.execute_script(RED_IN_BOX, heat, *DEFECT_BOX)
    assert red > blue + 60 and alpha > 100, (red, blue, alpha)  # hot and opaque where the scratch is
    assert "anomaly score" in driver.find_element(By.CSS_SELECTOR, ".view figcaption").text
    shots = screenshot_dir(Path(agent.config.site.archive.path).parent)  # docs/img with the env var
    full_page_screenshot(driver, shots / "console-anomaly.jpg")
    driver.find_element(By.CSS_SELECTOR, ".heat-toggle").click()
    assert not _shown(driver, heat)  # the operator can look at the part without it
    driver.find_element(By.CSS_SELECTOR, ".heat-toggle").click()
    assert _shown(driver, heat)

    # NG gallery: the thumbnail is drawn with the heat (redder than the raw image at the scratch)
    _open(driver, f"{url}/results?verdict=NG")
    thumb = driver.find_element(By.CSS_SELECTOR, f"img[src*='/results/{ng.seq}/thumb/top']")
    WebDriverWait(driver, 20).until(lambda d: _shown(d, thumb))
    thumb_red, thumb_blue, _ = driver.execute_script(RED_IN_BOX, thumb, *DEFECT_BOX)
    driver.execute_async_script(
        "const done = arguments[1]; const i = new Image(); i.id = 'raw-probe'; i.hidden = true;"
        "i.onload = () => done(); i.src = arguments[0]; document.body.appendChild(i);",
        f"/results/{ng.seq}/image/top",
    )
    raw = driver.find_element(By.ID, "raw-probe")
    raw_red, raw_blue, _ = driver.execute_script(RED_IN_BOX, raw, *DEFECT_BOX)
    assert thumb_red - thumb_blue > raw_red - raw_blue + 40, (thumb_red, thumb_blue, raw_red, raw_blue)
    assert not [e for e in console_errors(driver) if "favicon" not in e]


def test_a_false_reject_reviewed_on_the_page_goes_back_as_a_good_image(agent, driver) -> None:
    """Reviews work as for detections: delete the region's box, mark the part a false reject; the
    anomaly line's reviewed images then list it as a good image for the next training."""
    from edge_agent.anomaly_reviews import reviewed_images

    ng = wait_until(lambda: next((r for r in agent.journal.since(0) if r.verdict == "NG"), None))
    wait_until(lambda: agent.console.archive.image(ng, "top", False), timeout=20)
    _open(driver, f"{agent.console.url}/results/{ng.seq}")
    boxes = "g.box.removable"
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, boxes)) == 1)
    driver.find_element(By.CSS_SELECTOR, f"{boxes} rect").click()  # the heat layer lets clicks through
    WebDriverWait(driver, 20).until(lambda d: not d.find_elements(By.CSS_SELECTOR, boxes))
    driver.find_element(By.CSS_SELECTOR, "button[data-decision='false_reject']").click()
    WebDriverWait(driver, 20).until(lambda d: "Saved" in d.find_element(By.ID, "review-message").text)
    review = agent.journal.current_review(ng.seq)
    assert review["decision"] == "false_reject" and review["boxes"] == []
    assert review["changes"]["removed"][0]["class"] == "anomaly"
    found = reviewed_images(agent.journal.path, agent.config.site.archive.path, line="tiles")
    assert [(i.seq, i.decision) for i in found.good] == [(ng.seq, "false_reject")]
    assert not [e for e in console_errors(driver) if "favicon" not in e]

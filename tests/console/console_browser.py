"""A headless Chromium for the console tests and the screenshots in docs/: Debian's `chromium` and
`chromium-driver`, driven by Selenium with an explicit driver path (Selenium Manager never downloads)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

#: a line-side screen (1600 px wide); screenshots are taken at this size
WINDOW = (1600, 1000)


def find_binaries() -> tuple[str, str] | None:
    browser = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None) or shutil.which("chromium")
    driver = next((p for p in DRIVER_CANDIDATES if Path(p).is_file()), None) or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_browser(profile_dir: Path | None = None):
    """A headless Chromium with browser console logs captured; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_binaries()
    if found is None:
        raise RuntimeError("chromium and chromedriver not found (apt-get install chromium chromium-driver)")
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile_dir or tempfile.mkdtemp(prefix='ei-chromium-')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def console_errors(driver) -> list[str]:
    """SEVERE entries of the browser console since the last call (JS errors, failed requests)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot_dir(default: Path) -> Path:
    """docs/img when EDGE_INSPECT_SCREENSHOTS=docs/img (how the committed screenshots are made)."""
    target = Path(os.environ.get("EDGE_INSPECT_SCREENSHOTS") or default)
    target.mkdir(parents=True, exist_ok=True)
    return target


def full_page_screenshot(driver, path: Path, max_height: int = 2200) -> None:
    """The whole page (up to `max_height` px), not only the window."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return Math.max(document.body.scrollHeight, window.innerHeight)")
    driver.set_window_size(WINDOW[0], min(max(WINDOW[1], height + 20), max_height))
    try:
        png = driver.get_screenshot_as_png()
    finally:
        driver.set_window_size(*WINDOW)
    if path.suffix.lower() in (".jpg", ".jpeg"):  # docs/img: a tenth of the PNG's size, as readable
        import cv2
        import numpy as np

        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        png = buf.tobytes()
    path.write_bytes(png)

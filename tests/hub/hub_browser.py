"""Headless Chromium for the dashboard tests (Debian's chromium + chromium-driver; never a download)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
BROWSERS = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")


def why_no_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not any(Path(p).is_file() for p in DRIVERS) or not any(Path(p).is_file() for p in BROWSERS):
        return "chromium + chromedriver not installed (apt-get install chromium chromium-driver)"
    return None


def make_driver(width: int = 1500, height: int = 1100):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in BROWSERS if Path(p).is_file())
    profile = tempfile.mkdtemp(prefix="hub-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    service = Service(next(p for p in DRIVERS if Path(p).is_file()))  # a path: Selenium Manager stays idle
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    driver._hub_profile = profile  # removed by quit_driver
    return driver


def quit_driver(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_hub_profile", ""), ignore_errors=True)

"""Cross-site request forgery against the console in a real browser (Debian chromium + chromedriver), as
the hub's test does: the victim, an operator-level user, is logged in to a real agent's console; a page
on another site (a second small server on another port and host name: "localhost" is not the console's
"127.0.0.1") makes the victim's browser post to the console at once (a form that smuggles JSON as
text/plain, a no-cors fetch with the victim's cookies, a form to /logout). Nothing happens: the line keeps
running, no shift is handed over, the victim stays logged in. The same body sent by the console's own page
with its CSRF token does stop the line, so the attack's payload is one the console would act on."""

from __future__ import annotations

import html
import json
import time

import pytest
from console_browser import find_binaries
from console_helpers import wait_until
from test_console_api import _users

from tests.attacker_site import serve_page

if find_binaries() is None:
    pytest.skip(
        "chromium + chromedriver not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By

#: what the attacker wants the line to do; a text/plain form sends `name=value`, so the JSON is split
#: across the field's name and value (`{"action": "stop", "pad": "` + `=` + `"}`)
STOP = {"action": "stop"}
FORM_NAME, FORM_VALUE = '{"action": "stop", "pad": "', '"}'


def _attacker_page(target: str) -> str:
    """Another site's page: posts to the console as soon as it loads."""
    t = html.escape(target, quote=True)
    return (
        "<!doctype html><html><body>"
        f'<form id="stop" method="post" enctype="text/plain" action="{t}/api/lines/demo/control" '
        f'target="f1"><input name="{html.escape(FORM_NAME, quote=True)}" '
        f'value="{html.escape(FORM_VALUE, quote=True)}"></form>'
        f'<form id="out" method="post" action="{t}/logout" target="f2">'
        '<input name="csrf" value="guessed"></form>'
        '<iframe name="f1"></iframe><iframe name="f2"></iframe>'
        "<script>"
        f"const target = {json.dumps(target)};"
        "const sent = [];"
        "for (const path of ['/api/lines/demo/control', '/api/lines/demo/shift/handover']) {"
        "  sent.push(fetch(target + path, {method: 'POST', mode: 'no-cors', credentials: 'include',"
        f"    headers: {{'Content-Type': 'text/plain'}}, body: {json.dumps(json.dumps(STOP))}}})"
        "    .catch(() => null));"
        "}"
        "document.getElementById('stop').submit();"
        "document.getElementById('out').submit();"
        "Promise.all(sent).then(() => { document.title = 'sent'; });"
        "</script></body></html>"
    )


def _line_actions(agent) -> list[tuple[str, str]]:
    return [
        (e["user"], e["action"])
        for e in agent.journal.audit_log(target="demo")
        if e["action"].startswith(("line.", "shift."))
    ]


def test_a_cross_site_post_in_a_real_browser_does_not_act(console_agent, driver) -> None:
    agent = console_agent(console={"auth": "login", "users": _users()})
    base = agent.console.url  # http://127.0.0.1:PORT
    attacker, attacker_url = serve_page(lambda path: _attacker_page(base))
    try:
        driver.delete_all_cookies()
        driver.get(base + "/login?next=/operator")
        driver.find_element(By.NAME, "user").send_keys("ines")
        driver.find_element(By.NAME, "password").send_keys("integrator-pass")
        driver.find_element(By.CSS_SELECTOR, "form button").click()
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "button.line-toggle"), timeout=30)
        assert agent.lines["demo"].state == "running"

        driver.get(attacker_url + "/")
        wait_until(lambda: driver.title == "sent", timeout=20)  # the page ran and every post went out
        time.sleep(1.5)  # the form posts have been answered too
        assert agent.lines["demo"].state == "running", "a cross-site post stopped the line"
        assert _line_actions(agent) == [], "a cross-site post acted"

        # still logged in: the cross-site logout did not end the session
        driver.get(base + "/operator")
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, ".who button"), timeout=20)
        assert "ines" in driver.find_element(By.CSS_SELECTOR, ".who").text

        # the same JSON from the console's own page, with its CSRF token: the line stops
        status = driver.execute_script(
            "const token = document.querySelector('meta[name=\"csrf-token\"]').content;"
            "return fetch('/api/lines/demo/control', {method: 'POST', headers: {'X-CSRF-Token': token,"
            "  'Content-Type': 'text/plain'}, body: arguments[0]}).then(r => r.status);",
            json.dumps(STOP),
        )
        assert status == 200
        wait_until(lambda: agent.lines["demo"].state == "paused", timeout=10)
        assert _line_actions(agent) == [("ines", "line.stop")]
    finally:
        driver.delete_all_cookies()
        attacker.shutdown()

"""The hub's web layer (`contract.web.WebGuard`) under attack, on a real hub (uvicorn, SQLite):

- plain HTTP clients (httpx): every route of the app, enumerated from the app itself so a new route cannot
  forget, answers 303-to-login / 401 without a session unless it is marked public; a POST without or with
  a wrong CSRF token is refused, so is one from a foreign Origin; GET /logout does not log out;
- a real browser (Debian chromium + chromedriver): a page on another site (a second small server on
  another port and host name) that posts a form to the hub's rollback and logout does not act, while the
  hub's own buttons do.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from hub_browser import make_driver, quit_driver, why_no_browser
from hub_support import hub_config

from contract.model_signing import generate_signing_key
from contract.web import SECURITY_HEADERS, split_routes, write_routes
from hub.app import build_app
from hub.auth import Users
from hub.rollout import Rollouts
from hub.server import HubServer
from hub.store import HubStore
from tests.attacker_site import forged, serve_page

PUBLIC_PATHS = {"/login", "/healthz", "/static"}  # and the agents' API (bearer token): /api/v1/...


@pytest.fixture()
def hub(tmp_path: Path):
    config = hub_config(tmp_path, f"sqlite:///{tmp_path}/hub.sqlite")
    server = HubServer(config)
    server.start()
    users = Users(server.web_store.db)
    users.set("ana", "ana-password-1", "ml")
    try:
        yield server
    finally:
        server.stop()


def _login(c: httpx.Client) -> str:
    r = c.post("/login", data={"user": "ana", "password": "ana-password-1"})
    assert r.status_code == 303, r.text[:300]
    page = c.get("/rollouts")
    assert page.status_code == 200
    return re.search(r'<meta name="csrf" content="([^"]+)"', page.text).group(1)


def _routes(hub: HubServer) -> list:
    """The routes of the hub's app, as `hub serve` builds it."""
    store = HubStore.open(hub.config.store)
    try:
        return build_app(hub.config, store).routes
    finally:
        store.close()


def test_every_route_needs_a_session_unless_public(hub: HubServer, tmp_path: Path) -> None:
    opted_out, guarded = split_routes(_routes(hub))
    assert {p for p in opted_out if not p.startswith("/api/v1/")} == PUBLIC_PATHS
    with httpx.Client(base_url=hub.http_url, follow_redirects=False, timeout=30) as c:
        for method, path in guarded:
            r = c.request(method, path)
            assert r.status_code in (303, 401), (method, path, r.status_code)
            if r.status_code == 303:
                assert r.headers["location"].startswith("/login?next="), path
            assert all(header in r.headers for header in SECURITY_HEADERS), path
    assert len(guarded) >= 7  # the dashboard's pages and actions, logout included


def test_writes_need_the_csrf_token_and_this_origin(hub: HubServer) -> None:
    with httpx.Client(base_url=hub.http_url, follow_redirects=False, timeout=30) as c:
        token = _login(c)
        for sent in ({}, {"csrf": ""}, {"csrf": "forged" + token[6:]}):
            r = c.post("/rollouts/999/rollback", data=sent)
            assert r.status_code == 403 and "CSRF" in r.text, (sent, r.status_code)
        r = c.post("/rollouts/999/rollback", data={"csrf": token}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "evil.example" in r.text
        r = c.post("/logout", data={"csrf": token}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and c.get("/").status_code == 200
        r = c.post(
            "/login",
            data={"user": "ana", "password": "ana-password-1"},
            headers={"Origin": "http://evil.example"},
        )  # login CSRF
        assert r.status_code == 403
        # with the token and from this origin the hub acts: "refused: no rollout 999" is the hub's answer
        r = c.post("/rollouts/999/rollback", data={"csrf": token}, headers={"Origin": hub.http_url})
        assert r.status_code == 303 and r.headers["location"].startswith("/rollouts?msg=refused")
        r = c.post("/rollouts/999/rollback", headers={"X-CSRF-Token": token})
        assert r.status_code == 303 and r.headers["location"].startswith("/rollouts?msg=")


def test_every_unsafe_route_is_csrf_checked_by_the_guard(hub: HubServer) -> None:
    """Every POST/PUT/PATCH/DELETE route of the app, enumerated from it: without the session's token
    refused by `WebGuard` (403), with it past the check (the route's own answer). Only the login and the
    agents' API (a bearer token, no cookie a browser would send) opt out."""
    public_writes, unsafe = write_routes(_routes(hub))
    assert {p for _, p in public_writes if not p.startswith("/api/v1/")} == {"/login"}
    assert ("POST", "/logout") in unsafe and ("POST", "/rollouts/1/1") in unsafe
    unsafe.sort(key=lambda mp: mp[1] == "/logout")  # logging out last
    with httpx.Client(base_url=hub.http_url, follow_redirects=False, timeout=30) as c:
        token = _login(c)
        for method, path in unsafe:
            for sent in ({}, {"X-CSRF-Token": forged(token)}):
                r = c.request(method, path, headers=sent)
                assert r.status_code == 403 and "CSRF" in r.text, (method, path, sent, r.status_code)
            r = c.request(method, path, headers={"X-CSRF-Token": token})
            assert r.status_code != 403 and "CSRF" not in r.text, (method, path, r.status_code, r.text[:200])
        assert c.get("/").status_code == 303  # the last one, POST /logout with the token, logged out


def test_logout_only_by_post(hub: HubServer) -> None:
    with httpx.Client(base_url=hub.http_url, follow_redirects=False, timeout=30) as c:
        token = _login(c)
        assert c.get("/logout").status_code == 405
        assert c.get("/").status_code == 200  # still logged in
        assert c.post("/logout").status_code == 403  # no token: refused, still logged in
        assert c.get("/").status_code == 200
        r = c.post("/logout", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert c.get("/").status_code == 303


def _attacker_page(target: str, path: str) -> str:
    """Another site's page: forms that post to the hub at once (the classic CSRF); /<rid>: the rollout."""
    return (
        "<!doctype html><html><body>"
        f'<form id="rb" method="post" action="{target}/rollouts/{path.strip("/")}/rollback" '
        'target="f1"><input name="csrf" value="guessed"></form>'
        f'<form id="lo" method="post" action="{target}/logout" target="f2"></form>'
        '<iframe name="f1"></iframe><iframe name="f2"></iframe>'
        "<script>document.getElementById('rb').submit();document.getElementById('lo').submit();"
        "document.title='sent'</script></body></html>"
    )


def test_a_cross_site_form_in_a_real_browser_does_not_act(
    hub: HubServer, tmp_path: Path, tiny_detect_onnx: Path
) -> None:
    why = why_no_browser()
    if why:
        pytest.skip(why)
    keys = generate_signing_key(tmp_path / "keys", "ml")
    rollouts = Rollouts(hub.web_store.db, hub.config.data_dir)
    rid = rollouts.publish(
        tiny_detect_onnx, {"name": "tiny", "version": "9"}, ["acme/press"], keys.private_file
    )
    attacker, attacker_url = serve_page(lambda path: _attacker_page(hub.http_url, path))
    driver = make_driver()
    try:
        driver.get(hub.http_url + "/login")
        driver.find_element("name", "user").send_keys("ana")
        driver.find_element("name", "password").send_keys("ana-password-1")
        driver.find_element("id", "login").click()
        for _ in range(100):  # the login's answer (and its cookie) before the next page
            if "/login" not in driver.current_url:
                break
            time.sleep(0.1)
        driver.get(hub.http_url + "/rollouts")
        assert driver.find_elements("css selector", "button.rollback")
        # another origin and another site: "localhost" is not the hub's "127.0.0.1"
        driver.get(f"{attacker_url}/{rid}")
        for _ in range(100):
            if driver.title == "sent":
                break
            time.sleep(0.1)
        assert driver.title == "sent"  # the attacker's page ran and submitted both forms
        time.sleep(1.5)  # the two posts have gone out and been answered
        assert rollouts.get(rid)["stage"] != "rolled_back"
        driver.get(hub.http_url + "/rollouts")
        assert driver.find_elements("css selector", "button.rollback"), "the cross-site post logged out"
        # the hub's own button, same browser, same session: acts
        driver.find_element("css selector", f"tr[data-rollout='{rid}'] button.rollback").click()
        for _ in range(50):
            if rollouts.get(rid)["stage"] == "rolled_back":
                break
            time.sleep(0.1)
        assert rollouts.get(rid)["stage"] == "rolled_back"
    finally:
        quit_driver(driver)
        attacker.shutdown()

"""The console's web layer (`contract.web.WebGuard` in front: login, the role each route declares, CSRF)
under attack with a plain HTTP client against a real agent: every route, enumerated from the app itself so
a new route cannot forget, answers 303-to-login / 401 without a session unless it is public; every write
without or with a wrong CSRF token, or from a foreign Origin, is refused by the guard; GET /logout does
not log out; security headers everywhere. The same attacks from another site in a real browser:
test_console_cross_site_browser.py."""

from __future__ import annotations

from test_console_api import _users, client, csrf_of, login

from contract.web import SECURITY_HEADERS, split_routes, write_routes
from edge_agent.console.routes import build_app
from tests.attacker_site import forged

PUBLIC_PATHS = {"/login", "/static"}


def test_every_console_route_needs_a_session_unless_public(console_agent) -> None:
    agent = console_agent(console={"auth": "login", "users": _users()})
    app = build_app(agent.console)
    opted_out, guarded = split_routes(app.routes)
    assert set(opted_out) == PUBLIC_PATHS
    with client(agent) as anon:
        for method, path in guarded:
            r = anon.request(method, path)
            assert r.status_code in (303, 401), (method, path, r.status_code)
            assert all(header in r.headers for header in SECURITY_HEADERS), path
    assert len(guarded) >= 25


def test_console_writes_need_csrf_and_this_origin_and_logout_is_post(console_agent) -> None:
    agent = console_agent(console={"auth": "login", "users": _users()})
    with client(agent) as c:
        assert login(c, "ines", "integrator-pass").status_code == 303
        token = csrf_of(c.get("/").text)
        body = {"line": "demo"}
        for sent in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": forged(token)}):
            r = c.post("/api/lines/demo/control", json=body, headers=sent)
            assert r.status_code == 403 and "CSRF" in r.json()["error"], sent
        r = c.post(
            "/api/lines/demo/control",
            json=body,
            headers={"X-CSRF-Token": token, "Origin": "http://evil.example"},
        )
        assert r.status_code == 403 and "evil.example" in r.json()["error"]
        r = c.post("/logout", data={"csrf": token}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and c.get("/").status_code == 200
        assert c.get("/logout").status_code == 405 and c.get("/").status_code == 200
        assert c.post("/logout").status_code == 403 and c.get("/").status_code == 200
        assert c.post("/logout", data={"csrf": token}).status_code == 303
        assert c.get("/").status_code == 303


def test_every_unsafe_console_route_is_csrf_checked_by_the_guard(console_agent) -> None:
    """Every POST/PUT/PATCH/DELETE route of the app, enumerated from it: without the session's token
    refused by `WebGuard` (403, nothing done), with it past the check (the route's own answer). Only the
    login opts out (it has no session to ride; a foreign Origin is refused there too)."""
    agent = console_agent(console={"auth": "login", "users": _users()})
    app = build_app(agent.console)
    public_writes, unsafe = write_routes(app.routes)
    assert public_writes == [("POST", "/login")]
    assert ("POST", "/logout") in unsafe and len(unsafe) >= 7
    unsafe.sort(key=lambda mp: mp[1] == "/logout")  # logging out last
    with client(agent) as c:
        assert login(c, "ines", "integrator-pass").status_code == 303
        token = csrf_of(c.get("/").text)
        for method, path in unsafe:
            for sent in ({}, {"X-CSRF-Token": forged(token)}):
                r = c.request(method, path, headers=sent)
                assert r.status_code == 403 and "CSRF" in r.text, (method, path, sent, r.status_code)
            assert agent.lines["demo"].state == "running"
            r = c.request(method, path, headers={"X-CSRF-Token": token})
            assert r.status_code != 403 and "CSRF" not in r.text, (method, path, r.status_code, r.text[:200])
        assert c.get("/").status_code == 303  # the last one, POST /logout with the token, logged out

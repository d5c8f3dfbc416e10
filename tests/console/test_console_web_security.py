"""The console's web layer (`contract.web.WebGuard` in front, `access` per route) under attack with a plain
HTTP client against a real agent: every route, enumerated from the app itself so a new route cannot forget,
answers 303-to-login / 401 without a session unless it is public; writes without or with a wrong CSRF
token, or from a foreign Origin, are refused; GET /logout does not log out; security headers everywhere."""

from __future__ import annotations

from test_console_api import _users, client, csrf_of, login

from contract.web import SECURITY_HEADERS, split_routes
from edge_agent.console.routes import build_app

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
        for sent in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "x" + token[1:]}):
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

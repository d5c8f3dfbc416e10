"""Wrong passwords cannot lock an account: a real agent's console on the network (0.0.0.0, plain HTTP),
real HTTP clients from two loopback addresses (127.0.0.1 and 127.0.0.2, distinct sources to the server).
The failing address waits longer and longer; the same account logs in from the other address at once;
the start warns that logins cross the network in clear."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from edge_agent.console.auth import plain_http_warning
from edge_agent.console.settings import ConsoleConfig


def _client(agent, source: str) -> httpx.Client:
    port = agent.console.port
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        transport=httpx.HTTPTransport(local_address=source),
        timeout=30,
        follow_redirects=False,
    )


def _login(c: httpx.Client, password: str) -> httpx.Response:
    return c.post("/login", data={"user": "ines", "password": password, "next": "/"})


def test_failed_logins_slow_the_address_not_the_account(console_agent, caplog) -> None:
    from contract.passwords import hash_password

    users = [{"name": "ines", "role": "integrator", "password_hash": hash_password("integrator-pass")}]
    with caplog.at_level(logging.WARNING, logger="edge_agent.console.auth"):
        agent = console_agent(
            console={"auth": "login", "users": users, "host": "0.0.0.0", "login_attempts": 3}
        )
    assert any("plain HTTP" in r.getMessage() for r in caplog.records), "no warning about plain HTTP"
    try:
        with _client(agent, "127.0.0.2"):
            pass
    except OSError as exc:  # pragma: no cover - a kernel without the whole 127/8 on lo
        pytest.skip(f"cannot bind a client to 127.0.0.2: {exc}")

    with _client(agent, "127.0.0.1") as attacker, _client(agent, "127.0.0.2") as integrator:
        for _ in range(3):  # the free attempts
            assert _login(attacker, "wrong").status_code == 401
        waits = []
        for _ in range(2):  # each further failure doubles the wait of this address
            refused = _login(attacker, "integrator-pass")  # even the right password waits, unchecked
            assert refused.status_code == 429 and "too many failed logins from 127.0.0.1" in refused.text
            waits.append(int(refused.headers["retry-after"]))
            # the account itself is not locked: the same user logs in from elsewhere at once
            ok = _login(integrator, "integrator-pass")
            assert ok.status_code == 303 and "ei_session" in ok.headers["set-cookie"]
            time.sleep(waits[-1] + 0.2)
            assert _login(attacker, "wrong").status_code == 401
        assert waits == [1, 2]
        assert int(_login(attacker, "integrator-pass").headers["retry-after"]) == 4
        time.sleep(4.2)
        assert _login(attacker, "integrator-pass").status_code == 303  # a success clears the address
        assert _login(attacker, "wrong").status_code == 401  # its free attempts are back


def test_plain_http_warning_only_where_passwords_cross_the_network() -> None:
    from contract.passwords import hash_password

    users = [{"name": "a", "role": "viewer", "password_hash": hash_password("viewer-pass")}]
    on_lan = ConsoleConfig(enabled=True, host="0.0.0.0", users=users)
    assert "plain HTTP" in (plain_http_warning(on_lan) or "")
    assert plain_http_warning(ConsoleConfig(enabled=True, host="127.0.0.1", users=users)) is None
    assert plain_http_warning(ConsoleConfig(enabled=True, host="127.0.0.1", auth="none")) is None

"""Dashboard sessions that follow the user store, against a real hub (SQLite and PostgreSQL) and the real
`edge-inspect hub user` command: a downgraded user's old cookie can no longer roll back, a removed user's
cookie opens nothing, and a restart does not bring either back. Failed logins slow the address they come
from (real clients on 127.0.0.1 and 127.0.0.2), never the account. `sqlite:///` URLs read as SQLAlchemy's."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest
from hub_support import hub_config
from test_hub_cli import _cli

from hub.config import load_hub_config
from hub.db import HubDatabaseError, sqlite_path
from hub.server import HubServer
from hub.store import HubStore


def _client(server: HubServer, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(
        base_url=server.http_url,
        transport=httpx.HTTPTransport(local_address=source),
        follow_redirects=False,
        timeout=30,
    )


def _login(c: httpx.Client, user: str, password: str) -> httpx.Response:
    return c.post("/login", data={"user": user, "password": password})


def _can_roll_back(c: httpx.Client) -> bool:
    """POST a rollback (of a rollout that does not exist): `ml` is told "refused: no rollout", others 403."""
    page = c.get("/rollouts")
    token = re.search(r'<meta name="csrf" content="([^"]+)"', page.text) if page.status_code == 200 else None
    r = c.post("/rollouts/999/rollback", data={"csrf": token.group(1) if token else ""})
    if r.status_code == 303 and r.headers["location"].startswith("/rollouts?msg="):
        return True
    assert r.status_code in (303, 403), r.text[:300]
    return False


def _logged_in(c: httpx.Client) -> bool:
    r = c.get("/")
    return r.status_code == 200


def test_changed_or_removed_users_lose_their_sessions(tmp_path: Path, store_url: str) -> None:
    config = hub_config(tmp_path, store_url)
    common = ["--store", store_url, "--data", str(config.data_dir)]
    assert _cli("user", "ana", "--role", "ml", "--password", "ana-password-1", *common).returncode == 0
    assert _cli("user", "bob", "--role", "ml", "--password", "bob-password-1", *common).returncode == 0
    server = HubServer(config)
    server.start()
    try:
        with _client(server) as ana, _client(server) as bob:
            assert _login(ana, "ana", "ana-password-1").status_code == 303
            assert _login(bob, "bob", "bob-password-1").status_code == 303
            assert _can_roll_back(ana) and _can_roll_back(bob)

            # downgraded: the same cookie, read on the next request, is no session any more
            r = _cli("user", "ana", "--role", "viewer", "--keep-password", *common)
            assert r.returncode == 0 and "sessions have ended" in r.stdout, r.stderr
            assert not _can_roll_back(ana) and not _logged_in(ana)
            assert _login(ana, "ana", "ana-password-1").status_code == 303  # she logs in again: viewer now
            assert _logged_in(ana) and not _can_roll_back(ana)
            assert "ana (viewer)" in ana.get("/").text
            old_viewer_cookie = dict(ana.cookies)

            # removed: nothing opens, however fresh the cookie
            r = _cli("user", "bob", "--remove", *common)
            assert r.returncode == 0 and "removed" in r.stdout, r.stderr
            assert not _logged_in(bob) and not _can_roll_back(bob)
            assert _login(bob, "bob", "bob-password-1").status_code == 401
            assert _cli("user", "bob", "--remove", *common).returncode == 1  # no such user: said so

            # a new password ends the sessions made with the old one
            r = _cli("user", "ana", "--role", "viewer", "--password", "ana-password-2", *common)
            assert r.returncode == 0, r.stderr
            assert not _logged_in(ana)
        server.stop()
        server = HubServer(config)  # restarted: the old cookies stay dead
        server.start()
        with _client(server) as again:
            again.cookies.update(old_viewer_cookie)
            assert not _logged_in(again)
            assert _login(again, "ana", "ana-password-2").status_code == 303 and _logged_in(again)
    finally:
        server.stop()


def test_failed_logins_slow_the_address_not_the_account(tmp_path: Path, caplog) -> None:
    config = hub_config(tmp_path, f"sqlite:///{tmp_path / 'hub.sqlite'}", login_attempts=2)
    store = HubStore.open(config.store)
    from hub.auth import Users

    Users(store.db).set("ana", "ana-password", "ml")
    store.close()
    server = HubServer(config)
    server.start()
    try:
        try:
            with _client(server, "127.0.0.2") as probe:
                probe.get("/healthz")
        except httpx.ConnectError as exc:  # pragma: no cover - a kernel without the whole 127/8 on lo
            pytest.skip(f"cannot connect from 127.0.0.2: {exc}")
        with _client(server, "127.0.0.1") as guesser, _client(server, "127.0.0.2") as ana:
            assert [_login(guesser, "ana", "guess").status_code for _ in range(2)] == [401, 401]
            refused = _login(guesser, "ana", "ana-password")  # the right password, unchecked: it waits
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) == 1
            assert "too many failed logins from 127.0.0.1" in refused.text
            assert _login(ana, "ana", "ana-password").status_code == 303  # the account is not locked
            assert _logged_in(ana)
    finally:
        server.stop()

    # beyond localhost without HTTPS cookies the start says logins cross the network in clear
    lan = hub_config(tmp_path / "lan", f"sqlite:///{tmp_path / 'lan.sqlite'}", host="0.0.0.0")
    with caplog.at_level(logging.WARNING, logger="hub.web"):
        server = HubServer(lan)
        server.start()
        server.stop()
    assert any("plain HTTP" in r.getMessage() for r in caplog.records)


def test_sqlite_urls_read_as_in_sqlalchemy(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "hub.yaml").write_text("store: sqlite:///db/hub.sqlite\n")
    relative = load_hub_config(folder / "hub.yaml")
    assert sqlite_path(relative.store) == folder / "db" / "hub.sqlite"  # three slashes: next to hub.yaml
    (folder / "db").mkdir()
    HubStore.open(relative.store).close()
    assert (folder / "db" / "hub.sqlite").is_file()
    absolute = tmp_path / "abs" / "hub.sqlite"
    absolute.parent.mkdir()
    (folder / "hub.yaml").write_text(f"store: sqlite:///{absolute}\n")  # four slashes: absolute
    assert load_hub_config(folder / "hub.yaml").store == f"sqlite:////{str(absolute).lstrip('/')}"
    HubStore.open(load_hub_config(folder / "hub.yaml").store).close()
    assert absolute.is_file()
    for bad in ("sqlite://hub.sqlite", "sqlite:hub.sqlite", "sqlite:///"):
        with pytest.raises(HubDatabaseError, match="sqlite:///relative/path or sqlite:////absolute/path"):
            HubStore.open(bad)

"""Dashboard users and sessions: password hashes (`contract.passwords`), roles, HMAC-signed session cookies.

Roles: `viewer` (every dashboard page), `ml` (also rollouts and data collection), `admin` (also users).
The cookie secret lives in `<data_dir>/session.key` (made on first start, mode 0600), so sessions
survive a hub restart and several hub processes on one data folder share them.

The cookie names the user and carries a *stamp* of the user's row (a hash of its password hash and
role), never a role that counts: every request reads the user's role from the store and checks the
stamp, so a user removed (`hub user NAME --remove`) or changed (`hub user NAME --role viewer`: a new
role, or a new password and salt) is logged out at their next click, on every hub process at once.

Example:
    >>> import tempfile, pathlib
    >>> from hub.store import HubStore
    >>> store = HubStore.open(str(pathlib.Path(tempfile.mkdtemp()) / "hub.sqlite"))
    >>> users = Users(store.db)
    >>> users.set("ana", "correct horse", "ml")
    >>> users.check("ana", "correct horse"), users.check("ana", "wrong")
    ('ml', None)
    >>> s = Sessions(b"k" * 32, hours=1)
    >>> cookie = s.issue("ana", users.stamp("ana"))
    >>> users.session_user(s.read(cookie)), s.read("forged.cookie")
    ({'user': 'ana', 'role': 'ml'}, None)
    >>> users.set("ana", "correct horse", "viewer")  # changed: the old cookie no longer counts
    >>> users.session_user(s.read(cookie)) is None
    True
    >>> store.close()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from contract.passwords import hash_password, needs_rehash, verify_password
from hub.db import Database

ROLES = ("viewer", "ml", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}


class AuthError(ValueError):
    pass


# A hash that no password matches, checked for unknown users so a login takes as long either way.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def _stamp(password_hash: str, role: str) -> str:
    return hashlib.sha256(f"{password_hash}\0{role}".encode()).hexdigest()[:32]


def role_at_least(role: str | None, wanted: str) -> bool:
    return role is not None and _RANK.get(role, -1) >= _RANK[wanted]


class Users:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set(self, name: str, password: str, role: str) -> None:
        if role not in ROLES:
            raise AuthError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise AuthError("a password needs at least 8 characters")
        if not name or len(name) > 64:
            raise AuthError("a user name needs 1 to 64 characters")
        hashed = hash_password(password)
        self.db.execute(
            "INSERT INTO users(name, password_hash, role, created_at) VALUES (?,?,?,?) ON CONFLICT (name) "
            "DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role",
            (name, hashed, role, time.time()),
        )

    def set_role(self, name: str, role: str) -> None:
        """A new role, the password kept (the user's sessions end all the same)."""
        if role not in ROLES:
            raise AuthError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if self.db.execute("UPDATE users SET role = ? WHERE name = ?", (role, name)) != 1:
            raise AuthError(f"no user {name!r}")

    def remove(self, name: str) -> bool:
        """Delete a user (their sessions end at their next request); False if there was none."""
        return self.db.execute("DELETE FROM users WHERE name = ?", (name,)) == 1

    def list(self) -> list[tuple[str, str]]:
        return [(str(n), str(r)) for n, r in self.db.query("SELECT name, role FROM users ORDER BY name")]

    def stamp(self, name: str) -> str | None:
        """What a session of `name` must carry: changes whenever the user's password or role does."""
        row = self.db.query("SELECT password_hash, role FROM users WHERE name = ?", (name,))
        return _stamp(row[0][0], row[0][1]) if row else None

    def session_user(self, session: dict[str, Any] | None) -> dict[str, str] | None:
        """{user, role} with the role as stored now, or None (no session, user removed or changed)."""
        if not session or not isinstance(session.get("user"), str):
            return None
        row = self.db.query("SELECT password_hash, role FROM users WHERE name = ?", (session["user"],))
        if not row or not hmac.compare_digest(str(session.get("stamp", "")), _stamp(row[0][0], row[0][1])):
            return None
        return {"user": session["user"], "role": str(row[0][1])}

    def check(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None (same work either way). A hash in an
        older format is rewritten in the current one (`contract.passwords`); since the session stamp
        follows the hash, that one login ends the user's other sessions."""
        row = self.db.query("SELECT password_hash, role FROM users WHERE name = ?", (name,))
        stored = str(row[0][0]) if row else _DUMMY_HASH
        if not (verify_password(password, stored) and row):
            return None
        if needs_rehash(stored):  # a hash from an older hub: rewritten in the one format, same password
            self.db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                (hash_password(password), name, stored),
            )
        return str(row[0][1])


class Sessions:
    """`issue(user, stamp)` → cookie value; `read(cookie)` → {user, stamp, exp} or None (bad, expired).

    A valid cookie proves only who logged in and when; `Users.session_user` says whether it still counts."""

    def __init__(self, secret: bytes, hours: float) -> None:
        self.secret = secret
        self.seconds = hours * 3600

    def _sign(self, body: bytes) -> str:
        return (
            base64.urlsafe_b64encode(hmac.new(self.secret, body, hashlib.sha256).digest())
            .decode()
            .rstrip("=")
        )

    def issue(self, user: str, stamp: str | None) -> str:
        body = (
            base64.urlsafe_b64encode(
                json.dumps({"user": user, "stamp": stamp, "exp": time.time() + self.seconds}).encode()
            )
            .decode()
            .rstrip("=")
        )
        return f"{body}.{self._sign(body.encode())}"

    def read(self, cookie: str | None) -> dict[str, Any] | None:
        if not cookie or "." not in cookie:
            return None
        body, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(body.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        return data if data.get("exp", 0) > time.time() else None


def session_secret(data_dir: Path) -> bytes:
    path = Path(data_dir) / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return path.read_bytes()

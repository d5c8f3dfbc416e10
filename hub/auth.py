"""Dashboard users: password hashes (`contract.passwords`), roles, and the accounts the sessions follow.

Roles: `viewer` (every dashboard page), `ml` (also rollouts and data collection), `admin` (also users).
Sessions are the shared web layer's (`contract.web.Logins` over `contract.session_store`, in
`<data_dir>/sessions.sqlite`), so they survive a hub restart and several hub processes on one data folder
share them. A session names the user and carries the *stamp* of the user's row (`account_stamp`: a hash
of its password hash and role), never a role that counts: every request reads the user's account from the
store (`Users.account`) and checks the stamp, so a user removed (`hub user NAME --remove`) or changed
(`hub user NAME --role viewer`: a new role, or a new password and salt) is logged out at their next
click, on every hub process at once.

Example:
    >>> import tempfile, pathlib
    >>> from hub.store import HubStore
    >>> store = HubStore.open(str(pathlib.Path(tempfile.mkdtemp()) / "hub.sqlite"))
    >>> users = Users(store.db)
    >>> users.set("ana", "correct horse", "ml")
    >>> users.check("ana", "correct horse"), users.check("ana", "wrong")
    ('ml', None)
    >>> before = users.account("ana")
    >>> before.role, users.account("nobody")
    ('ml', None)
    >>> users.set("ana", "correct horse", "viewer")  # changed: sessions made before no longer count
    >>> users.account("ana").stamp != before.stamp
    True
    >>> store.close()
"""

from __future__ import annotations

import time

from contract.passwords import hash_password, needs_rehash, verify_password
from contract.web import Account, account_stamp
from hub.db import Database

ROLES = ("viewer", "ml", "admin")


class AuthError(ValueError):
    pass


# A hash that no password matches, checked for unknown users so a login takes as long either way.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


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

    def account(self, name: str) -> Account | None:
        """The user as stored now (role, stamp of password and role), or None: what a session follows."""
        row = self.db.query("SELECT password_hash, role FROM users WHERE name = ?", (name,))
        if not row:
            return None
        return Account(name, str(row[0][1]), account_stamp(str(row[0][0]), str(row[0][1])))

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

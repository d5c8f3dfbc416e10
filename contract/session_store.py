"""`SqlSessionStore`: the login sessions of the line console and the hub, in a `sessions` table.

The one implementation of `contract.web.SessionStore`. A session is a random token (the cookie); the table
keeps only its SHA-256, so a copy of the database lets nobody in. Being stored, sessions survive a restart
of the agent or the hub, and several hub processes on one database share them, on one machine or many.
A logout deletes the row: that cookie opens nothing any more, wherever it was copied to.

It runs on any database with `execute(sql, params) -> rowcount` and `query(sql, params) -> rows` and
`?` placeholders (`SqlDatabase`): the hub's own database (`hub.db.Database`, SQLite or PostgreSQL; the
table is one of its numbered migrations, `SESSIONS_TABLE`), or the console's small SQLite file beside the
journal (`SqliteFile`; sessions are throwaway there, so a file of an unknown layout starts afresh).

What a session does *not* keep is the user's role: `contract.web.Logins` reads that from the app's own
user list on every request, with a stamp of the user's password and role, so a changed or removed user
is logged out at the next click.

Example:
    >>> import tempfile, pathlib
    >>> store = SqlSessionStore.in_file(pathlib.Path(tempfile.mkdtemp()) / "sessions.sqlite", hours=1)
    >>> s = store.create("ana", "stamp-1")
    >>> found = store.get(s.token)
    >>> (found.user, found.stamp, found.anonymous), store.get("forged") is None
    (('ana', 'stamp-1', False), True)
    >>> store.end(s.token); store.get(s.token) is None
    True
    >>> store.close()
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: the table (SQLite and PostgreSQL alike; `user` is a reserved word in PostgreSQL, hence user_name)
SESSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS sessions ("
    " id TEXT PRIMARY KEY,"  # sha256 of the cookie's token, never the token itself
    " user_name TEXT NOT NULL, stamp TEXT NOT NULL, anonymous INTEGER NOT NULL,"
    " created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sessions_expires ON sessions(expires)",
)


class SqlDatabase(Protocol):
    """What the store needs of a database: statements with `?` placeholders, autocommitted."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...


class SqliteFile:
    """A small SQLite file as a `SqlDatabase` (thread-safe, WAL): the console's sessions."""

    LAYOUT_VERSION = 1

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a power cut may cost a login, never the journal
        if int(self._db.execute("PRAGMA user_version").fetchone()[0]) not in (0, self.LAYOUT_VERSION):
            self._db.execute("DROP TABLE IF EXISTS sessions")  # another layout: everybody logs in again
        for statement in SESSIONS_TABLE:
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version = {self.LAYOUT_VERSION}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, tuple(params)).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class StoredSession:
    """What the store knows of a session: whose, with which account stamp, until when."""

    token: str
    user: str
    stamp: str
    expires: float
    anonymous: bool = False


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SqlSessionStore:
    """Sessions in the `sessions` table of `db` (made by `SESSIONS_TABLE`). `max_sessions` bounds it: a
    script without cookies (each request a new anonymous session, the console's `auth: none`) cannot grow
    it forever; the sessions nearest their end go first."""

    def __init__(self, db: SqlDatabase, hours: float, max_sessions: int = 5000) -> None:
        self.db = db
        self.seconds = hours * 3600
        self.max_sessions = max_sessions

    @classmethod
    def in_file(cls, path: str | Path, hours: float, max_sessions: int = 5000) -> SqlSessionStore:
        """A store with its own SQLite file (`close()` closes it)."""
        return cls(SqliteFile(path), hours, max_sessions)

    def create(self, user: str, stamp: str, anonymous: bool = False) -> StoredSession:
        """A new session (random token) for `user`; expired and surplus ones are cleared on the way."""
        now = time.time()
        session = StoredSession(secrets.token_urlsafe(32), user, stamp, now + self.seconds, anonymous)
        self.db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        self.db.execute(
            "INSERT INTO sessions(id, user_name, stamp, anonymous, created, expires) VALUES (?,?,?,?,?,?)",
            (_key(session.token), user, stamp, int(anonymous), now, session.expires),
        )
        self.db.execute(
            "DELETE FROM sessions WHERE expires < "
            "(SELECT expires FROM sessions ORDER BY expires DESC LIMIT 1 OFFSET ?)",
            (self.max_sessions - 1,),
        )
        return session

    def get(self, token: str | None) -> StoredSession | None:
        """The session of this cookie value, or None (unknown, ended, expired)."""
        if not token:
            return None
        rows = self.db.query(
            "SELECT user_name, stamp, expires, anonymous FROM sessions WHERE id = ?", (_key(token),)
        )
        if not rows or float(rows[0][2]) < time.time():
            return None
        user, stamp, expires, anonymous = rows[0]
        return StoredSession(token, str(user), str(stamp), float(expires), bool(anonymous))

    def end(self, token: str | None) -> None:
        """Log this session out (its cookie opens nothing any more)."""
        if token:
            self.db.execute("DELETE FROM sessions WHERE id = ?", (_key(token),))

    def count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM sessions")[0][0])

    def close(self) -> None:
        """Close the store's own file (`in_file`); a database the app passed in is the app's to close."""
        if isinstance(self.db, SqliteFile):
            self.db.close()

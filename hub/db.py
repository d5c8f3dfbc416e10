"""One small database layer over SQLite (a trial hub on a laptop) and PostgreSQL (a programme).

The hub's SQL is written once with `?` placeholders and numbers for time (epoch seconds, epoch minutes,
epoch days, all UTC), so the same statements run on both; only the schema (partitioning, identity
columns) differs. `Database.connect(url)` takes `sqlite:///path/hub.sqlite` (or a bare path) or a
PostgreSQL URL (`postgresql://user@host:port/db`).

Each `Database` owns one connection behind a lock: the hub opens one for ingest and one for the web
side, so a slow dashboard query never holds up an acknowledgement.

Example:
    >>> import tempfile, pathlib
    >>> db = Database.connect(str(pathlib.Path(tempfile.mkdtemp()) / "hub.sqlite"))
    >>> db.kind
    'sqlite'
    >>> db.scalar("SELECT 1 + ?", (1,))
    2
    >>> db.close()
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

DbKind = Literal["sqlite", "postgres"]


class HubDatabaseError(RuntimeError):
    """The hub's database cannot be opened or used; the message says which and why."""


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """The file of an SQLite URL, read as SQLAlchemy does: `sqlite:///rel/hub.sqlite` is relative,
    `sqlite:////abs/hub.sqlite` absolute; a bare path is a path.

    >>> sqlite_path("sqlite:///var/hub.sqlite"), sqlite_path("sqlite:////var/hub.sqlite")
    (PosixPath('var/hub.sqlite'), PosixPath('/var/hub.sqlite'))
    """
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise HubDatabaseError(
                f"{url!r}: an SQLite URL is sqlite:///relative/path or sqlite:////absolute/path"
            )
        return Path(url.removeprefix("sqlite:///"))
    return Path(url)


class Database:
    """A connection, its lock and its dialect. `transaction()` commits on success, rolls back on error."""

    def __init__(self, kind: DbKind, conn: Any, url: str) -> None:
        self.kind = kind
        self.url = url
        self._conn = conn
        self._lock = threading.RLock()
        self._in_tx = False

    @classmethod
    def connect(cls, url: str, *, durability: Literal["normal", "full"] = "full") -> Database:
        if is_postgres_url(url):
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - psycopg is a hub dependency
                raise HubDatabaseError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from exc
            try:
                conn = psycopg.connect(url, autocommit=True)
            except psycopg.Error as exc:
                raise HubDatabaseError(f"cannot connect to PostgreSQL {_safe(url)}: {exc}") from exc
            if durability == "normal":  # an ack may then precede the WAL flush (a hub crash can lose it)
                conn.execute("SET synchronous_commit = off")
            return cls("postgres", conn, url)
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise HubDatabaseError(f"cannot open SQLite hub database {path}: {exc}") from exc
        return cls("sqlite", conn, str(path))

    @property
    def safe_url(self) -> str:
        """Where the database is, for messages: the SQLite file, or the URL without its password."""
        return _safe(self.url)

    # -- statements ------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        if self.kind == "postgres":  # psycopg's placeholders are %s, so a literal % is written %%
            return sql.replace("%", "%%").replace("?", "%s")
        return sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count."""
        with self._lock:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return cur.rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._lock:
            if self.kind == "postgres":
                with self._conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
            else:
                self._conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def script(self, sql: str) -> None:
        """Several statements separated by `;` (schema creation)."""
        with self._lock:
            if self.kind == "sqlite":
                self._conn.executescript(sql)
                return
            for statement in (s.strip() for s in sql.split(";")):
                if statement:
                    self._conn.execute(statement)

    def insert_id(self, sql: str, params: Sequence[Any] = ()) -> int:
        """INSERT one row and return its generated `id` (the statement must not end with RETURNING)."""
        with self._lock:
            if self.kind == "postgres":
                return int(self._conn.execute(self._sql(sql) + " RETURNING id", tuple(params)).fetchone()[0])
            return int(self._conn.execute(sql, tuple(params)).lastrowid)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """One committed transaction (`BEGIN IMMEDIATE` on SQLite: the writer lock up front)."""
        with self._lock:
            if self._in_tx:  # nested: part of the outer one
                yield self
                return
            self._conn.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
            self._in_tx = True
            try:
                yield self
            except BaseException:
                self._in_tx = False
                self._conn.execute("ROLLBACK")
                raise
            self._in_tx = False
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._conn.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"

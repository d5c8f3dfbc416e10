"""`ResultJournal`: SQLite (WAL) store of every result, the source of truth for all publishers.

A result is appended (and committed) before anyone is told about it. The journal assigns a sequence
number that only grows, across restarts. Publishers keep their own cursor (last seq delivered) in the
same database, so an outage or a restart resumes from a number, never from memory.

Example:
    >>> import tempfile, pathlib
    >>> from contract.result import InspectionResult, ModelInfo
    >>> j = ResultJournal(pathlib.Path(tempfile.mkdtemp()) / "j.sqlite")
    >>> r = InspectionResult(site="s", line="l", part_id="p1", recipe="r", verdict="OK",
    ...                      model=ModelInfo(name="m", version="1"))
    >>> j.append(r).seq, j.last_seq()
    (1, 1)
    >>> [x.part_id for x in j.since(0)]
    ['p1']
    >>> j.close()
"""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TextIO

from contract.result import InspectionResult
from edge_agent.journal_schema import migrate_journal

Durability = Literal["normal", "full"]

# The tables (results, cursors, journal_meta, reviews, audit) and their numbered migrations:
# edge_agent/journal_schema.py. Reviews (docs/console.md#reviews) are append-only: the newest row per
# result is its current truth, the older rows are the audit trail; `audit` records every other change
# made through the console.


class JournalIdentityError(Exception):
    """The journal file is not the journal this site had (emptied, deleted or replaced); nothing changed."""


def identity_file(journal: Path) -> Path:
    """The file the site keeps beside its journal: `journal.sqlite` -> `journal.sqlite.id`."""
    return journal.with_name(journal.name + ".id")


def check_journal_identity(db: sqlite3.Connection, path: Path, *, accept_new: bool = False) -> str | None:
    """The journal's id, checked against the identity file beside it, before anything is written.

    A journal that was truncated to 0 bytes, deleted or swapped for another file would otherwise start
    again from seq 1 and the earlier results would be gone without a word. Returns the id to keep (None:
    make a new one); raises `JournalIdentityError` saying how to accept a new journal on purpose.
    """
    has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='journal_meta'").fetchone()
    row = db.execute("SELECT value FROM journal_meta WHERE key='journal_id'").fetchone() if has_meta else None
    in_db = str(row[0]) if row else None
    side = identity_file(path)
    try:
        expected = json.loads(side.read_text(encoding="utf-8")) if side.exists() else None
    except (OSError, ValueError) as exc:
        raise JournalIdentityError(f"{side}: unreadable identity file ({exc}); restore or delete it") from exc
    if expected is None or accept_new:
        return in_db if expected is None else None  # no record yet (new or older journal): adopt it
    if in_db == expected.get("journal_id"):
        return in_db
    what = "holds no journal id" if in_db is None else f"is journal {in_db}"
    had = expected.get("last_seen_seq")
    raise JournalIdentityError(
        f"{path} is not this site's journal: {side} names journal {expected.get('journal_id')} "
        f"(created {expected.get('created', '?')}"
        + (f", results up to seq {had} at the last clean stop" if had else "")
        + f"), but the file {what}. It was emptied, deleted or replaced, so the earlier results are not "
        "in it. Restore the journal from a backup; or, to start a new journal on purpose, run with "
        f"--accept-new-journal (or move {side} away)"
    )


def record_journal_identity(db: sqlite3.Connection, path: Path, journal_id: str | None) -> str:
    """Store the journal's id in the database and in the identity file beside it; returns the id."""
    import uuid

    if journal_id is None:
        journal_id = uuid.uuid4().hex
    db.execute("CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT OR REPLACE INTO journal_meta(key, value) VALUES ('journal_id', ?)", (journal_id,))
    side = identity_file(path)
    try:
        current = json.loads(side.read_text(encoding="utf-8")) if side.exists() else {}
    except (OSError, ValueError):
        current = {}
    if current.get("journal_id") != journal_id:
        record = {
            "journal_id": journal_id,
            "journal": path.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        tmp.replace(side)
    return journal_id


def _note_last_seq(path: Path, journal_id: str, seq: int) -> None:
    """Remember the newest seq in the identity file at a clean stop (for the message if the file is lost)."""
    side = identity_file(path)
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
        if record.get("journal_id") == journal_id:
            record["last_seen_seq"] = seq
            tmp = side.with_name(side.name + ".tmp")
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            tmp.replace(side)
    except (OSError, ValueError):
        pass  # only a hint for a later error message


class ResultJournal:
    """Thread-safe append-only result store.

    durability="normal" (WAL + synchronous=NORMAL) survives a process crash; "full" also survives
    power loss at the cost of an fsync per commit.
    """

    def __init__(
        self, path: str | Path, durability: Durability = "normal", *, accept_new: bool = False
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            identity = check_journal_identity(self._db, self.path, accept_new=accept_new)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            # a newer journal than this code is refused; an older one is backed up and upgraded
            migrate_journal(self._db, self.path)
        except BaseException:
            self._db.close()
            raise
        self.journal_id = record_journal_identity(self._db, self.path, identity)

    # -- writing -------------------------------------------------------------------------------
    def append(self, result: InspectionResult) -> InspectionResult:
        """Store `result`, give it the next seq, and return it with `seq` set."""
        return self.append_many([result])[0]

    def append_many(self, results: list[InspectionResult]) -> list[InspectionResult]:
        """Store several results in one transaction (one fsync)."""
        out: list[InspectionResult] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # The write lock is ours (BEGIN IMMEDIATE), so the next seqs are known before the insert:
                # each body carries its seq and goes in with one statement. sqlite_sequence keeps the
                # highest seq ever given (AUTOINCREMENT), so none is reused after retention deletes.
                row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='results'").fetchone()
                seq = int(row[0]) if row else 0
                for result in results:
                    seq += 1
                    stored = result.model_copy(update={"seq": seq})
                    self._db.execute(
                        "INSERT INTO results(seq, result_id, line, part_id, verdict, ts, body) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (
                            seq,
                            result.result_id,
                            result.line,
                            result.part_id,
                            result.verdict,
                            result.timestamp.timestamp(),
                            stored.to_json(),
                        ),
                    )
                    out.append(stored)
                self._db.execute("COMMIT")
                self._appended = True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return out

    # -- reading -------------------------------------------------------------------------------
    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='results'").fetchone()
        return int(row[0]) if row else 0

    def get(self, seq: int) -> InspectionResult | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM results WHERE seq=?", (seq,)).fetchone()
        return InspectionResult.from_json(row[0]) if row else None

    def get_by_id(self, result_id: str) -> InspectionResult | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM results WHERE result_id=?", (result_id,)).fetchone()
        return InspectionResult.from_json(row[0]) if row else None

    def since(self, seq: int, limit: int = 1000, line: str | None = None) -> list[InspectionResult]:
        """Results with seq > `seq`, oldest first, at most `limit`."""
        sql = "SELECT body FROM results WHERE seq > ?"
        args: list[object] = [seq]
        if line is not None:
            sql += " AND line = ?"
            args.append(line)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [InspectionResult.from_json(r[0]) for r in rows]

    def since_bodies(self, seq: int, limit: int = 1000) -> list[tuple[int, str, str, str]]:
        """(seq, result_id, line, JSON body) with seq > `seq`, oldest first: for outputs that send the stored
        body as it is (no parse, no re-serialisation)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, result_id, line, body FROM results WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def iter_since(self, seq: int, batch: int = 1000, line: str | None = None) -> Iterator[InspectionResult]:
        while True:
            chunk = self.since(seq, batch, line)
            if not chunk:
                return
            yield from chunk
            seq = chunk[-1].seq or seq

    def query(
        self,
        *,
        since_time: datetime | None = None,
        until_time: datetime | None = None,
        line: str | None = None,
        verdict: str | None = None,
        part_id: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
        by_time: bool = False,
        after: tuple[float, int] | None = None,
    ) -> list[InspectionResult]:
        """Results matching every filter given, in seq order (`by_time`: by timestamp, then seq; `after`
        = (timestamp, seq) of the last row of the previous page: only the rows past it, in that order)."""
        clauses, args = [], []
        for col, op, val in (
            ("ts", ">=", since_time.timestamp() if since_time else None),
            ("ts", "<=", until_time.timestamp() if until_time else None),
            ("line", "=", line),
            ("verdict", "=", verdict),
            ("part_id", "=", part_id),
        ):
            if val is not None:
                clauses.append(f"{col} {op} ?")
                args.append(val)
        if after is not None:
            past = "<" if newest_first else ">"
            clauses.append(f"(ts {past} ? OR (ts = ? AND seq {past} ?))")
            args.extend([after[0], after[0], after[1]])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        keys = f"ts {order}, seq {order}" if by_time else f"seq {order}"
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM results {where} ORDER BY {keys} LIMIT ?", [*args, limit]
            ).fetchall()
        return [InspectionResult.from_json(r[0]) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # -- consumer cursors ------------------------------------------------------------------------
    def cursor(self, name: str) -> int:
        """Last seq the consumer `name` has been delivered (0 if it never was)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursors WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, name: str, seq: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO cursors(name, seq) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET seq=MAX(seq, excluded.seq)",
                (name, seq),
            )

    # -- retention -------------------------------------------------------------------------------
    def used_bytes(self) -> int:
        """Bytes of the database holding data (pages in use; the file may be larger until VACUUM)."""
        with self._lock:
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def enforce_retention(
        self,
        max_age_s: float | None = None,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        keep_after_cursors: Sequence[str] = (),
    ) -> int:
        """Delete the oldest results beyond the limits; returns how many were deleted.

        Results not yet delivered to a guaranteed consumer (seq above the lowest of the cursors named in
        `keep_after_cursors`) are never deleted, whatever the limits: an MES that is away gets every
        result later, and the journal outgrows its limits meanwhile (the caller logs that).
        Seq numbers are never reused (AUTOINCREMENT), so cursors stay valid. Freed pages are reused by
        new results, so the file stops growing once the size limit is reached.
        """
        deleted = 0
        with self._lock:
            floor = min((self.cursor(name) for name in keep_after_cursors), default=None)
            guard, guard_args = ("", ()) if floor is None else (" AND seq <= ?", (floor,))
            if max_age_s is not None:
                cutoff = time.time() - max_age_s
                deleted += self._db.execute(
                    f"DELETE FROM results WHERE ts < ?{guard}", (cutoff, *guard_args)
                ).rowcount
            if max_rows is not None:
                deleted += self._db.execute(
                    "DELETE FROM results WHERE seq <= (SELECT seq FROM results ORDER BY seq DESC "
                    f"LIMIT 1 OFFSET ?){guard}",
                    (max_rows, *guard_args),
                ).rowcount
            if max_bytes is not None:
                # delete the oldest 5 % at a time until the pages in use fit (or only protected rows remain)
                while self.used_bytes() > max_bytes:
                    total = self.count()
                    if total == 0:
                        break
                    chunk = max(1, total // 20)
                    removed = self._db.execute(
                        "DELETE FROM results WHERE seq IN (SELECT seq FROM results "
                        f"WHERE 1{guard} ORDER BY seq LIMIT ?)",
                        (*guard_args, chunk),
                    ).rowcount
                    deleted += removed
                    if removed == 0:
                        break
        return deleted

    # -- export ----------------------------------------------------------------------------------
    def export(
        self,
        out: TextIO,
        fmt: Literal["jsonl", "csv"] = "jsonl",
        *,
        since_seq: int = 0,
        since_time: datetime | None = None,
        line: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Write results with seq > `since_seq` (and timestamp >= `since_time`) to `out`; returns the count.

        JSONL: one full result body per line. CSV: one row per result with the main fields, and the reasons,
        defects and timings as JSON in their own columns.
        """
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        n = 0
        for result in self.iter_since(since_seq, line=line):
            if since_time is not None and result.timestamp < since_time:
                continue
            if writer is None:
                out.write(result.to_json() + "\n")
            else:
                writer.writerow(result_csv_row(result))
            n += 1
            if limit is not None and n >= limit:
                break
        return n

    # -- reviews and audit (written by the console; read by `dataset from-reviews` and the hub) --------
    def add_review(
        self,
        seq: int,
        decision: str,
        boxes: list[dict],
        reviewer: str,
        comment: str = "",
        not_localised: bool = False,
    ) -> dict:
        """Store a review of result `seq` (validated by the caller: `edge_agent.reviews.ReviewInput`).

        What changed (decision and boxes against the previous review, or against the model's counted
        defects for a first review) is computed here and kept with it. Raises KeyError for an unknown
        seq, ValueError for a decision that does not fit the result's verdict or contradicts its boxes
        (`edge_agent.reviews.boxes_error`)."""
        from edge_agent.reviews import box_changes, boxes_error, decision_error

        with self._lock:
            result = self.get(seq)
            if result is None:
                raise KeyError(f"no result with seq {seq} in the journal (retention may have deleted it)")
            problem = decision_error(decision, result.verdict) or boxes_error(decision, boxes, not_localised)
            if problem:
                raise ValueError(problem)
            previous = self.current_review(seq)
            if previous is not None:
                before, before_decision = previous["boxes"], previous["decision"]
            else:
                before = [
                    {"camera": d.camera, "class": d.class_name, "class_id": d.class_id, "xyxy": d.xyxy}
                    for d in result.defects
                    if d.counts_for_verdict
                ]
                before_decision = None
            changes = {"decision": [before_decision, decision], **box_changes(before, boxes)}
            ts = time.time()
            cur = self._db.execute(
                "INSERT INTO reviews(result_seq, result_id, line, verdict, decision, boxes, changes,"
                " comment, reviewer, ts, localised) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    seq,
                    result.result_id,
                    result.line,
                    result.verdict,
                    decision,
                    json.dumps(boxes, separators=(",", ":")),
                    json.dumps(changes, separators=(",", ":")),
                    comment,
                    reviewer,
                    ts,
                    0 if not_localised else 1,
                ),
            )
            review_id = int(cur.lastrowid or 0)
        return self._review_row_by_id(review_id)

    _REVIEW_COLUMNS = (
        "id, result_seq, result_id, line, verdict, decision, boxes, changes, comment, reviewer, ts, localised"
    )

    @staticmethod
    def _review_dict(row: Sequence) -> dict:
        keys = ResultJournal._REVIEW_COLUMNS.split(", ")
        out = dict(zip(keys, row))
        out["boxes"] = json.loads(out["boxes"])
        out["changes"] = json.loads(out["changes"])
        out["not_localised"] = not out.pop("localised")
        out["time"] = datetime.fromtimestamp(out["ts"], timezone.utc).isoformat(timespec="seconds")
        return out

    def _review_row_by_id(self, review_id: int) -> dict:
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._REVIEW_COLUMNS} FROM reviews WHERE id=?", (review_id,)
            ).fetchone()
        return self._review_dict(row)

    def current_review(self, seq: int) -> dict | None:
        """The newest review of result `seq` (its current truth), or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._REVIEW_COLUMNS} FROM reviews WHERE result_seq=? ORDER BY id DESC LIMIT 1",
                (seq,),
            ).fetchone()
        return self._review_dict(row) if row else None

    def review_history(self, seq: int) -> list[dict]:
        """Every review of result `seq`, oldest first: the audit trail."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._REVIEW_COLUMNS} FROM reviews WHERE result_seq=? ORDER BY id", (seq,)
            ).fetchall()
        return [self._review_dict(r) for r in rows]

    def reviews_since(self, cursor: int = 0, limit: int = 1000, line: str | None = None) -> list[dict]:
        """Review rows with id > `cursor`, oldest first (for consumers that keep a cursor, like the hub).

        Each row: id, result_seq, result_id, line, verdict (the machine's), decision, boxes (the corrected
        defects: camera, class, class_id, xyxy), changes, comment, reviewer, ts (epoch s), time (ISO)."""
        sql = f"SELECT {self._REVIEW_COLUMNS} FROM reviews WHERE id > ?"
        args: list[object] = [cursor]
        if line is not None:
            sql += " AND line = ?"
            args.append(line)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        return [self._review_dict(r) for r in rows]

    def current_reviews(self, line: str | None = None) -> list[dict]:
        """The current (newest) review of every reviewed result, by result seq."""
        where, args = ("WHERE line = ?", [line]) if line else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._REVIEW_COLUMNS} FROM reviews WHERE id IN "
                f"(SELECT MAX(id) FROM reviews {where} GROUP BY result_seq) ORDER BY result_seq",
                args,
            ).fetchall()
        return [self._review_dict(r) for r in rows]

    def review_counts(self) -> dict[str, dict[str, int]]:
        """Per line: reviewed results by current decision."""
        with self._lock:
            rows = self._db.execute(
                "SELECT line, decision, COUNT(*) FROM reviews WHERE id IN "
                "(SELECT MAX(id) FROM reviews GROUP BY result_seq) GROUP BY line, decision"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for line, decision, n in rows:
            out.setdefault(line, {})[decision] = int(n)
        return out

    def verdict_counts(self) -> dict[str, dict[str, int]]:
        """Per line: results in the journal by verdict (the denominators of review rates)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT line, verdict, COUNT(*) FROM results GROUP BY line, verdict"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for line, verdict, n in rows:
            out.setdefault(line, {})[verdict] = int(n)
        return out

    def add_audit(self, user: str, action: str, target: str, detail: dict) -> int:
        """Record a change made by a person (setup saved, version restored, login)."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO audit(ts, user, action, target, detail) VALUES (?,?,?,?,?)",
                (time.time(), user, action, target, json.dumps(detail, separators=(",", ":"))),
            )
        return int(cur.lastrowid or 0)

    def audit_log(self, action: str | None = None, target: str | None = None, limit: int = 100) -> list[dict]:
        """Newest audit entries first."""
        clauses, args = [], []
        for col, val in (("action", action), ("target", target)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, ts, user, action, target, detail FROM audit {where} ORDER BY id DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [
            {
                "id": r[0],
                "ts": r[1],
                "time": datetime.fromtimestamp(r[1], timezone.utc).isoformat(timespec="seconds"),
                "user": r[2],
                "action": r[3],
                "target": r[4],
                "detail": json.loads(r[5]),
            }
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_appended", False):
                _note_last_seq(self.path, self.journal_id, self.last_seq())
            self._db.close()


CSV_COLUMNS = (
    "seq",
    "timestamp",
    "site",
    "line",
    "part_id",
    "verdict",
    "recipe",
    "product_id",
    "meas_id",
    "job_id",
    "trigger",
    "model",
    "model_version",
    "n_defects",
    "reasons",
    "defects",
    "timings_ms",
    "result_id",
)


def result_csv_row(result: InspectionResult) -> list[object]:
    """One CSV row (see `CSV_COLUMNS`); lists and dicts as compact JSON."""
    return [
        result.seq,
        result.timestamp.isoformat(),
        result.site,
        result.line,
        result.part_id,
        result.verdict,
        result.recipe,
        result.product_id or "",
        result.meas_id or "",
        result.job_id or "",
        result.trigger,
        result.model.name,
        result.model.version,
        sum(d.counts_for_verdict for d in result.defects),
        json.dumps(result.reasons),
        json.dumps([d.model_dump(by_alias=True) for d in result.defects], separators=(",", ":")),
        json.dumps(result.timings_ms, separators=(",", ":")),
        result.result_id,
    ]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)

"""Work the hub asks of an agent (send one archived image, collect a dataset), queued in the database.

Agents take commands with their long poll (`GET /api/v1/commands`) and answer with a file. A command
taken and not answered within `retake_after_s` is handed out again (the agent may have restarted).
Answers are files under `<data_dir>/commands/`.

Example:
    >>> import tempfile, pathlib
    >>> from hub.store import HubStore
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> store = HubStore.open(str(d / "hub.sqlite"))
    >>> commands = Commands(store.db, d)
    >>> cid = commands.add("pc1", "image", {"line": "press", "seq": 7})
    >>> [c["kind"] for c in commands.take("pc1")], commands.take("pc1")
    (['image'], [])
    >>> commands.finish("pc1", cid, "done", b"\\xff\\xd8 jpeg bytes", "image/jpeg")
    >>> commands.get(cid)["status"], commands.answer_file(cid).read_bytes()[:2]
    ('done', b'\\xff\\xd8')
    >>> store.close()
"""

from __future__ import annotations

import json
import mimetypes
import time
from pathlib import Path
from typing import Any

from hub.db import Database


class Commands:
    def __init__(self, db: Database, data_dir: Path, retake_after_s: float = 120) -> None:
        self.db = db
        self.folder = Path(data_dir) / "commands"
        self.retake_after_s = retake_after_s

    def add(self, agent_id: str, kind: str, payload: dict[str, Any]) -> int:
        return self.db.insert_id(
            "INSERT INTO commands(agent_id, kind, payload, created_at, status) VALUES (?,?,?,?,?)",
            (agent_id, kind, json.dumps(payload), time.time(), "pending"),
        )

    def pending_count(self, agent_id: str) -> int:
        return int(
            self.db.scalar(
                "SELECT COUNT(*) FROM commands WHERE agent_id = ? AND status = 'pending'", (agent_id,)
            )
        )

    def take(self, agent_id: str) -> list[dict[str, Any]]:
        now = time.time()
        with self.db.transaction():
            rows = self.db.query_dicts(
                "SELECT id, kind, payload FROM commands WHERE agent_id = ? AND (status = 'pending' OR "
                "(status = 'taken' AND taken_at < ?)) ORDER BY id LIMIT 20",
                (agent_id, now - self.retake_after_s),
            )
            for r in rows:
                self.db.execute(
                    "UPDATE commands SET status = 'taken', taken_at = ? WHERE id = ?", (now, r["id"])
                )
        return [{"id": r["id"], "kind": r["kind"], **json.loads(r["payload"])} for r in rows]

    def finish(
        self,
        agent_id: str,
        command_id: int,
        status: str,
        body: bytes,
        content_type: str,
        error: str | None = None,
    ) -> None:
        owner = self.db.scalar("SELECT agent_id FROM commands WHERE id = ?", (command_id,))
        if owner != agent_id:
            raise KeyError(f"no command {command_id} for agent {agent_id}")
        result: dict[str, Any] = {"content_type": content_type, "error": error}
        if status == "done":
            self.folder.mkdir(parents=True, exist_ok=True)
            ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
            path = self.folder / f"{command_id}{ext}"
            tmp = path.with_suffix(".part")
            tmp.write_bytes(body)
            tmp.replace(path)
            result["file"] = str(path)
        else:
            status = "failed"
        self.db.execute(
            "UPDATE commands SET status = ?, done_at = ?, result = ? WHERE id = ?",
            (status, time.time(), json.dumps(result), command_id),
        )

    def get(self, command_id: int) -> dict[str, Any] | None:
        rows = self.db.query_dicts("SELECT * FROM commands WHERE id = ?", (command_id,))
        if not rows:
            return None
        r = rows[0]
        r["payload"] = json.loads(r["payload"])
        r["result"] = json.loads(r["result"]) if r["result"] else None
        return r

    def answer_file(self, command_id: int) -> Path | None:
        c = self.get(command_id)
        if c and c["status"] == "done" and c["result"] and c["result"].get("file"):
            return Path(c["result"]["file"])
        return None

    def wait(self, command_id: int, timeout: float) -> dict[str, Any] | None:
        """Block (poll) until the command is answered or `timeout` passes; the command row or None."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.get(command_id)
            if c is not None and c["status"] in ("done", "failed"):
                return c
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

"""Model rollout: publish a signed model to target lines, canary first, promote, roll back, history.

The hub decides *which model each line should run* (`assignments`: one row per line; no row = the
line's own model from its YAML). Agents read their lines' assignments in every heartbeat answer, pull
the file, check the manifest's ed25519 signature, the file's sha256 and that the manifest targets
their line, validate the model on the line's reference image (as hot reload does), switch, and report
`applied` or `failed: why`. Every step lands in `line_history`.

- `publish(...)`: the manifest (model sha256, card, target lines) is signed with the publisher's key
  (`contract.model_signing`); with a canary only that line is assigned (stage `canary`), otherwise
  every target (stage `complete`).
- `promote(rollout)`: the canary must have applied the model and its numbers must hold (enough parts on
  the new model *since this rollout applied it* — parts the same file inspected under an earlier rollout
  do not count — and an NG rate not clearly above the line's own rate before); then the rest are assigned.
  A canary that reported `failed` for this rollout is never promoted (except with `force`).
- A re-publish of a file whose stored copy is damaged replaces the copy (it is checked against its sha256
  every time), and is a new rollout: agents try it again even where the same sha256 failed before.
- `rollback(rollout)`: every line that runs this rollout goes back to what it ran before (the
  previous rollout, or its own model).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from contract.model_signing import file_sha256, sign_manifest, signer_of, verify_manifest
from hub.db import Database


class RolloutError(ValueError):
    """A rollout step the hub refuses; the message says why and what to do."""


def _line_key(target: str) -> tuple[str, str]:
    if target.count("/") != 1 or not all(target.split("/")):
        raise RolloutError(f"target {target!r} must be SITE/LINE")
    site, line = target.split("/")
    return site, line


class Rollouts:
    def __init__(self, db: Database, data_dir: Path) -> None:
        self.db = db
        self.models_dir = Path(data_dir) / "models"

    # -- publish ---------------------------------------------------------------------------------
    def publish(
        self,
        model_file: Path,
        card: dict[str, Any],
        targets: list[str],
        signing_key: Path,
        *,
        canary: str | None = None,
        created_by: str = "cli",
        public_key: Path | None = None,
    ) -> int:
        model_file = Path(model_file)
        if not model_file.is_file():
            raise RolloutError(f"model file {model_file} does not exist")
        if not targets:
            raise RolloutError("name at least one target line (--line SITE/LINE)")
        for t in targets:
            _line_key(t)
        if canary is not None and canary not in targets:
            targets = [canary, *targets]
        sha = file_sha256(model_file)
        manifest = {
            "manifest_version": 1,
            "model_sha256": sha,
            "size": model_file.stat().st_size,
            "name": str(card.get("name") or model_file.stem),
            "version": str(card.get("version") or card.get("model_version") or sha[:12]),
            "card": card,
            "target": {"lines": sorted(set(targets))},
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "signer": signer_of(signing_key),
        }
        signature = sign_manifest(manifest, signing_key)
        if public_key is not None:  # the publisher's own check that the agents' key matches
            verify_manifest(manifest, signature, [public_key])
        stored = self._store_file(model_file, sha)
        now = time.time()
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO models(sha256, name, version, card, size, file, uploaded_at) VALUES "
                "(?,?,?,?,?,?,?) "
                "ON CONFLICT (sha256) DO NOTHING",
                (
                    sha,
                    manifest["name"],
                    manifest["version"],
                    json.dumps(card),
                    manifest["size"],
                    str(stored),
                    now,
                ),
            )
            stage = "canary" if canary else "complete"
            rollout_id = self.db.insert_id(
                "INSERT INTO rollouts(sha256, manifest, signature, targets, canary, stage, created_by, "
                "created_at, "
                "updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    sha,
                    json.dumps(manifest),
                    signature,
                    json.dumps(manifest["target"]["lines"]),
                    canary,
                    stage,
                    created_by,
                    now,
                    now,
                ),
            )
            for target in [canary] if canary else manifest["target"]["lines"]:
                self._assign(target, rollout_id, sha, "assigned" + (" (canary)" if canary else ""))
        return rollout_id

    def _store_file(self, model_file: Path, sha: str) -> Path:
        """The hub's copy of the model, `<data_dir>/models/<sha256>.onnx`; a copy that is not (any more)
        what its name says (a damaged disk, a half copy, a hand edit) is replaced, never served again."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        stored = self.models_dir / f"{sha}.onnx"
        if stored.is_file() and file_sha256(stored) == sha:
            return stored
        tmp = stored.with_suffix(".part")
        shutil.copyfile(model_file, tmp)
        if file_sha256(tmp) != sha:
            tmp.unlink(missing_ok=True)
            raise RolloutError(f"{model_file} changed while it was being published; publish it again")
        tmp.replace(stored)
        return stored

    def _assign(self, target: str, rollout_id: int, sha: str, event: str) -> None:
        site, line = _line_key(target)
        previous = self.db.query(
            "SELECT rollout_id FROM assignments WHERE site = ? AND line = ?", (site, line)
        )
        self.db.execute(
            "INSERT INTO assignments(site, line, rollout_id, sha256, assigned_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT (site, line) DO UPDATE SET rollout_id = excluded.rollout_id, "
            "sha256 = excluded.sha256, assigned_at = excluded.assigned_at",
            (site, line, rollout_id, sha, time.time()),
        )
        self.history_event(
            site, line, event, rollout_id, sha, {"previous_rollout": previous[0][0] if previous else None}
        )

    def history_event(
        self,
        site: str,
        line: str,
        event: str,
        rollout_id: int | None,
        sha: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.db.execute(
            "INSERT INTO line_history(site, line, at, event, rollout_id, sha256, detail) VALUES "
            "(?,?,?,?,?,?,?)",
            (site, line, time.time(), event, rollout_id, sha, json.dumps(detail or {})),
        )

    # -- promote / rollback ----------------------------------------------------------------------
    def get(self, rollout_id: int) -> dict[str, Any]:
        rows = self.db.query_dicts("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            raise RolloutError(f"no rollout {rollout_id}")
        r = rows[0]
        r["targets"] = json.loads(r["targets"])
        r["manifest"] = json.loads(r["manifest"])
        return r

    def canary_numbers(self, rollout_id: int) -> dict[str, Any]:
        """The canary line's parts and NG rate on the new model vs. on what it ran before (7 days)."""
        r = self.get(rollout_id)
        if not r["canary"]:
            raise RolloutError(f"rollout {rollout_id} has no canary")
        site, line = _line_key(r["canary"])
        applied = self.db.query(
            "SELECT at, detail FROM line_history WHERE site = ? AND line = ? AND rollout_id = ? AND event "
            "= 'applied' ORDER BY id LIMIT 1",
            (site, line, rollout_id),
        )
        # results carry the agent's clock: the agent's own time of the switch (hub time for old agents)
        applied_at = None
        if applied:
            applied_at = json.loads(applied[0][1] or "{}").get("applied_at") or applied[0][0]
        ng_case = "SUM(CASE WHEN verdict = 'NG' THEN 1 ELSE 0 END)"
        new_parts, new_ng = (0, 0)
        if applied_at is not None:  # only parts since THIS rollout applied: not the same file's older ones
            new_parts, new_ng = self.db.query(
                f"SELECT COUNT(*), {ng_case} FROM results WHERE site = ? AND line = ? AND model_sha256 = ? "
                "AND ts >= ?",
                (site, line, r["sha256"], float(applied_at)),
            )[0]
        before = applied_at or time.time()
        old_parts, old_ng = self.db.query(
            f"SELECT COUNT(*), {ng_case} FROM results WHERE site = ? AND line = ? AND ts >= ? AND ts < ? "
            "AND (model_sha256 IS NULL OR model_sha256 <> ?)",
            (site, line, before - 7 * 86400, before, r["sha256"]),
        )[0]
        return {
            "canary": r["canary"],
            "applied_at": applied_at,
            "parts": int(new_parts or 0),
            "ng": int(new_ng or 0),
            "baseline_parts": int(old_parts or 0),
            "baseline_ng": int(old_ng or 0),
        }

    def promote(
        self, rollout_id: int, *, min_parts: int = 100, max_ng_increase: float = 0.02, force: bool = False
    ) -> list[str]:
        """Assign the rest of the targets once the canary holds; returns the lines newly assigned."""
        r = self.get(rollout_id)
        if r["stage"] != "canary":
            raise RolloutError(f"rollout {rollout_id} is {r['stage']}, not at its canary stage")
        if not force:
            status = self.line_status(rollout_id).get(r["canary"], {})
            if status.get("status") == "failed":
                raise RolloutError(
                    f"the canary {r['canary']} refused the model: {status.get('error') or 'see its history'} "
                    "(fix it and publish again, or roll back)"
                )
            n = self.canary_numbers(rollout_id)
            if n["applied_at"] is None:
                raise RolloutError(
                    f"the canary {r['canary']} has not applied the model yet (see `edge-inspect hub history`)"
                )
            if n["parts"] < min_parts:
                raise RolloutError(
                    f"the canary has inspected {n['parts']} parts on the new model; "
                    f"wait for {min_parts} (or --force)"
                )
            rate = n["ng"] / n["parts"]
            base = n["baseline_ng"] / n["baseline_parts"] if n["baseline_parts"] else None
            if base is not None:
                # more NG than before by more than the allowed margin and than chance explains
                se = math.sqrt(max(base * (1 - base), 1e-6) / n["parts"])
                if rate - base > max(max_ng_increase, 3 * se):
                    raise RolloutError(
                        f"the canary's NG rate is {rate:.1%} on the new model against {base:.1%} before: "
                        "the numbers do not hold (roll back, or --force)"
                    )
        assigned = []
        with self.db.transaction():
            for target in r["targets"]:
                if target != r["canary"]:
                    self._assign(target, rollout_id, r["sha256"], "assigned (promoted)")
                    assigned.append(target)
            self.db.execute(
                "UPDATE rollouts SET stage = 'promoted', updated_at = ? WHERE id = ?",
                (time.time(), rollout_id),
            )
        return assigned

    def rollback(self, rollout_id: int) -> list[tuple[str, int | None]]:
        """Every line running this rollout goes back to its previous assignment (or its own model)."""
        r = self.get(rollout_id)
        back: list[tuple[str, int | None]] = []
        with self.db.transaction():
            rows = self.db.query("SELECT site, line FROM assignments WHERE rollout_id = ?", (rollout_id,))
            for site, line in rows:
                previous = self._previous_rollout(site, line, rollout_id)
                if previous is None:
                    self.db.execute("DELETE FROM assignments WHERE site = ? AND line = ?", (site, line))
                    self.history_event(site, line, "rolled back (to the line's own model)", rollout_id, None)
                else:
                    sha = self.db.scalar("SELECT sha256 FROM rollouts WHERE id = ?", (previous,))
                    self.db.execute(
                        "UPDATE assignments SET rollout_id = ?, sha256 = ?, assigned_at = ? "
                        "WHERE site = ? AND line = ?",
                        (previous, sha, time.time(), site, line),
                    )
                    self.history_event(site, line, f"rolled back (to rollout {previous})", rollout_id, sha)
                back.append((f"{site}/{line}", previous))
            self.db.execute(
                "UPDATE rollouts SET stage = 'rolled_back', updated_at = ? WHERE id = ?",
                (time.time(), rollout_id),
            )
        if not back and r["stage"] == "rolled_back":
            raise RolloutError(f"rollout {rollout_id} was rolled back already")
        return back

    def _previous_rollout(self, site: str, line: str, rollout_id: int) -> int | None:
        """What the line was assigned before `rollout_id` was first assigned to it."""
        rows = self.db.query(
            "SELECT detail FROM line_history WHERE site = ? AND line = ? AND rollout_id = ? "
            "AND event LIKE 'assigned%' ORDER BY id LIMIT 1",
            (site, line, rollout_id),
        )
        if not rows:
            return None
        previous = json.loads(rows[0][0] or "{}").get("previous_rollout")
        if previous is None:
            return None
        stage = self.db.scalar("SELECT stage FROM rollouts WHERE id = ?", (previous,))
        return None if stage == "rolled_back" else int(previous)

    # -- what agents and people read -------------------------------------------------------------
    def desired_for_site(self, site: str) -> dict[str, dict[str, Any]]:
        """line -> {rollout_id, sha256, manifest, signature} for the lines of `site` with an assignment."""
        rows = self.db.query_dicts(
            "SELECT a.line, a.rollout_id, a.sha256, r.manifest, r.signature FROM assignments a "
            "JOIN rollouts r ON r.id = a.rollout_id WHERE a.site = ?",
            (site,),
        )
        return {
            r["line"]: {
                "rollout_id": r["rollout_id"],
                "sha256": r["sha256"],
                "manifest": json.loads(r["manifest"]),
                "signature": r["signature"],
            }
            for r in rows
        }

    def line_status(self, rollout_id: int) -> dict[str, dict[str, Any]]:
        """Where each target line of a rollout stands: `waiting` (for promotion), `assigned` (not applied
        yet), `applied`, `failed` (with the agent's reason), `rolled back`, `reverted`, `replaced` (a later
        rollout took the line), from the line's history and its current assignment."""
        r = self.get(rollout_id)
        events: dict[str, dict[str, Any]] = {}
        for site, line, event, detail, at in self.db.query(
            "SELECT site, line, event, detail, at FROM line_history WHERE rollout_id = ? ORDER BY id",
            (rollout_id,),
        ):
            events[f"{site}/{line}"] = {"event": str(event), "detail": json.loads(detail or "{}"), "at": at}
        current = {
            f"{site}/{line}": int(rid)
            for site, line, rid in self.db.query(
                "SELECT site, line, rollout_id FROM assignments WHERE site || '/' || line IN ("
                + ",".join("?" * len(r["targets"]))
                + ")",
                tuple(r["targets"]),
            )
        }
        out: dict[str, dict[str, Any]] = {}
        for target in r["targets"]:
            e = events.get(target)
            if e is None:
                status = "waiting" if r["stage"] == "canary" else "not assigned"
                out[target] = {"status": status, "error": None, "at": None}
                continue
            event = e["event"]
            if event.startswith("assigned"):
                status = "assigned"
            elif event.startswith("rolled back"):
                status = "rolled back"
            else:
                status = event  # applied, failed, reverted
            if status in ("assigned", "applied") and current.get(target) not in (None, rollout_id):
                status = "replaced"
            out[target] = {"status": status, "error": e["detail"].get("error"), "at": e["at"]}
        return out

    def history(self, site: str, line: str) -> list[dict[str, Any]]:
        rows = self.db.query_dicts(
            "SELECT h.at, h.event, h.rollout_id, h.sha256, h.detail, m.name, m.version FROM line_history h "
            "LEFT JOIN models m ON m.sha256 = h.sha256 WHERE h.site = ? AND h.line = ? ORDER BY h.id",
            (site, line),
        )
        for r in rows:
            r["detail"] = json.loads(r["detail"] or "{}")
        return rows

    def list(self) -> list[dict[str, Any]]:
        return self.db.query_dicts(
            "SELECT r.id, r.stage, r.canary, r.targets, r.created_at, m.name, m.version, r.sha256 "
            "FROM rollouts r JOIN models m ON m.sha256 = r.sha256 ORDER BY r.id DESC"
        )

    def model_file(self, sha: str) -> Path | None:
        path = self.db.scalar("SELECT file FROM models WHERE sha256 = ?", (sha,))
        return Path(path) if path else None

    def report(
        self,
        site: str,
        line: str,
        rollout_id: int | None,
        sha: str | None,
        status: str,
        error: str | None = None,
        applied_at: float | None = None,
    ) -> None:
        """An agent's report about a line's hub model: applied (at the agent's time `applied_at`), failed
        (why), reverted."""
        if status not in ("applied", "failed", "reverted"):
            raise RolloutError(f"unknown report status {status!r}")
        last = self.db.query(
            "SELECT event, rollout_id, sha256 FROM line_history WHERE site = ? AND line = ? ORDER BY id "
            "DESC LIMIT 1",
            (site, line),
        )
        if last and last[0] == (status, rollout_id, sha):
            return  # the same report again (a resend after a lost answer)
        detail: dict[str, Any] = {}
        if error:
            detail["error"] = error
        if applied_at is not None:
            detail["applied_at"] = float(applied_at)
        self.history_event(site, line, status, rollout_id, sha, detail)

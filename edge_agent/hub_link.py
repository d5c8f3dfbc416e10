"""The agent's link to the programme hub (`hub:` in the site file): registration, heartbeats, signed
model rollout, images and datasets on the hub's request. Results go to the hub separately, through an
ordinary `type: mes` publisher (acknowledged delivery, exactly once).

The agent always connects out (factories rarely allow inbound connections):

- **heartbeat thread**: registers, then every `heartbeat_s` tells the hub its lines' state, model and
  recipe. The answer names the model each line should run; the agent reconciles: pull the file, check
  the ed25519 signature of its manifest against `trusted_keys`, the file's sha256 and that the manifest
  targets this `site/line`, validate it on the line's reference image (the hot-reload check), switch,
  and report `applied` or `failed: why`. A model that fails any check never runs; the line keeps its
  model, the file (and its folder) is deleted. A refused model is not tried again for the same rollout;
  a new rollout (a re-publish, even of the same file) is a new attempt. No assignment for a line = its
  own model from its YAML (`reverted`).
- **command thread**: long-polls the hub for work: send one archived image, collect a dataset.

The models it switched to are kept in `models_dir` with their manifest (`state.json`); after a restart
each is verified again before it is used. One that fails (changed on disk, key no longer trusted) is
deleted, the line runs its own model, and the hub's history is told why once the agent is registered.
On a clean stop a last heartbeat says the lines have stopped.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config import HubLinkConfig

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

#: journal cursor of the reviews forwarded to the hub (review ids, not result seqs)
REVIEW_CURSOR = "hub-reviews"


class HubCallError(Exception):
    pass


class HubClient:
    """JSON over HTTP with the agent's bearer token (standard library only: no extra on a factory PC)."""

    def __init__(self, config: HubLinkConfig) -> None:
        self.base = config.url.rstrip("/")
        self.timeout = config.timeout_s
        self.token = Path(config.token_file).read_text().strip()
        if not self.token:
            raise ValueError(f"hub token file {config.token_file} is empty")

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[bytes, str]:
        req = urllib.request.Request(
            self.base + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.read(), resp.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise HubCallError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise HubCallError(f"{method} {path}: {getattr(exc, 'reason', exc)}") from exc

    def post_json(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        data, _ = self._request(
            "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}, timeout
        )
        return json.loads(data)

    def get_json(self, path: str, timeout: float | None = None) -> dict[str, Any]:
        data, _ = self._request("GET", path, timeout=timeout)
        return json.loads(data)

    def download(self, path: str, dest: Path) -> None:
        data, _ = self._request("GET", path, timeout=max(self.timeout, 120))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)

    def post_file(
        self, path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._request(
            "POST",
            path,
            body,
            {"Content-Type": content_type, **(headers or {})},
            timeout=max(self.timeout, 120),
        )


def _agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edge-inspect")
    except PackageNotFoundError:
        return "0+unknown"


class HubLink:
    """Owned by the `Agent`: `prepare()` before the lines are built, `start()` after, `stop()` first."""

    def __init__(self, agent: Agent, config: HubLinkConfig) -> None:
        self.agent = agent
        self.config = config
        self.site = agent.site
        self.agent_id = config.agent_id or agent.site
        self.models_dir = Path(config.models_dir)
        self.state_file = self.models_dir / "state.json"
        self.client: HubClient | None = None
        #: line -> {"status": applied|failed|reverted, "sha256", "rollout_id", "error"}
        self.line_state: dict[str, dict[str, Any]] = {}
        # line -> (sha, rollout) refused: not tried again for that rollout; a new rollout is a new attempt
        self._failed: dict[str, tuple[str, Any]] = {}
        self._unsent: list[dict[str, Any]] = []  # reports made before the hub could be told (at start)
        self._cards: dict[Path, tuple[float | None, dict[str, Any]]] = {}  # model.json by file, mtime
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.registered = False
        self.last_error: str | None = None
        self.heartbeats = 0

    # -- state on disk ---------------------------------------------------------------------------
    def _load_state(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("hub models state %s unreadable (%s): lines use their own models", self.state_file, exc)
            return {}

    def _save_state(self, state: dict[str, dict[str, Any]]) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.state_file)

    def prepare(self) -> dict[str, Path]:
        """The hub models to start the lines with, each verified again (signature, hash, target)."""
        from contract.model_signing import ModelSignatureError, check_model

        overrides: dict[str, Path] = {}
        state = self._load_state()
        kept: dict[str, dict[str, Any]] = {}
        for line, entry in state.items():
            path = Path(entry.get("path", ""))
            try:
                if not path.is_file():
                    raise ModelSignatureError(f"{path} is missing")
                check_model(
                    entry["manifest"], entry["signature"], path, self.site, line, self.config.trusted_keys
                )
            except (ModelSignatureError, KeyError) as exc:
                why = f"refused at start, the file was deleted and the line runs its own model: {exc}"
                log.error("hub model for line %s %s", line, why)
                self._discard(path)
                sha, rollout_id = entry.get("sha256"), entry.get("rollout_id")
                self.line_state[line] = {
                    "status": "failed",
                    "sha256": sha,
                    "rollout_id": rollout_id,
                    "error": why,
                }
                self._failed[line] = (str(sha), rollout_id)
                self._unsent.append(
                    {"line": line, "status": "failed", "sha256": sha, "rollout_id": rollout_id, "error": why}
                )
                continue
            overrides[line] = path
            kept[line] = entry
            self.line_state[line] = {
                "status": "applied",
                "sha256": entry["sha256"],
                "rollout_id": entry.get("rollout_id"),
                "error": None,
            }
        if kept != state:
            self._save_state(kept)  # a refused entry is gone: nothing points at a deleted file
        return overrides

    def _discard(self, model_file: Path) -> None:
        """Delete a pulled model that must not run, its card, and the folders left empty (only inside
        `models_dir`: a state file naming another path deletes nothing)."""
        root = self.models_dir.resolve()
        target = model_file.resolve()
        if target == root or not target.is_relative_to(root):
            return
        folder = model_file.parent
        for f in (
            model_file,
            folder / "model.card.json",
            model_file.with_suffix(model_file.suffix + ".part"),
        ):
            with contextlib.suppress(OSError):
                f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder = folder.resolve()
            while folder != root and folder.is_relative_to(root) and not any(folder.iterdir()):
                folder.rmdir()  # <line>/<sha>/ and then <line>/ when nothing else is in it
                folder = folder.parent

    # -- threads ---------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.client = HubClient(self.config)
        except (OSError, ValueError) as exc:
            self.last_error = f"hub link off: {exc}"
            log.error(self.last_error)
            return
        for target, name in ((self._heartbeat_loop, "hub-heartbeat"), (self._command_loop, "hub-commands")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            # the command thread may sit in a long poll: it is a daemon and ends with its request
            t.join(timeout if t.name == "hub-heartbeat" else 0.1)
        if self.client is not None and self.registered:
            # a clean stop says so: the dashboard must not show "running" for a line that stopped
            try:
                self.client.post_json("/api/v1/heartbeat", self._payload(state="stopped"), timeout=2.0)
            except HubCallError as exc:
                log.warning("hub: the last heartbeat (lines stopped) was not delivered: %s", exc)

    def _model_card(self, line: str, model: dict[str, Any]) -> tuple[str, str] | None:
        """The model card's (name, version) of what `line` runs: a hub model's signed manifest, else the
        `model.json` next to the line's own model file (its `version`, else the sha256's first 12 digits,
        as `hub publish` names it). None without a card: the file's own metadata is all there is."""
        sha = str(model.get("sha256") or "")
        if line in self.agent.model_overrides:
            entry = self._load_state().get(line) or {}
            manifest = entry.get("manifest") or {}
            if entry.get("sha256") == sha and manifest.get("name"):
                return str(manifest["name"]), str(manifest.get("version") or sha[:12])
            return None
        try:
            card_file = Path(self.agent.lines[line].config.model.path).with_name("model.json")
        except (AttributeError, KeyError):
            return None
        cached = self._cards.get(card_file)
        stamp = card_file.stat().st_mtime if card_file.is_file() else None
        if cached is None or cached[0] != stamp:
            card: dict[str, Any] = {}
            if stamp is not None:
                with contextlib.suppress(OSError, ValueError):
                    card = json.loads(card_file.read_text())
            cached = (stamp, card if isinstance(card, dict) else {})
            self._cards[card_file] = cached
        card = cached[1]
        if not card.get("name"):
            return None
        return str(card["name"]), str(card.get("version") or card.get("model_version") or sha[:12])

    def _payload(self, state: str | None = None) -> dict[str, Any]:
        lines = {}
        for name, line in list(self.agent.lines.items()):
            s = line.status()
            model = dict(s["model"] or {})
            card = self._model_card(name, model) if model else None
            if card is not None:  # the dashboard shows the card, not the file's export date
                model["file_version"] = model.get("version")
                model["name"], model["version"] = card
            lines[name] = {
                "state": state or s["state"],
                "recipe": s["recipe"],
                "model": model,
                "counts": s["counts"],
                "hub_model": self.line_state.get(name),
            }
        return {
            "site": self.site,
            "version": _agent_version(),
            "boot_id": self.agent.boot_id,
            "hostname": socket.gethostname(),
            "heartbeat_s": self.config.heartbeat_s,
            "lines": lines,
        }

    def heartbeat_once(self) -> dict[str, Any]:
        assert self.client is not None
        path = "/api/v1/heartbeat" if self.registered else "/api/v1/register"
        answer = self.client.post_json(path, self._payload())
        self.registered = True
        self.heartbeats += 1
        for report in list(self._unsent):  # what happened before the hub could hear it (refused at start)
            try:
                self.client.post_json("/api/v1/models/report", report)
            except HubCallError as exc:  # tried again with the next heartbeat; the state travels anyway
                log.warning("hub: report for line %s not delivered: %s", report["line"], exc)
                break
            self._unsent.remove(report)
        self.reconcile(answer.get("desired") or {})
        self.send_reviews()
        return answer

    def send_reviews(self, batch: int = 500) -> int:
        """Forward the console's reviews (journal `reviews`, by id) since the last acknowledged one."""
        journal = self.agent.journal
        if self.client is None or journal is None or not hasattr(journal, "reviews_since"):
            return 0
        sent = 0
        while True:
            cursor = journal.cursor(REVIEW_CURSOR)
            rows = journal.reviews_since(cursor, limit=batch)
            if not rows:
                return sent
            events = [
                {
                    "result_id": r["result_id"],
                    "line": r["line"],
                    "review": r["decision"],
                    "verdict": r["verdict"],
                    "reviewed_at": r["ts"],
                }
                for r in rows
            ]
            self.client.post_json("/api/v1/reviews", {"events": events})
            journal.set_cursor(REVIEW_CURSOR, max(int(r["id"]) for r in rows))  # after the hub stored them
            sent += len(rows)

    def _heartbeat_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.heartbeat_once()
                self.last_error = None
                backoff = 1.0
                wait = self.config.heartbeat_s
            except HubCallError as exc:  # hub away: the agent inspects on; try again with back-off
                self.last_error = str(exc)
                log.warning("hub: %s", exc)
                wait = backoff
                backoff = min(backoff * 2, max(self.config.heartbeat_s, 60.0))
            except Exception:
                log.exception("hub heartbeat failed")
                wait = self.config.heartbeat_s
            self._stop.wait(wait)

    def _command_loop(self) -> None:
        assert self.client is not None
        while not self._stop.is_set():
            if not self.registered:
                self._stop.wait(0.5)
                continue
            try:
                answer = self.client.get_json(
                    f"/api/v1/commands?wait={self.config.command_poll_s:g}",
                    timeout=self.config.command_poll_s + self.config.timeout_s,
                )
                for command in answer.get("commands", []):
                    self._run_command(command)
            except HubCallError as exc:
                log.warning("hub commands: %s", exc)
                self._stop.wait(2.0)
            except Exception:
                log.exception("hub command failed")
                self._stop.wait(2.0)

    # -- model rollout ---------------------------------------------------------------------------
    def reconcile(self, desired: dict[str, dict[str, Any]]) -> None:
        """Make every line run what the hub assigns (or its own model where nothing is assigned)."""
        state = self._load_state()
        for name in list(self.agent.lines):
            want = desired.get(name)
            have = state.get(name)
            if want is None:
                if have is not None:
                    self._revert(name, state)
                continue
            if (
                have is not None
                and have.get("sha256") == want["sha256"]
                and name in self.agent.model_overrides
            ):
                if have.get("rollout_id") != want.get("rollout_id"):
                    self._adopt(name, want, state)  # the same file under a new rollout
                continue  # running it already
            if self._failed.get(name) == (want["sha256"], want.get("rollout_id")):
                continue  # this rollout was refused already (and reported); a new rollout is a new attempt
            self._apply(name, want, state)

    def _adopt(self, line: str, want: dict[str, Any], state: dict[str, dict[str, Any]]) -> None:
        """The running file was published again (a new rollout): check the new manifest, nothing to load;
        the new rollout counts as applied from now (its canary counts parts from now)."""
        from contract.model_signing import ModelSignatureError, check_model

        sha, rollout_id = str(want["sha256"]), want.get("rollout_id")
        manifest, signature = want.get("manifest") or {}, str(want.get("signature") or "")
        entry = state[line]
        try:
            if manifest.get("model_sha256") != sha:
                raise ModelSignatureError("the assignment's sha256 is not the signed manifest's")
            check_model(manifest, signature, Path(entry["path"]), self.site, line, self.config.trusted_keys)
        except (ModelSignatureError, OSError) as exc:
            self._failed[line] = (sha, rollout_id)
            self._report(line, "failed", sha, rollout_id, f"{exc} (the line keeps running this file)")
            return
        now = time.time()
        state[line] = {
            **entry,
            "rollout_id": rollout_id,
            "manifest": manifest,
            "signature": signature,
            "applied_at": now,
        }
        self._save_state(state)
        self._failed.pop(line, None)
        log.info("line %s: hub model %s already running, now as rollout %s", line, sha[:16], rollout_id)
        self._report(line, "applied", sha, rollout_id, None, applied_at=now)

    def _report(
        self,
        line: str,
        status: str,
        sha: str | None,
        rollout_id: int | None,
        error: str | None,
        applied_at: float | None = None,
    ) -> None:
        self.line_state[line] = {"status": status, "sha256": sha, "rollout_id": rollout_id, "error": error}
        if self.client is None:
            return
        report = {"line": line, "status": status, "sha256": sha, "rollout_id": rollout_id, "error": error}
        if applied_at is not None:
            report["applied_at"] = applied_at
        try:
            self.client.post_json("/api/v1/models/report", report)
        except HubCallError as exc:  # the next heartbeat carries the same state anyway
            log.warning("hub: report for line %s not delivered: %s", line, exc)

    def _apply(self, line: str, want: dict[str, Any], state: dict[str, dict[str, Any]]) -> None:
        from contract.model_signing import ModelSignatureError, check_model
        from edge_agent.inspector import InspectorLoadError

        assert self.client is not None
        sha, rollout_id = str(want["sha256"]), want.get("rollout_id")
        manifest, signature = want.get("manifest") or {}, str(want.get("signature") or "")
        name = str(manifest.get("name") or "model").replace("/", "_") or "model"
        dest = self.models_dir / line / sha[:16] / f"{name}.onnx"
        try:
            # the signature first: an unsigned or foreign manifest is not even downloaded
            from contract.model_signing import verify_manifest

            verify_manifest(manifest, signature, self.config.trusted_keys)
            if manifest.get("model_sha256") != sha:
                raise ModelSignatureError("the assignment's sha256 is not the signed manifest's")
            if not dest.is_file():
                self.client.download(f"/api/v1/models/{sha}", dest)
            check_model(manifest, signature, dest, self.site, line, self.config.trusted_keys)
            (dest.parent / "model.card.json").write_text(json.dumps(manifest.get("card") or {}, indent=1))
            applied_at = time.time()  # results carry this clock: the canary gate counts parts from here
            self.agent.switch_model(line, dest)  # validates on the reference image; raises if it fails
        except (ModelSignatureError, InspectorLoadError, HubCallError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
            log.error(
                "line %s: model %s from the hub refused, the running model stays: %s", line, sha[:16], why
            )
            self._failed[line] = (sha, rollout_id)
            if (state.get(line) or {}).get("path") != str(dest):  # never keep a file that failed its checks
                self._discard(dest)
            self._report(line, "failed", sha, rollout_id, why)
            return
        state[line] = {
            "sha256": sha,
            "rollout_id": rollout_id,
            "path": str(dest),
            "manifest": manifest,
            "signature": signature,
            "applied_at": time.time(),
        }
        self._save_state(state)
        self._failed.pop(line, None)
        log.info("line %s: switched to hub model %s (rollout %s)", line, sha[:16], rollout_id)
        self._report(line, "applied", sha, rollout_id, None, applied_at=applied_at)

    def _revert(self, line: str, state: dict[str, dict[str, Any]]) -> None:
        from edge_agent.inspector import InspectorLoadError

        old = state.get(line) or {}
        try:
            self.agent.switch_model(line, None)
        except InspectorLoadError as exc:
            self._report(line, "failed", None, None, f"going back to the line's own model failed: {exc}")
            return
        state.pop(line, None)
        self._save_state(state)
        self._failed.pop(line, None)
        log.info("line %s: back to its own model (hub assignment removed)", line)
        self._report(line, "reverted", None, old.get("rollout_id"), None)

    # -- commands --------------------------------------------------------------------------------
    def _run_command(self, command: dict[str, Any]) -> None:
        assert self.client is not None
        path = f"/api/v1/commands/{int(command['id'])}/result"
        try:
            if command["kind"] == "image":
                body, content_type = self._archived_image(command)
            elif command["kind"] == "collect":
                body, content_type = self._collect(command), "application/zip"
            else:
                raise LookupError(f"unknown command {command['kind']!r} (agent {_agent_version()})")
        except LookupError as exc:
            self.client.post_file(path, b"", "text/plain", {"X-Status": "failed", "X-Error": str(exc)[:500]})
            return
        self.client.post_file(path, body, content_type)

    def _archive_root(self) -> Path:
        return Path(self.agent.config.site.archive.path)

    def _archived_files(self, line: str, seq: int, timestamp: str | None) -> list[Path]:
        from contract.archive_layout import line_folder, seq_pattern

        root = line_folder(self._archive_root(), line)
        days = [timestamp[:10]] if timestamp else []
        found: list[Path] = []
        for day in days or ["*"]:
            found = sorted(root.glob(f"{day}/{seq_pattern(seq)}"))
            if found:
                break
        return found

    def _archived_image(self, command: dict[str, Any]) -> tuple[bytes, str]:
        line, seq = str(command["line"]), int(command["seq"])
        files = self._archived_files(line, seq, command.get("timestamp"))
        if not files:
            raise LookupError(
                f"no archived image of {line} seq {seq} (OK parts are sampled; the archive "
                "quota may have removed it)"
            )
        annotated = [f for f in files if f.stem.endswith("_annotated")]
        raw = [f for f in files if not f.stem.endswith("_annotated")]
        want_annotated = command.get("annotated", True)
        journal, result = self.agent.journal, None
        if journal is not None and want_annotated and not annotated and raw:
            result = journal.get(seq)
        if result is not None and result.line == line:
            # no copy written at inspection time (`archive.annotated: false`): drawn now from the journal
            from edge_agent.archive import annotated_file

            for frame in result.frames:
                found = annotated_file(self._archive_root(), result, frame.camera)
                if found is not None:
                    return found[0], "image/png" if found[1].endswith(".png") else "image/jpeg"
        chosen = (annotated if want_annotated and annotated else raw or files)[0]
        return chosen.read_bytes(), "image/png" if chosen.suffix == ".png" else "image/jpeg"

    def _collect(self, command: dict[str, Any]) -> bytes:
        """A zip of images and YOLO labels for the selection (see `edge_agent.hub_collect`)."""
        from edge_agent.hub_collect import collect_zip

        assert self.agent.journal is not None
        return collect_zip(self.agent, command)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()

"""`edge-inspect hub collect`: reviewed / uncertain / NG images with their labels, gathered from the
agents into one YOLO dataset that `edge-inspect dataset import --format yolo` (then `train`) takes.

The hub queues one `collect` command per agent of the chosen company (or line); each agent answers
its long poll with a zip (`edge_agent.hub_collect`). The zips are merged: class names are unified by
name across agents, images keep their origin in the name (`<site>__<line>__<seq>__<camera>`), and
`collect_report.json` lists per agent what came and what could not (with why).
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml

from hub.commands import Commands
from hub.registry import Registry


class CollectError(ValueError):
    pass


def start_collect(
    registry: Registry,
    commands: Commands,
    *,
    company: str | None,
    line: str | None,
    selection: list[str],
    limit: int,
) -> dict[str, int]:
    """Queue the command for every agent concerned; returns agent_id -> command id."""
    if not selection:
        raise CollectError("choose what to collect: --reviewed, --uncertain and/or --ng")
    targets: dict[str, list[str]] = {}
    for ln in registry.lines(company=company):
        if line is not None and f"{ln['site']}/{ln['line']}" != line:
            continue
        targets.setdefault(ln["agent_id"], []).append(ln["line"])
    if not targets:
        raise CollectError(f"no registered line matches company={company!r} line={line!r}")
    return {
        agent_id: commands.add(agent_id, "collect", {"selection": selection, "lines": lines, "limit": limit})
        for agent_id, lines in targets.items()
    }


def wait_collect(
    commands: Commands, command_ids: dict[str, int], timeout: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(command_ids):
        for agent_id, cid in command_ids.items():
            if agent_id not in done:
                c = commands.get(cid)
                if c is not None and c["status"] in ("done", "failed"):
                    done[agent_id] = c
        if len(done) < len(command_ids):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    for agent_id, cid in command_ids.items():
        done.setdefault(agent_id, {"id": cid, "status": "timed out", "result": None})
    return done


def assemble(answers: dict[str, dict[str, Any]], out: Path) -> dict[str, Any]:
    """Merge the agents' zips into `out` (images/, labels/, data.yaml, collect_report.json)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CollectError(f"{out} is not empty; give a new folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    report: dict[str, Any] = {"agents": {}, "images": 0, "boxes": 0}
    for agent_id, answer in sorted(answers.items()):
        entry: dict[str, Any] = {"status": answer["status"]}
        report["agents"][agent_id] = entry
        if answer["status"] != "done":
            entry["error"] = (answer.get("result") or {}).get("error") or answer["status"]
            continue
        with zipfile.ZipFile(answer["result"]["file"]) as z:
            classes = {int(k): v for k, v in json.loads(z.read("classes.json")).items()}
            remap = {}
            for cid, name in classes.items():
                if name not in names:
                    names.append(name)
                remap[cid] = names.index(name)
            items = [json.loads(x) for x in z.read("items.jsonl").decode().splitlines() if x.strip()]
            entry["missing"] = [
                json.loads(x) for x in z.read("missing.jsonl").decode().splitlines() if x.strip()
            ]
            for item in items:
                image = item["image"]
                stem = Path(image).stem
                with z.open(image) as src, open(out / "images" / Path(image).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                lines = []
                for row in z.read(f"labels/{stem}.txt").decode().splitlines():
                    if row.strip():
                        cid, *rest = row.split()
                        lines.append(" ".join([str(remap.get(int(cid), int(cid))), *rest]))
                (out / "labels" / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                report["boxes"] += len(lines)
            entry["images"] = len(items)
            entry["by_selection"] = {
                s: sum(1 for i in items if i["selection"] == s) for s in {i["selection"] for i in items}
            }
            report["images"] += len(items)
    report["classes"] = names
    (out / "data.yaml").write_text(
        yaml.safe_dump({"path": str(out.resolve()), "names": dict(enumerate(names))})
    )
    (out / "collect_report.json").write_text(json.dumps(report, indent=1))
    return report

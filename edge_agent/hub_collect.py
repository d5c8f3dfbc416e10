"""The agent's answer to the hub's `collect` command: a zip of images with YOLO labels.

Selections (any combination):

- `reviewed`: parts a person reviewed on the line console (journal reviews). Labels are the reviewer's
  boxes, written by `contract.yolo_labels` as `dataset from-reviews` writes them (clipped to the image);
  a false reject becomes a background image (no boxes), an escape gets the boxes drawn by the reviewer.
  Reviews whose boxes contradict their decision, and NG parts marked "not localised", are not sent
  (missing.jsonl says why: `edge_agent.reviews.export_problem`). Needs the console's reviews in the
  journal (`ResultJournal.current_reviews`).
- `uncertain`: parts the model was unsure about, kept by the capture archive (`capture:` in the site
  file; sidecar `*.capture.json` with reason `uncertain`). Labels are the model's boxes, to be checked.
- `ng`: archived NG parts, labelled with the defects that made them NG (the model's boxes).

Zip layout: `images/<site>__<line>__<seq>__<camera>.<ext>`, `labels/<same>.txt` (YOLO: class cx cy w
h, normalised), `classes.json` (id -> name, the model's), `items.jsonl` (one line per image: where it
came from and why), `missing.jsonl` (what was selected but could not be sent, and why).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.yolo_labels import label_text, review_labels

if TYPE_CHECKING:
    from edge_agent.agent import Agent

SELECTIONS = ("reviewed", "uncertain", "ng")


class _Zip:
    def __init__(self, site: str) -> None:
        self.site = site
        self.buffer = io.BytesIO()
        self.zip = zipfile.ZipFile(self.buffer, "w", zipfile.ZIP_DEFLATED)
        self.items: list[dict[str, Any]] = []
        self.missing: list[dict[str, Any]] = []
        self.classes: dict[int, str] = {}
        self.seen: set[str] = set()

    def add(
        self, line: str, seq: int, camera: str, image: Path, labels: list[str], why: dict[str, Any]
    ) -> None:
        stem = f"{self.site}__{line}__{seq}__{camera}"
        if stem in self.seen:  # one image once, whichever selection found it first
            return
        self.seen.add(stem)
        self.zip.write(image, f"images/{stem}{image.suffix}")
        self.zip.writestr(f"labels/{stem}.txt", label_text(labels))
        self.items.append(
            {
                "image": f"images/{stem}{image.suffix}",
                "line": line,
                "seq": seq,
                "camera": camera,
                "boxes": len(labels),
                **why,
            }
        )

    def close(self) -> bytes:
        self.zip.writestr("classes.json", json.dumps({str(k): v for k, v in sorted(self.classes.items())}))
        self.zip.writestr("items.jsonl", "".join(json.dumps(i) + "\n" for i in self.items))
        self.zip.writestr("missing.jsonl", "".join(json.dumps(m) + "\n" for m in self.missing))
        self.zip.close()
        return self.buffer.getvalue()


def _raw_images(archive_root: Path, line: str, seq: int, day: str) -> dict[str, Path]:
    """camera -> the raw (not annotated) archived image of result `seq`."""
    from contract.archive_layout import line_folder, seq_pattern

    out = {}
    for path in sorted((line_folder(archive_root, line) / day).glob(seq_pattern(seq))):
        if path.stem.endswith("_annotated") or path.suffix == ".json":
            continue
        out[path.stem.rsplit("_", 1)[-1]] = path
    return out


def collect_zip(agent: Agent, command: dict[str, Any]) -> bytes:
    selection = [s for s in command.get("selection", []) if s in SELECTIONS]
    lines = [ln for ln in (command.get("lines") or list(agent.lines)) if ln in agent.lines]
    limit = int(command.get("limit") or 1000)
    out = _Zip(agent.site)
    for name in lines:
        inspector = agent.lines[name]._inspector
        if inspector is not None:
            out.classes.update({int(k): str(v) for k, v in inspector.names.items()})
    journal = agent.journal
    assert journal is not None
    archive_root = Path(agent.config.site.archive.path)
    for line in lines:
        if "reviewed" in selection:
            current_reviews = getattr(journal, "current_reviews", None)
            if current_reviews is None:
                out.missing.append(
                    {
                        "line": line,
                        "selection": "reviewed",
                        "why": "this agent's journal has no reviews (no line console)",
                    }
                )
            else:
                for review in current_reviews(line=line)[:limit]:
                    _add_reviewed(out, journal, archive_root, line, review)
        if "uncertain" in selection:
            _add_uncertain(out, agent, line, limit)
        if "ng" in selection:
            for result in journal.query(line=line, verdict="NG", newest_first=True, limit=limit):
                _add_result(out, archive_root, result, "ng", None, None)
    return out.close()


def _add_result(
    out: _Zip, archive_root: Path, result: Any, kind: str, boxes: list[dict] | None, review: str | None
) -> None:
    assert result.seq is not None
    images = _raw_images(archive_root, result.line, result.seq, result.timestamp.strftime("%Y-%m-%d"))
    if not images:
        out.missing.append(
            {
                "line": result.line,
                "seq": result.seq,
                "selection": kind,
                "why": "no archived image (archive quota, or an OK part not sampled)",
            }
        )
        return
    sizes = {f.camera: (f.width, f.height) for f in result.frames}
    for camera, path in images.items():
        if camera not in sizes:
            continue
        width, height = sizes[camera]
        if boxes is None:  # the model's boxes that made the verdict
            boxes_here = [
                {"camera": camera, "class": d.class_name, "class_id": d.class_id, "xyxy": d.xyxy}
                for d in result.defects
                if d.camera == camera and d.counts_for_verdict
            ]
            labelled = {"decision": "model", "boxes": boxes_here}
        else:
            boxes_here = [b for b in boxes if b["camera"] == camera]
            labelled = {"decision": review, "boxes": boxes_here}
        for b in boxes_here:
            out.classes.setdefault(int(b["class_id"]), str(b["class"]))
        labels = review_labels(labelled, camera, width, height)
        out.add(
            result.line,
            result.seq,
            camera,
            path,
            labels,
            {
                "selection": kind,
                "result_id": result.result_id,
                "review": review,
                "model": result.model.version,
            },
        )


def _add_reviewed(out: _Zip, journal: Any, archive_root: Path, line: str, review: dict[str, Any]) -> None:
    result = journal.get(int(review["result_seq"]))
    if result is None:
        out.missing.append(
            {
                "line": line,
                "seq": review["result_seq"],
                "selection": "reviewed",
                "why": "the result left the journal (retention)",
            }
        )
        return
    from edge_agent.reviews import export_problem

    problem = export_problem(review)
    if problem is not None:
        out.missing.append(
            {
                "line": line,
                "seq": review["result_seq"],
                "selection": "reviewed",
                "decision": review["decision"],
                "why": f"{problem[0]}: {problem[1]}",
            }
        )
        return
    boxes = list(review.get("boxes") or [])
    _add_result(out, archive_root, result, "reviewed", boxes, str(review["decision"]))


def _add_uncertain(out: _Zip, agent: Agent, line: str, limit: int) -> None:
    """Parts in the capture archive whose sidecar says `uncertain` (the models' capture feature)."""
    from contract.archive_layout import line_folder

    capture = getattr(agent.config.site, "capture", None)
    root = Path(capture.path) if capture is not None and getattr(capture, "path", None) else None
    if root is None or not root.is_dir():
        out.missing.append(
            {
                "line": line,
                "selection": "uncertain",
                "why": "this agent keeps no capture archive of uncertain parts (capture:)",
            }
        )
        return
    sidecars = sorted(line_folder(root, line).glob("*/*.capture.json"), reverse=True)
    taken = 0
    for sidecar in sidecars:
        if taken >= limit:
            break
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            out.missing.append({"line": line, "selection": "uncertain", "why": f"{sidecar.name} unreadable"})
            continue
        if meta.get("reason") != "uncertain":
            continue
        raw = meta.get("classes") or []
        names = (
            {int(k): str(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {i: str(n) for i, n in enumerate(raw)}
        )
        ids = {n: i for i, n in names.items()}
        for i, n in names.items():
            out.classes.setdefault(i, n)
        for camera, cam in (meta.get("cameras") or {}).items():
            image = sidecar.parent / str(cam.get("file", ""))
            if not image.is_file():
                continue
            found = [
                {"camera": camera, "class": d["class"], "class_id": ids[d["class"]], "xyxy": d["xyxy"]}
                for d in cam.get("detections", [])
                if d.get("class") in ids
            ]
            labels = review_labels(
                {"decision": "model", "boxes": found}, camera, int(cam["width"]), int(cam["height"])
            )
            out.add(
                line,
                int(meta.get("seq", 0)),
                camera,
                image,
                labels,
                {"selection": "uncertain", "best_confidence": meta.get("best_confidence")},
            )
        taken += 1

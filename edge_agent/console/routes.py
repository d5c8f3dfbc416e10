"""The console's routes: pages (server-rendered Jinja2), JSON, live events (SSE) and image files.

Roles: viewer reads everything; operator also reviews results; integrator also changes the setup; the
site file's `line_control_role` stops/starts a line. Each route declares its role once (`web.access`);
`contract.web.WebGuard` checks the login, that role, and the session's CSRF token on every write.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from contract.login_throttle import LoginRefused
from contract.result import InspectionResult
from contract.web import WebGuard, public
from edge_agent.console.setup import (
    RecipeSetup,
    SetupError,
    apply_setup,
    unified_diff,
    validate_line_text,
    what_if,
    write_atomically,
)
from edge_agent.console.store import SAFE_NAME, BadQuery, ResultFilter
from edge_agent.console.web import (
    TEMPLATES,
    HttpError,
    access,
    console_of,
    int_param,
    not_found,
    refusal_page,
)
from edge_agent.inspector import with_anomaly_rule
from edge_agent.reviews import DECISIONS, ReviewInput

STATIC = Path(__file__).parent / "static"
MAX_BODY = 256 * 1024

log = logging.getLogger(__name__)


# -- helpers -------------------------------------------------------------------------------------------------
def _page(request: Request, name: str, **context: Any) -> Response:
    console = console_of(request)
    return TEMPLATES.TemplateResponse(
        request, name, {**console.page_context(request, request.state.user), **context}
    )


def _line(request: Request, name: str | None = None) -> str:
    console = console_of(request)
    name = name if name is not None else request.path_params["line"]
    if name not in console.agent.lines:
        raise not_found(f"no line {name!r} on this agent; lines: {', '.join(console.line_names()) or 'none'}")
    return name


def _result(request: Request) -> InspectionResult:
    seq = request.path_params["seq"]
    result = console_of(request).reader.get(seq)
    if result is None:
        raise not_found(f"no result #{seq} in the journal (retention may have deleted it)")
    return result


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HttpError(413, f"request body over {MAX_BODY // 1024} KiB")
    try:
        return json.loads(body or b"null")
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}") from None


def _validation_details(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]


def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise HttpError(400, f"{name}: {value!r} is not a date/time like 2026-12-02T08:00") from None
    return t if t.tzinfo else t.astimezone()  # a browser's datetime-local is local time


def _result_view(result: InspectionResult) -> dict[str, Any]:
    return json.loads(result.to_json())


# -- pages ---------------------------------------------------------------------------------------------------
@access("viewer")
def overview_page(request: Request) -> Response:
    return _page(request, "overview.html", overview=console_of(request).overview(), page="overview")


@access("viewer")
def line_page(request: Request) -> Response:
    console = console_of(request)
    name = _line(request)
    line = console.agent.lines[name]
    rules = {r: rec.model_dump() for r, rec in line.config.recipes.items()}
    return _page(
        request,
        "line.html",
        page="line",
        line=name,
        cameras=[c.name for c in line.config.cameras],
        overview=console.overview()["lines"][name],
        rules_json=json.dumps(rules),
        stale_after_s=console.config.stale_after_s,
    )


@access("viewer")
def operator_page(request: Request) -> Response:
    """Operator mode: every line (or ?line=A&line=B) on one screen, banner, frames and counters fitted to
    it, the last NG parts, shift handover, trigger/verdict I/O and, for the roles allowed, stop/start."""
    console = console_of(request)
    names = request.query_params.getlist("line") or console.line_names()
    for name in names:
        _line(request, name)
    overview = console.overview()["lines"]
    lines = [
        {
            "name": n,
            "cameras": [c.name for c in console.agent.lines[n].config.cameras],
            "overview": overview[n],
            "rules": {r: rec.model_dump() for r, rec in console.agent.lines[n].config.recipes.items()},
        }
        for n in names
    ]
    return _page(
        request,
        "operator.html",
        page="operator",
        op_lines=lines,
        rules_json=json.dumps({ln["name"]: ln["rules"] for ln in lines}),
        stale_after_s=console.config.stale_after_s,
        can_control=request.state.user.allows(console.config.line_control_role),
    )


@access("viewer")
def results_page(request: Request) -> Response:
    console = console_of(request)
    q = request.query_params
    try:
        f = ResultFilter(
            line=q.get("line") or None,
            verdict=q.get("verdict") or None,
            class_name=q.get("class") or None,
            since=_parse_time(q.get("from"), "from"),
            until=_parse_time(q.get("to"), "to"),
            before_seq=int_param(q.get("before"), "before", 1),
            reviewed=q.get("reviewed") or None,
            limit=int_param(q.get("limit"), "limit", 1, 500) or 48,
            band=console.config.uncertain_band,
        ).validate()
    except BadQuery as exc:
        raise HttpError(400, str(exc)) from None
    results = console.reader.results(f)
    decisions = console.reader.decisions([r.seq for r in results if r.seq])
    cards = [
        {
            "r": r,
            "decision": decisions.get(r.seq or 0),
            "cameras": [fr.camera for fr in r.frames],
            "has_image": console.archive.has_images(r),
            "classes": sorted({d.class_name for d in r.defects if d.counts_for_verdict}),
        }
        for r in results
    ]
    args = {k: v for k, v in q.items() if k != "before" and v}
    next_args = {**args, "before": str(results[-1].seq)} if len(results) == f.limit else None
    return _page(
        request,
        "results.html",
        page="results",
        cards=cards,
        filter=f,
        query=dict(q),
        next_args=next_args,
        classes=console.reader.classes_seen(f.line),
        decisions=DECISIONS,
    )


@access("viewer")
def next_result(request: Request) -> Response:
    """The review queue's next part: the newest result older than ?after=SEQ that is not reviewed
    (?queue=uncertain: and the model was unsure about), on ?line= if given; the gallery when none is left."""
    console = console_of(request)
    q = request.query_params
    queue = q.get("queue") or "none"
    if queue not in ("none", "uncertain"):
        raise HttpError(400, f"queue {queue!r}: none (not reviewed) or uncertain")
    try:
        f = ResultFilter(
            line=q.get("line") or None,
            before_seq=int_param(q.get("after"), "after", 1),
            reviewed=queue,
            limit=1,
            band=console.config.uncertain_band,
        ).validate()
    except BadQuery as exc:
        raise HttpError(400, str(exc)) from None
    found = console.reader.results(f)
    if found:
        return RedirectResponse(f"/results/{found[0].seq}?queue={queue}", status_code=303)
    args = {"reviewed": queue, **({"line": f.line} if f.line else {})}
    return RedirectResponse(f"/results?{urlencode(args)}", status_code=303)


@access("viewer")
def result_page(request: Request) -> Response:
    console = console_of(request)
    result = _result(request)
    history = console.agent.journal.review_history(result.seq) if console.agent.journal else []
    names: dict[int, str] = {}
    line = console.agent.lines.get(result.line)
    if line is not None and line._inspector is not None:
        names = dict(line._inspector.names)
    for d in result.defects:
        names.setdefault(d.class_id, d.class_name)
    cameras = []
    scores = {a.camera: a for a in result.anomaly}
    for fr in result.frames:
        has_image = console.archive.image(result, fr.camera, False) is not None
        cameras.append(
            {
                "name": fr.camera,
                "width": fr.width,
                "height": fr.height,
                "has_image": has_image,
                "anomaly": scores.get(fr.camera),
                "has_heat": has_image and console.archive.anomaly_map(result, fr.camera) is not None,
                # drawn on demand from the raw image when the archive keeps no annotated copy
                "has_annotated": has_image or console.archive.image(result, fr.camera, True) is not None,
            }
        )
    return _page(
        request,
        "result.html",
        page="result",
        r=result,
        result_json=json.dumps(_result_view(result)),
        cameras=cameras,
        history=history,
        current=history[-1] if history else None,
        review_json=json.dumps(history[-1] if history else None),
        names_json=json.dumps({str(k): v for k, v in sorted(names.items())}),
        decisions=DECISIONS,
        can_review=request.state.user.allows("operator"),
        queue=request.query_params.get("queue")
        if request.query_params.get("queue") == "uncertain"
        else "none",
    )


@access("integrator")
def setup_page(request: Request) -> Response:
    console = console_of(request)
    if "line" not in request.path_params:
        names = console.line_names()
        if not names:
            raise not_found("this agent runs no line")
        return RedirectResponse(f"/setup/{names[0]}", status_code=303)
    name = _line(request)
    line = console.agent.lines[name]
    names = dict(line._inspector.names) if line._inspector is not None else {}
    versions = console.agent.journal.audit_log(target=name, limit=20) if console.agent.journal else []
    return _page(
        request,
        "setup.html",
        page="setup",
        line=name,
        file=str(console.line_file(name)),
        cameras=[c.name for c in line.config.cameras],
        recipes={r: rec.model_dump() for r, rec in line.config.recipes.items()},
        recipes_json=json.dumps({r: rec.model_dump() for r, rec in line.config.recipes.items()}),
        active=line.active_recipe,
        classes=list(names.values()),
        classes_json=json.dumps(list(names.values())),
        model_conf=line.config.model.conf,
        versions=[v for v in versions if v["action"] in ("setup.save", "setup.restore")],
        whatif_n=console.config.whatif_results,
    )


def _model_card(console: Any, name: str) -> tuple[Path, dict[str, Any] | None]:
    line = console.agent.lines[name]
    folder = line.config.model.path.parent
    card_file = folder / "model.json"
    if not card_file.is_file():
        return folder, None
    try:
        return folder, json.loads(card_file.read_text())
    except (OSError, json.JSONDecodeError):
        return folder, None


@access("viewer")
def model_page(request: Request) -> Response:
    console = console_of(request)
    if "line" not in request.path_params:
        names = console.line_names()
        if not names:
            raise not_found("this agent runs no line")
        return RedirectResponse(f"/model/{names[0]}", status_code=303)
    name = _line(request)
    line = console.agent.lines[name]
    _folder, card = _model_card(console, name)
    status = line.status()
    return _page(
        request,
        "model.html",
        page="model",
        line=name,
        card=card,
        model_path=str(line.config.model.path),
        running=status.get("model") or {},
        providers=status.get("providers") or [],
        runtime=status.get("runtime"),
    )


@access("viewer")
def model_plot(request: Request) -> Response:
    console = console_of(request)
    name = _line(request)
    variant, kind = request.path_params["variant"], request.path_params["kind"]
    folder, card = _model_card(console, name)
    try:
        rel = card["metrics"][variant]["plots"][kind] if card else None
    except (KeyError, TypeError):
        rel = None
    if not rel:
        raise not_found(f"the model card has no {kind} plot for {variant}")
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder.resolve()) or path.suffix.lower() != ".png" or not path.is_file():
        raise not_found(f"plot {rel!r} is not a PNG inside the model folder")
    return FileResponse(path, media_type="image/png")


# -- login ---------------------------------------------------------------------------------------------------
@access(None)
def login_page(request: Request) -> Response:
    nxt = request.query_params.get("next", "/")
    return _page(request, "login.html", page="login", next=nxt if nxt.startswith("/") else "/", message="")


@access(None)
async def login_submit(request: Request) -> Response:
    console = console_of(request)
    if not console.auth.login_required:
        return RedirectResponse("/", status_code=303)
    form = await request.form()
    name, password = str(form.get("user", "")), str(form.get("password", ""))
    nxt = str(form.get("next", "/"))
    nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"
    client = request.client.host if request.client else "?"
    try:
        account = await asyncio.to_thread(console.auth.login, name, password, client)
    except LoginRefused as exc:
        if console.agent.journal is not None:
            await asyncio.to_thread(
                console.agent.journal.add_audit, name or "?", "login.refused", "console", {"client": client}
            )
        response = _page(request, "login.html", page="login", next=nxt, message=str(exc))
        response.status_code = 429 if exc.retry_after_s else 401
        if exc.retry_after_s:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if console.agent.journal is not None:
        await asyncio.to_thread(
            console.agent.journal.add_audit, account.name, "login", "console", {"client": client}
        )
    response = RedirectResponse(nxt, status_code=303)
    await asyncio.to_thread(console.auth.logins.start, response, account)
    return response


# -- live ----------------------------------------------------------------------------------------------------
@access("viewer")
def api_overview(request: Request) -> Response:
    return JSONResponse(console_of(request).overview())


@access("viewer")
async def api_events(request: Request) -> Response:
    """Server-sent events: `overview` about once a second; with ?line=NAME (repeatable: the operator
    view's grid) also `result` for each new result of those lines, at most `frame_max_fps` per second
    (this client's frame rate cap); `bye` when the agent stops (the page then says so)."""
    console = console_of(request)
    watched = request.query_params.getlist("line")
    for name in watched:
        _line(request, name)
    interval = 1.0 / console.config.frame_max_fps

    async def stream():
        hub = console.hub
        last_version, last_overview = -1, 0.0
        last_seq: dict[str, int | None] = dict.fromkeys(watched)
        hub.watchers += len(watched)
        try:
            yield "retry: 2000\n\n"
            while not console.closing:
                now = time.monotonic()
                for line in watched:
                    feed = hub.lines.get(line)
                    latest = feed.latest if feed else None
                    if latest is not None and latest.seq != last_seq[line]:
                        last_seq[line] = latest.seq
                        yield f"event: result\ndata: {hub.result_json(latest)}\n\n"
                if (hub.version != last_version and now - last_overview >= 1.0) or now - last_overview >= 5.0:
                    last_version, last_overview = hub.version, now
                    cached = console._overview_cache
                    if cached is not None and time.monotonic() - cached[0] < 0.5:
                        text = console.overview_json(0.5)  # built already: no thread needed
                    else:
                        text = await asyncio.to_thread(console.overview_json, 0.5)
                    yield f"event: overview\ndata: {text}\n\n"
                await asyncio.sleep(interval)
            yield 'event: bye\ndata: {"why": "the agent is stopping"}\n\n'
        finally:
            hub.watchers -= len(watched)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _live_frame_params(request: Request) -> tuple[str, str, int | None]:
    """(line, camera, seq) of a live-frame request, checked."""
    name = _line(request)
    camera = request.path_params["camera"]
    if not SAFE_NAME.match(camera):
        raise HttpError(400, f"camera {camera!r}: only letters, digits, '_', '.', '-'")
    return name, camera, int_param(request.query_params.get("seq"), "seq", 1)


@access("viewer")
async def api_frame(request: Request) -> Response:
    console = console_of(request)
    name, camera, seq = _live_frame_params(request)
    # later watchers of a frame get the cached JPEG right on the event loop; encoding runs in a thread
    got = console.hub.cached_jpeg(name, camera, seq)
    if got is None:
        got = await asyncio.to_thread(console.hub.frame_jpeg, name, camera, seq, console.config.jpeg_quality)
    if got is None:
        raise not_found(f"no live frame of {name}/{camera} yet")
    frame_seq, data = got
    return Response(data, media_type="image/jpeg", headers={"X-Result-Seq": str(frame_seq)})


@access("viewer")
async def api_heat(request: Request) -> Response:
    """The anomaly heat layer of a live frame (a translucent PNG laid over it by the page)."""
    console = console_of(request)
    name, camera, seq = _live_frame_params(request)
    got = await asyncio.to_thread(console.hub.heat_png, name, camera, seq)
    if got is None:
        raise not_found(f"no anomaly map of {name}/{camera} kept for #{seq}")
    frame_seq, data = got
    return Response(data, media_type="image/png", headers={"X-Result-Seq": str(frame_seq)})


@access("integrator")
def api_reference(request: Request) -> Response:
    """The setup page's background: the live frame, else the newest archived image, else the
    model's reference image."""
    console = console_of(request)
    name = _line(request)
    camera = request.path_params["camera"]
    if not SAFE_NAME.match(camera):
        raise HttpError(400, f"camera {camera!r}: only letters, digits, '_', '.', '-'")
    got = console.hub.full_size_jpeg(name, camera, console.config.jpeg_quality)
    if got is not None:  # at full size: the page takes the ROI's pixels from the picture's own size
        return Response(got, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
    for r in console.reader.results(ResultFilter(line=name, limit=20)):
        path = console.archive.image(r, camera, False)
        if path is not None:
            return FileResponse(path)
    ref = console.agent.lines[name].config.model.reference_image
    if ref is not None and ref.is_file():
        return FileResponse(ref)
    raise not_found(f"no image of {name}/{camera} yet: wait for a part, or set model.reference_image")


# -- operator: shift handover, stop/start -------------------------------------------------------------------
def line_control_role(request: Request) -> str:
    """Who may stop and start a line and hand a shift over: the site file says (`line_control_role`)."""
    return console_of(request).config.line_control_role


@access(line_control_role)
async def api_shift_handover(request: Request) -> Response:
    """End this shift's counters on a line now (a handover); the counts handed over go to the audit log."""
    console = console_of(request)
    name = _line(request)
    ended = console.hub.handover(name)
    console._overview_cache = None
    detail = {k: ended[k] for k in ("since", "parts", "ok", "ng", "yield")}
    user = request.state.user.user
    await asyncio.to_thread(console.agent.journal.add_audit, user, "shift.handover", name, detail)
    return JSONResponse({"line": name, "handed_over": detail})


@access(line_control_role)
async def api_line_control(request: Request) -> Response:
    """{"action": "stop"} pauses the line (no new parts inspected; cameras stay open), "start" resumes it."""
    console = console_of(request)
    name = _line(request)
    body = await _json_body(request)
    action = body.get("action") if isinstance(body, dict) else None
    if action not in ("stop", "start"):
        raise HttpError(400, 'give {"action": "stop"} or {"action": "start"}')
    line = console.agent.lines[name]
    if line.state == "error":
        raise HttpError(409, f"line {name} is in error ({line.status()['last_error']}): see the overview")
    if action == "stop":
        line.pause()
    else:
        line.resume()
    console._overview_cache = None
    user = request.state.user.user
    await asyncio.to_thread(console.agent.journal.add_audit, user, f"line.{action}", name, {})
    return JSONResponse({"line": name, "state": line.state})


# -- results: files ------------------------------------------------------------------------------------------
@access("viewer")
def result_json(request: Request) -> Response:
    result = _result(request)
    return Response(
        result.model_dump_json(by_alias=True, indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="result-{result.seq}.json"'},
    )


def _camera_of(request: Request, result: InspectionResult) -> str:
    camera = request.path_params["camera"]
    if not SAFE_NAME.match(camera) or camera not in {f.camera for f in result.frames}:
        raise not_found(f"result #{result.seq} has no camera {camera!r}")
    return camera


@access("viewer")
def result_image(request: Request) -> Response:
    console = console_of(request)
    result = _result(request)
    camera = _camera_of(request, result)
    download = request.query_params.get("download") == "1"
    if request.query_params.get("annotated") == "1":
        found = console.archive.annotated(result, camera)
        if found is None:
            raise not_found(f"the archive holds no image of #{result.seq}/{camera}")
        data, name = found
        headers = {"Content-Disposition": f'attachment; filename="{name}"'} if download else {}
        media = "image/png" if name.endswith(".png") else "image/jpeg"
        return Response(data, media_type=media, headers=headers)
    path = console.archive.image(result, camera, False)
    if path is None:
        raise not_found(f"the archive holds no image of #{result.seq}/{camera}")
    headers = {"Content-Disposition": f'attachment; filename="{path.name}"'} if download else {}
    return FileResponse(path, headers=headers)


@access("viewer")
def result_heat(request: Request) -> Response:
    """The anomaly heat layer of an archived result's camera, drawn from the map the archive kept."""
    console = console_of(request)
    result = _result(request)
    camera = _camera_of(request, result)
    data = console.archive.heat(result, camera)
    if data is None:
        raise not_found(f"the archive holds no anomaly map of #{result.seq}/{camera}")
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@access("viewer")
def result_thumb(request: Request) -> Response:
    console = console_of(request)
    result = _result(request)
    camera = _camera_of(request, result)
    journal = console.agent.journal
    review = journal.current_review(result.seq) if journal is not None and result.seq else None
    data = console.archive.thumbnail(result, camera, review=review)  # the reviewed boxes, once reviewed
    if data is None:
        raise not_found(f"the archive holds no readable image of #{result.seq}/{camera}")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})


# -- reviews -------------------------------------------------------------------------------------------------
@access("operator")
async def api_review(request: Request) -> Response:
    console = console_of(request)
    result = await asyncio.to_thread(_result, request)
    body = await _json_body(request)
    try:
        review = ReviewInput.model_validate(body)
    except ValidationError as exc:
        raise HttpError(400, "the review is not valid", _validation_details(exc)) from None
    cameras = {f.camera: f for f in result.frames}
    problems = []
    names = {}
    line = console.agent.lines.get(result.line)
    if line is not None and line._inspector is not None:
        names = dict(line._inspector.names)
    for i, box in enumerate(review.boxes):
        frame = cameras.get(box.camera)
        if frame is None:
            problems.append(f"boxes[{i}]: result #{result.seq} has no camera {box.camera!r}")
            continue
        if box.xyxy[2] > frame.width + 1 or box.xyxy[3] > frame.height + 1:
            problems.append(f"boxes[{i}]: {box.xyxy} leaves the {frame.width}x{frame.height} image")
        if names and names.get(box.class_id) != box.class_name:
            problems.append(
                f"boxes[{i}]: class {box.class_id} is {names.get(box.class_id)!r}, not {box.class_name!r}"
            )
    if problems:
        raise HttpError(400, "the review is not valid", problems)
    journal = console.agent.journal
    assert journal is not None
    session = request.state.user
    previous = await asyncio.to_thread(journal.current_review, result.seq)
    try:
        stored = await asyncio.to_thread(
            journal.add_review,
            result.seq,
            review.decision,
            [b.model_dump(by_alias=True) for b in review.boxes],
            session.user,
            review.comment,
            review.not_localised,
        )
    except (KeyError, ValueError) as exc:
        raise HttpError(400, str(exc).strip("'\"")) from None
    console.hub.note_review(result.line, previous["decision"] if previous else None, review.decision)
    capture = console.agent.capture
    if capture is not None:  # a reviewed part goes to the labelling archive too (`capture.reviewed`)
        note = f"{review.decision}: {review.comment}".strip(": ")
        archive_root = console.agent.config.site.archive.path
        try:
            await asyncio.to_thread(capture.submit_reviewed_from_archive, result, archive_root, note)
        except Exception:  # the review is stored; a failed capture only costs the labelling copy
            log.exception("console: capture of reviewed result #%s failed", result.seq)
    return JSONResponse(stored)


@access("viewer")
def api_reviews(request: Request) -> Response:
    console = console_of(request)
    result = _result(request)
    return JSONResponse(console.agent.journal.review_history(result.seq) if console.agent.journal else [])


# -- setup ---------------------------------------------------------------------------------------------------
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _proposal(console: Any, name: str, body: Any) -> dict[str, Any]:
    """Validate a proposed recipe change; returns text before/after, diff, what-if."""
    try:
        setup = RecipeSetup.model_validate(body.get("setup") if isinstance(body, dict) else None)
    except ValidationError as exc:
        raise HttpError(400, "the setup is not valid", _validation_details(exc)) from None
    line = console.agent.lines[name]
    cameras = [c.name for c in line.config.cameras]
    unknown = [c for c in setup.camera_roi if c not in cameras]
    if unknown:
        raise HttpError(400, f"line {name} has no camera {', '.join(unknown)}; cameras: {', '.join(cameras)}")
    path = console.line_file(name)
    before = path.read_text(encoding="utf-8")
    try:
        after = apply_setup(before, setup, cameras)
        loaded = validate_line_text(path, after, name)
    except SetupError as exc:
        raise HttpError(400, "this change does not pass `config check`", exc.issues) from None
    names = dict(line._inspector.names) if line._inspector is not None else {}
    recent = console.reader.recent_for_recipe(name, setup.recipe, console.config.whatif_results)
    rules, score_judged = loaded.config.recipes[setup.recipe], False
    # the baseline: the same parts judged by the rules running now (journaled verdicts may be older rules')
    running = line.config.recipes.get(setup.recipe, rules)
    inspector = line._inspector
    if inspector is not None and inspector.anomaly_settings is not None:  # judged as the line will
        rules, score_judged = with_anomaly_rule(rules), inspector.anomaly_settings.judge_image_score
        running = with_anomaly_rule(running)
    return {
        "path": path,
        "before": before,
        "after": after,
        "recipe": setup.recipe,
        "diff": unified_diff(before, after, path.name),
        "base_sha": _sha(before),
        "whatif": what_if(
            recent,
            rules,
            names,
            line.config.model.conf,
            image_score_judged=score_judged,
            running_rules=running,
        ),
    }


@access("integrator")
async def api_setup_preview(request: Request) -> Response:
    console = console_of(request)
    name = _line(request)
    body = await _json_body(request)
    p = await asyncio.to_thread(_proposal, console, name, body)
    return JSONResponse({k: p[k] for k in ("diff", "whatif", "base_sha", "recipe")})


def _reload(console: Any, name: str) -> dict[str, Any]:
    ok = console.agent.reload_line(name)
    entry = console.agent.reload_log[-1] if console.agent.reload_log else {}
    return {
        "ok": ok,
        "error": None if ok else entry.get("error"),
        "model_version": entry.get("model_version"),
    }


@access("integrator")
async def api_setup_save(request: Request) -> Response:
    console = console_of(request)
    name = _line(request)
    body = await _json_body(request)

    def save() -> dict[str, Any]:
        p = _proposal(console, name, body)
        if body.get("base_sha") != p["base_sha"]:
            raise HttpError(
                409, "the line file changed since this page showed it: preview again before saving"
            )
        if p["after"] == p["before"]:
            raise HttpError(400, "nothing to save: the change leaves the file as it is")
        write_atomically(p["path"], p["after"])
        version = console.agent.journal.add_audit(
            request.state.user.user,
            "setup.save",
            name,
            {"file": str(p["path"]), "recipe": p["recipe"], "diff": p["diff"], "before": p["before"]},
        )
        return {"saved": True, "version": version, "diff": p["diff"], "reload": _reload(console, name)}

    return JSONResponse(await asyncio.to_thread(save))


@access("integrator")
async def api_setup_restore(request: Request) -> Response:
    console = console_of(request)
    name = _line(request)
    body = await _json_body(request)
    version = int_param(str(body.get("version", "")) if isinstance(body, dict) else None, "version", 1)
    if version is None:
        raise HttpError(400, 'give the version to restore: {"version": N}')

    def restore() -> dict[str, Any]:
        entries = [e for e in console.agent.journal.audit_log(target=name, limit=1000) if e["id"] == version]
        if not entries or entries[0]["action"] not in ("setup.save", "setup.restore"):
            raise HttpError(404, f"no saved setup version {version} of line {name}")
        text = entries[0]["detail"]["before"]
        path = console.line_file(name)
        current = path.read_text(encoding="utf-8")
        try:
            validate_line_text(path, text, name)
        except SetupError as exc:
            raise HttpError(400, "the old version no longer passes `config check`", exc.issues) from None
        write_atomically(path, text)
        diff = unified_diff(current, text, path.name)
        new_version = console.agent.journal.add_audit(
            request.state.user.user,
            "setup.restore",
            name,
            {"file": str(path), "restored": version, "diff": diff, "before": current},
        )
        return {"restored": version, "version": new_version, "diff": diff, "reload": _reload(console, name)}

    return JSONResponse(await asyncio.to_thread(restore))


def build_app(console: Any) -> Starlette:
    routes = [
        Route("/", overview_page),
        Route("/lines/{line}", line_page),
        Route("/operator", operator_page),
        Route("/results", results_page),
        Route("/results/next", next_result),
        Route("/results/{seq:int}", result_page),
        Route("/results/{seq:int}.json", result_json),
        Route("/results/{seq:int}/image/{camera}", result_image),
        Route("/results/{seq:int}/thumb/{camera}", result_thumb),
        Route("/results/{seq:int}/heat/{camera}", result_heat),
        Route("/setup", setup_page),
        Route("/setup/{line}", setup_page),
        Route("/model", model_page),
        Route("/model/{line}", model_page),
        Route("/model/{line}/plot/{variant}/{kind}", model_plot),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", console.auth.logins.logout, methods=["POST"]),
        Route("/api/overview", api_overview),
        Route("/api/events", api_events),
        Route("/api/lines/{line}/frame/{camera}.jpg", api_frame),
        Route("/api/lines/{line}/reference/{camera}.jpg", api_reference),
        Route("/api/lines/{line}/heat/{camera}.png", api_heat),
        Route("/api/lines/{line}/shift/handover", api_shift_handover, methods=["POST"]),
        Route("/api/lines/{line}/control", api_line_control, methods=["POST"]),
        Route("/api/results/{seq:int}/review", api_review, methods=["POST"]),
        Route("/api/results/{seq:int}/reviews", api_reviews),
        Route("/api/setup/{line}/preview", api_setup_preview, methods=["POST"]),
        Route("/api/setup/{line}/save", api_setup_save, methods=["POST"]),
        Route("/api/setup/{line}/restore", api_setup_restore, methods=["POST"]),
        Mount("/static", public(StaticFiles(directory=str(STATIC))), name="static"),
    ]
    # the login, each route's role and the CSRF token of every write: checked here, for every route
    guard = Middleware(WebGuard, routes=routes, logins=console.auth.logins, on_refusal=refusal_page)
    app = Starlette(routes=routes, middleware=[guard])
    app.state.console = console
    return app

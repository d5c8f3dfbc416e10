"""`edge-inspect run | config | results`: the agent's commands.

    edge-inspect run                          # the demo line, live results in the terminal
    edge-inspect run --config /etc/edge-inspect --for 60
    edge-inspect config check configs/agent.yaml
    edge-inspect config schema line > line.schema.json
    edge-inspect results tail -n 20 --follow
    edge-inspect results export --since 2026-11-25T08:00 --format csv --out shift1.csv

Imports stay inside the commands: `edge-inspect --help` must not load ONNX Runtime (nor ever torch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from contract.result import InspectionResult
    from edge_agent.journal import ResultJournal

config_app = typer.Typer(help="Check configuration files; print their JSON Schema.", no_args_is_help=True)
results_app = typer.Typer(help="Read the result journal: tail, export, schema.", no_args_is_help=True)

#: `edge-inspect run` with no --config: ./configs/agent.yaml, else the one shipped next to the package
DEFAULT_CONFIG = Path("configs/agent.yaml")
_REPO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "agent.yaml"


def default_config_path() -> Path:
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else _REPO_CONFIG


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Site file, or a folder with agent.yaml. Default: configs/agent.yaml."
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


# -- run -----------------------------------------------------------------------------------------------


class LiveDisplay:
    """Per-part lines in the terminal, throttled so a fast free-run line stays readable, plus a status
    summary every few seconds."""

    def __init__(self, max_lines_per_s: float = 20.0, summary_every_s: float = 5.0) -> None:
        self.max_lines_per_s = max_lines_per_s
        self.summary_every_s = summary_every_s
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._lines_in_window = 0
        self._suppressed = 0
        self._last_summary: float | None = None
        self.agent: Any = None

    def on_result(self, result: InspectionResult) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= 1.0:
                if self._suppressed:
                    more = self._suppressed
                    typer.secho(
                        f"  … {more} more result{'s' if more > 1 else ''} in the last second", dim=True
                    )
                self._window_start, self._lines_in_window, self._suppressed = now, 0, 0
            if self._lines_in_window >= self.max_lines_per_s:
                self._suppressed += 1
            else:
                self._lines_in_window += 1
                typer.echo(format_result_line(result))
            if self._last_summary is None:
                self._last_summary = now  # first summary one period after the first result
            if now - self._last_summary >= self.summary_every_s and self.agent is not None:
                self._last_summary = now
                typer.secho(format_summary(self.agent), fg=typer.colors.CYAN)

    def on_event(self, line: str, event: str, payload: dict[str, Any]) -> None:
        if event == "state":
            msg = f"[{line}] state: {payload.get('state')}"
            cams = [f"{c['name']}={c['state']}" for c in payload.get("cameras", [])]
            if cams:
                msg += f" (cameras: {', '.join(cams)})"
            if payload.get("last_error") and payload.get("state") in ("error", "degraded"):
                msg += f" — {payload['last_error']}"
            colour = typer.colors.YELLOW if payload.get("state") in ("degraded", "paused") else None
            if payload.get("state") == "error":
                colour = typer.colors.RED
            typer.secho(msg, fg=colour, err=True)
        elif event in ("reloaded", "reload_failed", "recipe"):
            colour = typer.colors.RED if event == "reload_failed" else typer.colors.GREEN
            typer.secho(f"[{line}] {event}: {json.dumps(payload, default=str)}", fg=colour, err=True)


def format_result_line(result: InspectionResult) -> str:
    verdict = typer.style(
        f"{result.verdict:2}", fg=typer.colors.GREEN if result.verdict == "OK" else typer.colors.RED
    )
    counted = [d for d in result.defects if d.counts_for_verdict]
    what = "; ".join(result.reasons) if result.reasons else "no defect"
    if counted:
        what += "  [" + ", ".join(f"{d.class_name} {d.confidence:.2f}" for d in counted[:4]) + "]"
    total = result.timings_ms.get("total")
    src = result.frames[0].source_ref if result.frames else ""
    src = Path(src).name if src else ""
    timing = f"{total:6.1f} ms" if total is not None else "        "
    return f"#{result.seq:<7} [{result.line}] {result.part_id:<22} {verdict} {timing}  {src:<18} {what}"


def format_summary(agent: Any) -> str:
    parts = []
    for name, line in agent.lines.items():
        st = line.status()
        c = st["counts"]
        dropped = sum(cam["dropped"] for cam in st["cameras"])
        skipped = sum(cam.get("skipped", 0) for cam in st["cameras"])
        parts.append(
            f"{name}: {st['state']} {st['fps']:.1f} fps, {c['inspected']} parts ({c['ng']} NG), "
            f"{dropped} frames dropped, "
            + (f"{skipped} unreadable files skipped, " if skipped else "")
            + f"recipe {st['recipe']}"
        )
    return "── " + " | ".join(parts)


def run(
    config: ConfigOption = None,
    for_seconds: Annotated[
        float | None, typer.Option("--for", min=0, help="Stop cleanly after this many seconds.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-part lines, only states.")] = False,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING, ERROR (default: site file).")
    ] = None,
    accept_new_journal: Annotated[
        bool,
        typer.Option(
            "--accept-new-journal",
            help="Start although the journal file is not this site's journal (emptied or replaced).",
        ),
    ] = False,
) -> None:
    """Run the inspection agent: cameras → model → verdict → journal → publishers.

    With no arguments it runs the demo line (configs/lines/demo.yaml) on images/ with the demo model,
    publishing on localhost. Stops cleanly on Ctrl-C / SIGTERM (in-flight parts are journaled)."""
    from contract.yamlconf import ConfigError
    from edge_agent.agent import Agent, AgentStartError
    from edge_agent.config import load_agent_config

    path = config or default_config_path()
    try:
        cfg = load_agent_config(path)
    except ConfigError as exc:
        raise _fail(f"configuration errors:\n{exc}") from None
    logging.basicConfig(
        level=getattr(logging, (log_level or cfg.site.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if (log_level or cfg.site.log_level).upper() != "DEBUG":
        logging.getLogger("asyncua").setLevel(logging.WARNING)  # it logs every node it creates at INFO
    from edge_agent.memtrace import start_from_env

    start_from_env()  # EDGE_INSPECT_TRACEMALLOC=<file>: a developer aid for soaks, off by default
    display = LiveDisplay()
    agent = Agent(
        cfg,
        on_result=None if quiet else display.on_result,
        on_event=display.on_event,
        accept_new_journal=accept_new_journal,
    )
    display.agent = agent
    names = ", ".join(line.config.name for line in cfg.lines)
    typer.secho(
        f"edge-inspect: site {cfg.site.site}, lines: {names} (config {cfg.site_file})", bold=True, err=True
    )
    try:
        code = agent.run(for_seconds=for_seconds, on_started=_print_endpoints)
    except AgentStartError as exc:
        raise _fail(f"cannot start: {exc}") from None
    typer.secho(format_summary(agent), err=True)
    typer.secho(
        f"stopped cleanly; journal {cfg.site.journal.path} at seq {_last_seq(cfg.site.journal.path)}",
        err=True,
    )
    raise typer.Exit(code)


def _print_endpoints(agent: Any) -> None:
    where = []
    if agent.metrics_server is not None:
        where.append(f"metrics {agent.metrics_server.url}/metrics")
    for pub in agent.publishers:
        found = False
        for attr in ("pub_endpoint", "router_endpoint", "endpoint", "url"):
            value = getattr(pub, attr, None)
            if isinstance(value, str):
                where.append(f"{pub.name} {attr.replace('_', ' ')} {value}")
                found = True
        config_endpoint = getattr(getattr(pub, "config", None), "endpoint", None)
        if not found and isinstance(config_endpoint, str):
            where.append(f"{pub.name} {config_endpoint}")
    if where:
        typer.secho("serving: " + "; ".join(where), err=True)
    if agent.console is not None:
        login = "no login: localhost only" if not agent.console.auth.login_required else "login required"
        typer.secho(f"console: {agent.console.url}/ ({login})", bold=True, err=True)


def _last_seq(path: Path) -> int:
    from edge_agent.journal import ResultJournal

    j = ResultJournal(path)
    try:
        return j.last_seq()
    finally:
        j.close()


def trigger(
    line: Annotated[str, typer.Argument(help="Line to trigger (a `trigger: {type: triggered}` line).")],
    part_id: Annotated[str | None, typer.Option(help="Part id (default: generated by the line).")] = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe for this part only.")] = None,
    meas_id: Annotated[str | None, typer.Option(help="Measurement id to carry in the result.")] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="ZeroMQ ROUTER of the running agent (default: from the site file).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 30.0,
    config: ConfigOption = None,
) -> None:
    """Ask a running agent for one inspection (ZeroMQ `trigger` request) and print the result."""
    import zmq

    from contract.zmq_wire import decode

    if endpoint is None:
        from contract.yamlconf import ConfigError
        from edge_agent.config import load_agent_config

        try:
            cfg = load_agent_config(config or default_config_path())
        except ConfigError as exc:
            raise _fail(f"configuration errors:\n{exc}") from None
        routers = [
            p.config for p in cfg.publishers if p.type == "zmq" and getattr(p.config, "router_endpoint", None)
        ]
        if not routers:
            raise _fail("the site file has no zmq publisher with a router_endpoint; pass --endpoint")
        pub = routers[0]
        if not getattr(pub, "allow_trigger", False):
            raise _fail("the zmq publisher has allow_trigger: false; set it to true in the site file")
        if getattr(pub, "security", "plain") != "plain":
            raise _fail(
                "the zmq ROUTER uses CURVE: trigger from a CURVE client (docs/zmq.md) or pass --endpoint"
            )
        endpoint = pub.router_endpoint.replace("0.0.0.0", "127.0.0.1").replace("*", "127.0.0.1")
    request = {"op": "trigger", "line": line, "part_id": part_id, "recipe": recipe, "meas_id": meas_id}
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    result: InspectionResult | None = None
    try:
        sock.send(json.dumps(request).encode())
        while True:
            frames = sock.recv_multipart()
            if len(frames) == 3:
                result = decode(frames).result()
                continue
            kind, payload = frames[0].decode(), json.loads(frames[-1])
            if kind == "trigger_reply" and payload.get("ok"):
                break
            raise _fail(f"{kind}: {payload.get('error')}")
    except zmq.Again:
        raise _fail(f"no answer from {endpoint} within {timeout:g} s (is the agent running?)") from None
    finally:
        sock.close()
    if result is not None:
        typer.echo(format_result_line(result))


# -- config --------------------------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Site files, line files or folders (default configs/agent.yaml). A folder: its agent.yaml "
            "with its lines, and every other YAML file in it, each checked as what it is."
        ),
    ] = None,
    models: Annotated[
        bool,
        typer.Option("--models/--no-models", help="Also load each line's model and check recipe classes."),
    ] = True,
    connect: Annotated[
        bool,
        typer.Option(
            "--connect/--no-connect",
            help="Also reach each publisher's peer (the MQTT broker) and each line's GigE cameras.",
        ),
    ] = True,
) -> None:
    """Validate site files and line files; every error with file, line and key path."""
    checked: set[Path] = set()
    failed = 0
    for target in paths or [default_config_path()]:
        for kind, file in _config_files(target):
            if file.resolve() in checked:
                continue
            if kind == "site":
                ok, covered = _check_site(file, models, connect)
            else:
                ok, covered = _check_line(file, models, connect)
            checked.update(covered)
            failed += not ok
    if failed:
        raise typer.Exit(1)


def _config_files(target: Path) -> list[tuple[str, Path]]:
    """(kind, file) to check for a path: a file as what it is; a folder's site file first, then every other
    YAML file under it (a line file that the site file does not list is still checked)."""
    from contract.yamlconf import ConfigError
    from edge_agent.config import find_site_file

    if not target.is_dir():
        return [(_config_kind(target), target)]
    out: list[tuple[str, Path]] = []
    with contextlib.suppress(ConfigError):  # without a site file: a folder of line files
        out.append(("site", find_site_file(target)))
    for file in sorted([*target.rglob("*.yaml"), *target.rglob("*.yml")]):
        if not any(part.startswith(".") for part in file.relative_to(target).parts):
            out.append((_config_kind(file), file))
    return out


_SITE_KEYS = {"site", "lines", "journal", "archive", "metrics", "reload", "publishers"}
_LINE_KEYS = {"cameras", "model", "recipes", "trigger", "active_recipe"}


def _config_kind(file: Path) -> str:
    """"site" or "line", from the top-level keys (a file that cannot be read is checked as a line)."""
    from contract.yamlconf import ConfigError, load_yaml

    try:
        data = load_yaml(file).data
    except ConfigError:
        return "line"
    if not isinstance(data, dict):
        return "line"
    keys = set(map(str, data))
    return "site" if len(keys & _SITE_KEYS) > len(keys & _LINE_KEYS) else "line"


def _print_issues(issues: list[Any]) -> None:
    typer.secho(f"{len(issues)} error(s):", fg=typer.colors.RED, err=True)
    for issue in issues:
        typer.echo(str(issue), err=True)


def _check_site(file: Path, models: bool, connect: bool = True) -> tuple[bool, set[Path]]:
    """Check a site file and its lines; returns (ok, files covered)."""
    from contract.yamlconf import ConfigError
    from edge_agent.config import load_agent_config
    from edge_agent.inspector import validate_line_model

    try:
        cfg = load_agent_config(file)
    except ConfigError as exc:
        _print_issues(exc.issues)
        # its line files were read (and reported) too: do not check them a second time
        return False, {file.resolve(), *(i.file.resolve() for i in exc.issues if i.file)}
    covered = {file.resolve(), *(loaded.file.resolve() for loaded in cfg.lines)}
    issues = []
    if models:
        for loaded in cfg.lines:
            issues.extend(validate_line_model(loaded))
    if connect:
        for loaded in cfg.lines:
            issues.extend(_check_line_cameras(loaded))
    if issues:
        _print_issues(issues)
        return False, covered
    typer.secho(f"OK: {cfg.site_file}", fg=typer.colors.GREEN)
    typer.echo(f"  site {cfg.site.site}; journal {cfg.site.journal.path}")
    for loaded in cfg.lines:
        typer.echo("  " + _line_summary(loaded))
    pubs = ", ".join(p.type for p in cfg.publishers) or "none"
    typer.echo(f"  publishers: {pubs}")
    return (_check_publisher_peers(cfg) if connect else True), covered


def _check_publisher_peers(cfg: Any) -> bool:
    """Each publisher reaches its peer (`Publisher.check`); one line per problem."""
    from edge_agent.publishers.base import Publisher
    from edge_agent.publishers.registry import resolve_publisher

    ok = True
    for entry in cfg.publishers:
        cls = resolve_publisher(entry.type)[1]
        if cls.check.__func__ is Publisher.check.__func__:
            continue  # nothing to reach
        problem = cls.check(entry.config)
        label = f"{entry.type} publisher {getattr(entry.config, 'name', entry.type)!r}"
        if problem:
            typer.secho(f"{cfg.site_file}: {label}: {problem}", fg=typer.colors.RED, err=True)
            ok = False
        else:
            typer.echo(f"  {label}: reached, login accepted")
    return ok


def _check_line_cameras(loaded: Any) -> list[Any]:
    """Each camera whose kind can be reached beforehand (GigE) is found and asked what the YAML wants;
    one issue per camera, at its key."""
    from edge_agent.sources.registry import check_source

    issues = []
    for i, cam in enumerate(loaded.config.cameras):
        problem = check_source(cam.source)
        if problem:
            key, message = problem
            issues.append(loaded.doc.issue(("cameras", i, "source", *key), message))
    return issues


def _check_line(file: Path, models: bool, connect: bool = True) -> tuple[bool, set[Path]]:
    """Check one line file on its own (it need not be listed in a site file)."""
    from contract.yamlconf import ConfigError
    from edge_agent.config import load_line
    from edge_agent.inspector import validate_line_model

    try:
        loaded = load_line(file)
    except ConfigError as exc:
        _print_issues(exc.issues)
        return False, {file.resolve()}
    issues = validate_line_model(loaded) if models else []
    if connect:
        issues.extend(_check_line_cameras(loaded))
    if issues:
        _print_issues(issues)
        return False, {file.resolve()}
    typer.secho(f"OK: {loaded.file} (line file)", fg=typer.colors.GREEN)
    typer.echo("  " + _line_summary(loaded))
    return True, {file.resolve()}


def _line_summary(loaded: Any) -> str:
    c = loaded.config
    cams = ", ".join(f"{cam.name} ({cam.source.type})" for cam in c.cameras)
    recipes = ", ".join(c.recipes)
    return f"line {c.name} [{c.trigger.type}] from {loaded.file}: cameras {cams}; recipes {recipes}"


@config_app.command("schema")
def config_schema(
    kind: Annotated[str, typer.Argument(help="site or line")] = "site",
) -> None:
    """Print the JSON Schema of a site file or a line file (for editors: yaml-language-server)."""
    from edge_agent.config import agent_json_schema

    schemas = agent_json_schema()
    if kind not in schemas:
        raise _fail(f"unknown schema {kind!r}; choose site or line")
    typer.echo(json.dumps(schemas[kind], indent=2))


# -- results -------------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(value: str | None) -> tuple[int, datetime | None]:
    """`--since`: a sequence number (`1200`), a time (`2026-11-25T08:00`, UTC unless it has an offset)
    or an age (`30m`, `8h`, `2d`). Returns (since_seq, since_time)."""
    if value is None or value == "":
        return 0, None
    if value.isdigit():
        return int(value), None
    m = _RELATIVE.match(value)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return 0, datetime.now(timezone.utc) - timedelta(seconds=seconds)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: give a sequence number (1200), a time (2026-11-25T08:00) or an age (30m, 8h, 2d)"
        ) from None
    return 0, t if t.tzinfo else t.replace(tzinfo=timezone.utc)


JournalOption = Annotated[
    Path | None, typer.Option("--journal", "-j", help="Journal file (default: the one in the site file).")
]


def _open_journal(config: Path | None, journal: Path | None) -> ResultJournal:
    from edge_agent.journal import ResultJournal

    if journal is None:
        from contract.yamlconf import ConfigError
        from edge_agent.config import find_site_file, load_agent_config

        path = config or default_config_path()
        try:
            journal = load_agent_config(find_site_file(path)).site.journal.path
        except ConfigError as exc:
            raise _fail(
                f"cannot read the journal path from {path}:\n{exc}\n(or pass --journal FILE)"
            ) from None
    if not Path(journal).is_file():
        raise _fail(f"{journal}: no journal there yet (has the agent run?)")
    return ResultJournal(journal)


@results_app.command("tail")
def results_tail(
    n: Annotated[int, typer.Option("-n", min=1, help="How many of the newest results.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new results.")] = False,
    line: Annotated[str | None, typer.Option(help="Only this line.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Full JSON bodies, one per line.")] = False,
    config: ConfigOption = None,
    journal: JournalOption = None,
) -> None:
    """Print the newest results from the journal (and follow new ones with -f)."""
    j = _open_journal(config, journal)
    try:
        newest = j.query(line=line, newest_first=True, limit=n)
        last = 0
        for result in reversed(newest):
            typer.echo(result.to_json() if as_json else format_result_line(result))
            last = result.seq or last
        if not newest:
            last = j.last_seq()
        while follow:
            for result in j.since(last, line=line):
                typer.echo(result.to_json() if as_json else format_result_line(result))
                last = result.seq or last
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        j.close()


@results_app.command("export")
def results_export(
    since: Annotated[
        str | None,
        typer.Option(help="Sequence number, time (ISO 8601, UTC by default) or age (30m, 8h, 2d)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")] = None,
    line: Annotated[str | None, typer.Option(help="Only this line.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many results.")] = None,
    config: ConfigOption = None,
    journal: JournalOption = None,
) -> None:
    """Export results (oldest first) to JSONL or CSV."""
    if fmt not in ("jsonl", "csv"):
        raise typer.BadParameter(f"--format must be jsonl or csv, got {fmt!r}")
    since_seq, since_time = parse_since(since)
    j = _open_journal(config, journal)
    try:
        if out is None:
            count = j.export(
                sys.stdout, fmt, since_seq=since_seq, since_time=since_time, line=line, limit=limit
            )  # type: ignore[arg-type]
        else:
            with open(out, "w", encoding="utf-8", newline="") as f:
                count = j.export(f, fmt, since_seq=since_seq, since_time=since_time, line=line, limit=limit)  # type: ignore[arg-type]
    finally:
        j.close()
    typer.secho(f"exported {count} result(s)" + (f" to {out}" if out else ""), err=True)


@results_app.command("schema")
def results_schema() -> None:
    """Print the JSON Schema of a result body (the one body of journal, ZeroMQ, OPC UA and MES)."""
    from contract.result import result_json_schema

    typer.echo(json.dumps(result_json_schema(), indent=2))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("trigger")(trigger)
    app.add_typer(config_app, name="config")
    app.add_typer(results_app, name="results")

"""CLI: `edge-inspect hub serve|agent|user|keys|publish|rollout|history|collect`.

Only typer and the standard library at module level; the hub's modules load inside the commands.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path

import typer

hub_app = typer.Typer(
    help="The programme hub: results from many agents, dashboard, model rollout.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")


def _config(config: Path | None, data: Path | None):
    from contract.yamlconf import ConfigError
    from hub.config import load_hub_config

    try:
        return load_hub_config(config, data)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


ConfigOpt = typer.Option(None, "--config", "-c", help="hub.yaml (default: built-in defaults)")
DataOpt = typer.Option(None, "--data", help="data folder; without a `store:` in the file, SQLite in it")


@hub_app.command("serve")
def serve(
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = typer.Option(None, help="override the store: sqlite:///file or postgresql://..."),
    ingest: str | None = typer.Option(None, help="override the results endpoint (tcp://0.0.0.0:5570)"),
    http_port: int | None = typer.Option(None, "--http-port", help="override the HTTP port"),
    plain: bool = typer.Option(False, "--plain", help="results stream without CURVE (lab use only)"),
) -> None:
    """Run the hub: results in (exactly once), agents' API, dashboard, retention."""
    from hub.server import HubServer

    cfg = _config(config, data)
    updates = {}
    if store:
        updates["store"] = store
    if ingest or plain:
        ing = cfg.ingest.model_copy(
            update={k: v for k, v in (("endpoint", ingest), ("security", "plain" if plain else None)) if v}
        )
        updates["ingest"] = ing
    if http_port is not None:
        updates["http"] = cfg.http.model_copy(update={"port": http_port})
    cfg = cfg.model_copy(update=updates)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = HubServer(cfg)
    try:
        server.start()
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    typer.echo(f"hub: results on {server.ingest.endpoint}, http on {server.http_url}", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.wait()
    server.stop()


def _open_store(config: Path | None, data: Path | None, store: str | None):
    from hub.store import HubStore

    cfg = _config(config, data)
    if store:
        cfg = cfg.model_copy(update={"store": store})
    try:
        return cfg, HubStore.open(cfg.store)
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


StoreOpt = typer.Option(None, "--store", help="override the store: sqlite:///file or postgresql://...")

agent_app = typer.Typer(help="Provision agents (each gets its own token).", no_args_is_help=True)
hub_app.add_typer(agent_app, name="agent")


@agent_app.command("add")
def agent_add(
    agent_id: str = typer.Argument(..., help="the agent's id (default on the agent: its site id)"),
    company: str = typer.Option(..., help="the company the agent belongs to"),
    token_out: Path | None = typer.Option(None, help="write the token to this file (mode 0600)"),
    rotate: bool = typer.Option(False, "--rotate", help="give an existing agent a new token"),
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = StoreOpt,
) -> None:
    """Provision an agent and print (or write) its token: copy it to the agent's `hub.token_file`."""
    import os

    from hub.registry import Registry, RegistryError

    _, hub_store = _open_store(config, data, store)
    try:
        token = Registry(hub_store.db).add_agent(agent_id, company, rotate=rotate)
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hub_store.close()
    if token_out is not None:
        token_out.parent.mkdir(parents=True, exist_ok=True)
        token_out.write_text(token + "\n")
        os.chmod(token_out, 0o600)
        typer.echo(f"token of {agent_id} written to {token_out}")
    else:
        typer.echo(token)


@agent_app.command("list")
def agent_list(
    config: Path | None = ConfigOpt, data: Path | None = DataOpt, store: str | None = StoreOpt
) -> None:
    """Agents, their status (online / late / offline) and lines."""
    from hub.registry import Registry

    cfg, hub_store = _open_store(config, data, store)
    reg = Registry(
        hub_store.db,
        late_after_heartbeats=cfg.agents.late_after_heartbeats,
        offline_after_s=cfg.agents.offline_after_s,
    )
    for a in reg.agents():
        typer.echo(
            f"{a['agent_id']:20s} {a['company']:20s} {a['site'] or '-':16s} {a['status']:10s} "
            f"v{a['version'] or '?'}"
        )
    for ln in reg.lines():
        typer.echo(
            f"  {ln['site']}/{ln['line']}: {ln['state']} model {ln['model_name']} {ln['model_version']}"
        )
    hub_store.close()


@hub_app.command("user")
def user_add(
    name: str = typer.Argument(...),
    role: str = typer.Option("viewer", help="viewer (dashboard), ml (also rollouts, collect), admin"),
    password: str | None = typer.Option(None, help="the password (asked for when not given)"),
    keep_password: bool = typer.Option(False, help="change an existing user's role, keep the password"),
    remove: bool = typer.Option(False, help="delete the user"),
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = StoreOpt,
) -> None:
    """Add a dashboard user, set a user's password and role, or remove a user. A changed or removed
    user's sessions end at their next request."""
    from hub.auth import AuthError, Users

    if not remove and not keep_password and password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    _, hub_store = _open_store(config, data, store)
    try:
        users = Users(hub_store.db)
        if remove:
            if not users.remove(name):
                raise AuthError(f"no user {name!r}")
            typer.echo(f"user {name} removed (their sessions have ended)")
            return
        if keep_password:
            users.set_role(name, role)
        else:
            users.set(name, str(password), role)
    except AuthError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hub_store.close()
    typer.echo(f"user {name} ({role}) saved; their earlier sessions have ended")


@hub_app.command("keys")
def keys(
    name: str = typer.Argument(..., help="key name, e.g. 'ml-team'"),
    out: Path = typer.Option(Path("keys"), "--out", "-o"),
) -> None:
    """Make an ed25519 model-signing key pair: keep NAME.ed25519, give NAME.pub to the agents."""
    from contract.model_signing import generate_signing_key

    try:
        pair = generate_signing_key(out, name)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"private key (keep it, mode 0600): {pair.private_file}")
    typer.echo(f"public key (agents' hub.trusted_keys): {pair.public_file}")


@hub_app.command("publish")
def publish(
    model: Path = typer.Argument(..., help="the .onnx file (its model.json card next to it is sent along)"),
    line: list[str] = typer.Option(..., "--line", help="target SITE/LINE (repeat)"),
    signing_key: Path = typer.Option(..., help="your NAME.ed25519 private key"),
    canary: str | None = typer.Option(
        None, help="SITE/LINE that gets the model first (promote for the rest)"
    ),
    card: Path | None = typer.Option(None, help="model card (default: model.json next to the model)"),
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = StoreOpt,
) -> None:
    """Sign a model's manifest (sha256, card, target lines) and publish it to the target lines."""
    import json

    from hub.rollout import RolloutError, Rollouts

    card_file = card or model.with_name("model.json")
    card_data = json.loads(card_file.read_text()) if card_file.is_file() else {"name": model.stem}
    cfg, hub_store = _open_store(config, data, store)
    try:
        rollout_id = Rollouts(hub_store.db, cfg.data_dir).publish(
            model, card_data, line, signing_key, canary=canary
        )
    except (RolloutError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hub_store.close()
    stage = (
        f"canary {canary} first; `edge-inspect hub rollout promote {rollout_id}` for the rest"
        if canary
        else "all target lines"
    )
    typer.echo(f"rollout {rollout_id}: {stage}")


rollout_app = typer.Typer(
    help="Staged rollout: list, promote the canary's rollout, roll back.", no_args_is_help=True
)
hub_app.add_typer(rollout_app, name="rollout")


@rollout_app.command("list")
def rollout_list(
    config: Path | None = ConfigOpt, data: Path | None = DataOpt, store: str | None = StoreOpt
) -> None:
    from hub.rollout import Rollouts

    cfg, hub_store = _open_store(config, data, store)
    for r in Rollouts(hub_store.db, cfg.data_dir).list():
        typer.echo(
            f"{r['id']:5d} {r['stage']:12s} {r['name']} {r['version']} canary={r['canary'] or '-'} "
            f"targets={r['targets']}"
        )
    hub_store.close()


@rollout_app.command("promote")
def rollout_promote(
    rollout_id: int = typer.Argument(...),
    min_parts: int = typer.Option(100, help="parts the canary must have inspected on the new model"),
    force: bool = typer.Option(False, "--force", help="promote without checking the canary's numbers"),
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = StoreOpt,
) -> None:
    """Give the rest of the targets the canary's model, once the canary's numbers hold."""
    from hub.rollout import RolloutError, Rollouts

    cfg, hub_store = _open_store(config, data, store)
    try:
        lines = Rollouts(hub_store.db, cfg.data_dir).promote(rollout_id, min_parts=min_parts, force=force)
    except RolloutError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hub_store.close()
    typer.echo(f"rollout {rollout_id} promoted to {', '.join(lines) or 'no further lines'}")


@rollout_app.command("rollback")
def rollout_rollback(
    rollout_id: int = typer.Argument(...),
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = StoreOpt,
) -> None:
    """Every line on this rollout goes back to what it ran before (one command)."""
    from hub.rollout import RolloutError, Rollouts

    cfg, hub_store = _open_store(config, data, store)
    try:
        back = Rollouts(hub_store.db, cfg.data_dir).rollback(rollout_id)
    except RolloutError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hub_store.close()
    for target, previous in back:
        typer.echo(f"{target}: back to " + (f"rollout {previous}" if previous else "its own model"))


@hub_app.command("history")
def history(
    target: str = typer.Argument(..., help="SITE/LINE"),
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = StoreOpt,
) -> None:
    """A line's model history: assigned, applied, failed (why), promoted, rolled back."""
    import time as _time

    from hub.rollout import Rollouts

    site, _, line = target.partition("/")
    cfg, hub_store = _open_store(config, data, store)
    for h in Rollouts(hub_store.db, cfg.data_dir).history(site, line):
        when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(h["at"]))
        model = f"{h['name'] or ''} {h['version'] or ''} {(h['sha256'] or '')[:12]}".strip() or "own model"
        err = f" — {h['detail']['error']}" if h["detail"].get("error") else ""
        typer.echo(f"{when}Z  {h['event']:40s} rollout {h['rollout_id']}  {model}{err}")
    hub_store.close()


@hub_app.command("collect")
def collect(
    out: Path = typer.Option(..., "--out", "-o", help="new folder for the dataset (YOLO layout)"),
    company: str | None = typer.Option(None, help="every line of this company"),
    line: str | None = typer.Option(None, "--line", help="only this SITE/LINE"),
    reviewed: bool = typer.Option(False, "--reviewed", help="parts reviewed on the line consoles"),
    uncertain: bool = typer.Option(False, "--uncertain", help="parts the model was unsure about"),
    ng: bool = typer.Option(False, "--ng", help="archived NG parts, labelled with the model's boxes"),
    limit: int = typer.Option(1000, help="at most this many parts per line and selection"),
    timeout: float = typer.Option(300, help="seconds to wait for the agents"),
    config: Path | None = ConfigOpt,
    data: Path | None = DataOpt,
    store: str | None = StoreOpt,
) -> None:
    """Gather reviewed/uncertain/NG images with labels from the agents into a dataset that
    `edge-inspect dataset import --format yolo` takes. The hub must be running (agents answer it)."""
    from hub.collect import CollectError, assemble, start_collect, wait_collect
    from hub.commands import Commands
    from hub.registry import Registry

    if company is None and line is None:
        raise typer.BadParameter("give --company and/or --line")
    selection = [s for s, on in (("reviewed", reviewed), ("uncertain", uncertain), ("ng", ng)) if on]
    cfg, hub_store = _open_store(config, data, store)
    try:
        commands = Commands(hub_store.db, cfg.data_dir)
        ids = start_collect(
            Registry(hub_store.db), commands, company=company, line=line, selection=selection, limit=limit
        )
        typer.echo(f"asked {len(ids)} agent(s): {', '.join(ids)}; waiting up to {timeout:g} s")
        report = assemble(wait_collect(commands, ids, timeout), out)
    except CollectError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        hub_store.close()
    for agent_id, entry in report["agents"].items():
        missing = entry.get("missing") or []
        typer.echo(
            f"{agent_id}: {entry['status']}, {entry.get('images', 0)} images"
            + (f", {len(missing)} not sent ({missing[0]['why']})" if missing else "")
            + (f" — {entry['error']}" if entry.get("error") else "")
        )
    typer.echo(f"{report['images']} images, {report['boxes']} boxes, classes {report['classes']} in {out}")
    typer.echo(f"next: edge-inspect dataset import {out} DATASET --format yolo --val 0.2")

"""CLI: `edge-inspect hub serve|agent|user|keys|publish|rollout|history|collect`.

Only typer and the standard library at module level; the hub's modules load inside the commands.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path

import typer

hub_app = typer.Typer(help="The programme hub: results from many agents, dashboard, model rollout.",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")


def _config(config: Path | None, data: Path | None):
    from edge_agent.yamlconf import ConfigError
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
        ing = cfg.ingest.model_copy(update={k: v for k, v in
                                            (("endpoint", ingest), ("security", "plain" if plain else None))
                                            if v})
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

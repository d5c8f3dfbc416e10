"""CLI: `edge-inspect zmq keys|tail` and `edge-inspect mes listen`.

Only typer and the standard library are imported at module level; zmq and the rest load inside the
commands, so `edge-inspect --help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from pathlib import Path

import typer

zmq_app = typer.Typer(help="ZeroMQ live stream: CURVE keys, a subscriber for testing.", no_args_is_help=True)
mes_app = typer.Typer(help="The reference MES receiver (acknowledged delivery).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(zmq_app, name="zmq")
    app.add_typer(mes_app, name="mes")


@zmq_app.command("keys")
def keys(
    name: str = typer.Argument(..., help="key pair name, e.g. 'agent', 'mes', 'client-erp'"),
    out: Path = typer.Option(Path("keys"), "--out", "-o", help="folder for <name>.key and <name>.key_secret"),
) -> None:
    """Make a CURVE key pair. Copy the public '.key' to the peers that must trust it."""
    from contract.zmq_security import generate_keypair

    try:
        pair = generate_keypair(out, name)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"public key (share it): {pair.public_file}")
    typer.echo(f"secret key (keep it here, mode 0600): {pair.secret_file}")
    typer.echo(
        "A server trusts a client when the client's public .key file is in its authorized_keys_dir; "
        "a client needs the server's public .key as server_public_key_file."
    )


def _server_security(curve_secret: Path | None, authorized_keys: Path | None, plain: bool):
    from contract.zmq_security import CurveServerConfig, ServerSecurity

    if plain:
        if curve_secret or authorized_keys:
            raise typer.BadParameter("--plain cannot be combined with --curve-secret/--authorized-keys")
        return ServerSecurity(security="plain")
    if not (curve_secret and authorized_keys):
        raise typer.BadParameter(
            "CURVE is the default: give --curve-secret FILE.key_secret and --authorized-keys DIR "
            "(make keys with `edge-inspect zmq keys`), or --plain for plain TCP"
        )
    curve = CurveServerConfig(secret_key_file=curve_secret, authorized_keys_dir=authorized_keys)
    return ServerSecurity(curve=curve)


def _client_security(curve_secret: Path | None, server_key: Path | None, plain: bool):
    from contract.zmq_security import ClientSecurity, CurveClientConfig

    if plain:
        return ClientSecurity(security="plain")
    if not (curve_secret and server_key):
        raise typer.BadParameter(
            "CURVE is the default: give --curve-secret FILE.key_secret and --server-key SERVER.key, "
            "or --plain for plain TCP"
        )
    curve = CurveClientConfig(secret_key_file=curve_secret, server_public_key_file=server_key)
    return ClientSecurity(curve=curve)


@mes_app.command("listen")
def listen(
    endpoint: str = typer.Option("tcp://127.0.0.1:5560", help="ROUTER endpoint to bind"),
    store: Path = typer.Option(Path("results.sqlite"), help="SQLite file that receives every result once"),
    curve_secret: Path | None = typer.Option(None, help="this receiver's .key_secret file"),
    authorized_keys: Path | None = typer.Option(None, help="folder of the agents' public .key files"),
    plain: bool = typer.Option(False, "--plain", help="plain TCP, no CURVE (lab use only)"),
    durability: str = typer.Option("full", help="'full' (fsync before ack) or 'normal'"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="do not print a line per result"),
) -> None:
    """Receive acknowledged results from agents and store each exactly once."""
    from mes.receiver import MesReceiver

    if durability not in ("full", "normal"):
        raise typer.BadParameter(f"--durability must be 'full' or 'normal', not {durability!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    security = _server_security(curve_secret, authorized_keys, plain)

    def show(result, status) -> None:
        if not quiet:
            typer.echo(f"{status:9s} seq={result.seq} {result.site}/{result.line} part={result.part_id} "
                       f"{result.verdict} id={result.result_id}")

    receiver = MesReceiver(endpoint, store, security, durability=durability, on_stored=show)  # type: ignore[arg-type]
    try:
        receiver.open()
    except (RuntimeError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    signal.signal(signal.SIGTERM, lambda *_: receiver.request_stop())
    typer.echo(f"listening on {receiver.endpoint}, storing into {store}")
    with contextlib.suppress(KeyboardInterrupt):
        receiver.serve_forever()
    typer.echo(f"stopped: {receiver.counters}")


@zmq_app.command("tail")
def tail(
    pub: str = typer.Option("tcp://127.0.0.1:5556", help="the agent's PUB endpoint"),
    router: str = typer.Option("tcp://127.0.0.1:5557", help="the agent's ROUTER endpoint"),
    since: int | None = typer.Option(None, help="replay everything after this seq first"),
    site: str | None = typer.Option(None),
    line: list[str] | None = typer.Option(None, "--line", help="only these lines (needs --site)"),
    curve_secret: Path | None = typer.Option(None, help="this client's .key_secret file"),
    server_key: Path | None = typer.Option(None, help="the agent's public .key file"),
    plain: bool = typer.Option(False, "--plain"),
) -> None:
    """Print the agent's results as JSON lines: snapshot (or replay) first, then live, without gaps."""
    from mes.client import StreamClient

    security = _client_security(curve_secret, server_key, plain)
    try:
        with StreamClient(pub, router, site=site, lines=line, since_seq=since, security=security) as client:
            for event in client.events():
                body = event.result.model_dump(mode="json", by_alias=True) if event.result else event.payload
                typer.echo(json.dumps({"kind": event.kind, "line": event.line,
                                       "historical": event.is_historical, "body": body}))
    except KeyboardInterrupt:
        pass
    except (TimeoutError, RuntimeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc

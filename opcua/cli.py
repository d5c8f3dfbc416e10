"""`edge-inspect opcua ...`: certificates, trust decisions and password hashes for the OPC UA server.

    edge-inspect opcua cert --pki-dir /var/lib/edge-inspect/pki          # server certificate + key
    edge-inspect opcua hash-password                                     # scrypt hash for opcua.users
    edge-inspect opcua rejected --pki-dir /var/lib/edge-inspect/pki      # client certs refused so far
    edge-inspect opcua trust /var/lib/edge-inspect/pki/rejected/mes_ab12.der --pki-dir ...

asyncua and cryptography are imported inside the commands so `edge-inspect --help` stays fast.
"""

from __future__ import annotations

import socket
from pathlib import Path

import typer

opcua_app = typer.Typer(
    name="opcua", help="OPC UA server: certificates, trusted clients, users.", no_args_is_help=True
)

PKI_OPTION = typer.Option(Path("pki"), "--pki-dir", help="Folder with own/, trusted/, rejected/.")


@opcua_app.command("cert")
def cert(
    pki_dir: Path = PKI_OPTION,
    application_uri: str = typer.Option(
        "urn:edge-inspect:opcua:server", help="Must equal opcua.application_uri."
    ),
    hostname: list[str] = typer.Option(None, "--hostname", help="DNS name or IP clients use (repeatable)."),
    common_name: str = typer.Option("edge-inspect", help="Certificate subject CN."),
    days: int = typer.Option(365 * 5, min=1, help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace an existing certificate and key."),
) -> None:
    """Make the server's application instance certificate (own/cert.der) and private key (own/key.pem)."""
    from opcua.security import make_certificate

    cert_path, key_path = pki_dir / "own" / "cert.der", pki_dir / "own" / "key.pem"
    if (cert_path.exists() or key_path.exists()) and not force:
        typer.echo(
            f"error: {cert_path} or {key_path} already exists; use --force to replace them "
            "(clients that trusted the old certificate must trust the new one)",
            err=True,
        )
        raise typer.Exit(1)
    hosts = hostname or [socket.gethostname(), "localhost"]
    made = make_certificate(
        cert_path,
        key_path,
        application_uri=application_uri,
        common_name=common_name,
        hostnames=hosts,
        days=days,
    )
    for sub in ("trusted", "rejected"):
        (pki_dir / sub).mkdir(parents=True, exist_ok=True)
    typer.echo(f"wrote {cert_path} and {key_path} (mode 600)")
    typer.echo(
        f"  subject {made.subject.rfc4514_string()}, uri {application_uri}, hosts {', '.join(hosts)}, "
        f"valid until {made.not_valid_after_utc:%Y-%m-%d}"
    )
    typer.echo(f"  give {cert_path} to the MES/SCADA admins so their clients can trust this server")


@opcua_app.command("client-cert")
def client_cert(
    out_dir: Path = typer.Argument(..., help="Where cert.der and key.pem are written."),
    application_uri: str = typer.Option(..., help="The client's ApplicationUri (its subjectAltName URI)."),
    common_name: str = typer.Option("opcua-client", help="Certificate subject CN."),
    trust_into: Path | None = typer.Option(None, help="Also trust it: copy into <pki-dir>/trusted."),
) -> None:
    """Make a client certificate (for a test client or a MES without its own PKI)."""
    from opcua.security import make_certificate, trust_certificate

    cert_path, key_path = out_dir / "cert.der", out_dir / "key.pem"
    make_certificate(
        cert_path,
        key_path,
        application_uri=application_uri,
        common_name=common_name,
        hostnames=["localhost"],
        server=False,
    )
    typer.echo(f"wrote {cert_path} and {key_path}")
    if trust_into is not None:
        typer.echo(f"trusted as {trust_certificate(cert_path, trust_into / 'trusted')}")


@opcua_app.command("hash-password")
def hash_password_command(
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="Prompted when not given (avoid putting it in shell history).",
    ),
) -> None:
    """Print the scrypt hash to put in `opcua.users[].password_hash`."""
    from contract.passwords import hash_password

    if len(password) < 8:
        typer.echo("error: use at least 8 characters", err=True)
        raise typer.Exit(1)
    typer.echo(hash_password(password))


@opcua_app.command("rejected")
def rejected(pki_dir: Path = PKI_OPTION) -> None:
    """List client certificates the server refused (newest first), to review before trusting."""
    from cryptography import x509

    from opcua.security import load_certificate_file

    folder = pki_dir / "rejected"
    files = (
        sorted(folder.glob("*.der"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.exists() else []
    )
    if not files:
        typer.echo(f"no rejected certificates in {folder}")
        return
    for path in files:
        try:
            cert = load_certificate_file(path)
        except ValueError:
            typer.echo(f"{path}: not a certificate")
            continue
        try:
            uris = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        typer.echo(
            f"{path}\n  subject {cert.subject.rfc4514_string()}  uri {', '.join(uris) or '-'}\n"
            f"  valid {cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}"
        )


@opcua_app.command("trust")
def trust(
    cert_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="DER or PEM certificate."),
    pki_dir: Path = PKI_OPTION,
) -> None:
    """Trust a client certificate (e.g. one from `rejected/`); takes effect at the client's next connect."""
    from opcua.security import trust_certificate

    try:
        target = trust_certificate(cert_file, pki_dir / "trusted")
    except ValueError as exc:
        typer.echo(f"error: {cert_file} is not a DER or PEM certificate ({exc})", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"trusted {cert_file} as {target}")


def register(app: typer.Typer) -> None:
    app.add_typer(opcua_app, name="opcua")

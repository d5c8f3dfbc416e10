"""`edge-inspect opcua ...` through the root CLI app."""

from __future__ import annotations

import stat

from cryptography import x509
from typer.testing import CliRunner

from contract.passwords import verify_password
from edge_agent.cli import app
from opcua.security import certificate_file_name, load_certificate_file

runner = CliRunner()


def test_cert_makes_a_server_certificate_and_refuses_to_overwrite(tmp_path):
    pki = tmp_path / "pki"
    result = runner.invoke(
        app,
        [
            "opcua",
            "cert",
            "--pki-dir",
            str(pki),
            "--hostname",
            "cell-7.plant",
            "--hostname",
            "10.0.0.7",
            "--application-uri",
            "urn:plant:cell7",
        ],
    )
    assert result.exit_code == 0, result.output
    cert = load_certificate_file(pki / "own" / "cert.der")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:plant:cell7"]
    assert san.get_values_for_type(x509.DNSName) == ["cell-7.plant"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and usage.data_encipherment
    assert stat.S_IMODE((pki / "own" / "key.pem").stat().st_mode) == 0o600
    assert (pki / "trusted").is_dir() and (pki / "rejected").is_dir()

    again = runner.invoke(app, ["opcua", "cert", "--pki-dir", str(pki)])
    assert again.exit_code == 1 and "--force" in again.output
    assert load_certificate_file(pki / "own" / "cert.der") == cert  # untouched


def test_rejected_then_trust(tmp_path):
    pki = tmp_path / "pki"
    made = runner.invoke(
        app,
        [
            "opcua",
            "client-cert",
            str(tmp_path / "mes"),
            "--application-uri",
            "urn:mes",
            "--common-name",
            "mes-prod",
        ],
    )
    assert made.exit_code == 0, made.output
    cert = load_certificate_file(tmp_path / "mes" / "cert.der")
    rejected = pki / "rejected" / certificate_file_name(cert)
    rejected.parent.mkdir(parents=True)
    rejected.write_bytes((tmp_path / "mes" / "cert.der").read_bytes())  # as the server keeps a refused one

    listing = runner.invoke(app, ["opcua", "rejected", "--pki-dir", str(pki)])
    assert listing.exit_code == 0 and "CN=mes-prod" in listing.output and "urn:mes" in listing.output
    trusted = runner.invoke(app, ["opcua", "trust", str(rejected), "--pki-dir", str(pki)])
    assert trusted.exit_code == 0, trusted.output
    assert (pki / "trusted" / rejected.name).exists() and not rejected.exists()
    assert (
        "no rejected certificates" in runner.invoke(app, ["opcua", "rejected", "--pki-dir", str(pki)]).output
    )

    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not a certificate")
    bad = runner.invoke(app, ["opcua", "trust", str(garbage), "--pki-dir", str(pki)])
    assert bad.exit_code == 1 and "garbage.der" in bad.output


def test_hash_password_prompts_and_hashes():
    result = runner.invoke(app, ["opcua", "hash-password"], input="line-op-2026\nline-op-2026\n")
    assert result.exit_code == 0, result.output
    digest = result.output.strip().splitlines()[-1]
    assert digest.startswith("scrypt$") and "line-op-2026" not in digest
    assert verify_password("line-op-2026", digest) and not verify_password("line-op-2027", digest)
    short = runner.invoke(app, ["opcua", "hash-password"], input="short\nshort\n")
    assert short.exit_code == 1

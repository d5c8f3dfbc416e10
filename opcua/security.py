"""Security of the production profile: certificates, trust folder, users and roles.

- `make_certificate()` writes an RSA key and a self-signed application instance certificate
  (what OPC UA Part 6 expects: URI in subjectAltName, key usages for signing and encryption).
- `TrustFolderValidator` accepts a client certificate only if it (or a CA that signed it) is in
  `pki/trusted/`; an untrusted one is copied into `pki/rejected/` for the admin to approve
  (`edge-inspect opcua trust <file>`), and the session is refused.
- `PasswordUserManager` checks username/password against scrypt hashes; anonymous gets no user.
- `RoleRuleset`: viewers read, browse, subscribe and call the read-only methods; operators may also
  write the PLC tags and call the control methods.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.ua.ua_binary import struct_from_binary
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contract.passwords import verify_password
from opcua.config import UserConfig

logger = logging.getLogger(__name__)


# -- certificates --------------------------------------------------------------------------------
def make_certificate(
    cert_path: Path,
    key_path: Path,
    *,
    application_uri: str,
    common_name: str = "edge-inspect",
    hostnames: Iterable[str] = (),
    days: int = 365 * 5,
    key_size: int = 2048,
    client: bool = True,
    server: bool = True,
) -> x509.Certificate:
    """Write a self-signed OPC UA application certificate (DER) and its private key (PEM, 0600).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> c = make_certificate(d / "c.der", d / "k.pem", application_uri="urn:x", key_size=2048)
    >>> c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
    ...     x509.UniformResourceIdentifier)
    ['urn:x']
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    names = list(hostnames) or [socket.gethostname(), "localhost"]
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert


def load_certificate_file(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def certificate_file_name(cert: x509.Certificate) -> str:
    """`<CN>_<sha1 thumbprint>.der`: the name a certificate gets in trusted/ and rejected/."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else "unnamed"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cn)[:40]
    thumb = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return f"{safe}_{thumb}.der"


# -- client certificate trust ----------------------------------------------------------------------
class TrustFolderValidator:
    """asyncua certificate validator backed by a trusted folder and a rejected folder.

    The trusted folder is re-read on every new session, so `edge-inspect opcua trust` takes effect
    without restarting the agent.
    """

    def __init__(self, trusted_dir: Path, rejected_dir: Path) -> None:
        self.trusted_dir = trusted_dir
        self.rejected_dir = rejected_dir
        trusted_dir.mkdir(parents=True, exist_ok=True)
        rejected_dir.mkdir(parents=True, exist_ok=True)
        self.rejected_count = 0

    def _trusted(self) -> list[x509.Certificate]:
        certs = []
        for path in sorted(self.trusted_dir.iterdir()):
            if path.suffix.lower() in (".der", ".pem", ".crt"):
                try:
                    certs.append(load_certificate_file(path))
                except ValueError:
                    logger.warning("opcua: %s in the trusted folder is not a certificate; ignored", path)
        return certs

    def is_trusted(self, cert: x509.Certificate) -> bool:
        der = cert.public_bytes(serialization.Encoding.DER)
        for anchor in self._trusted():
            if anchor.public_bytes(serialization.Encoding.DER) == der:
                return True
            try:  # signed by a trusted CA?
                is_ca = anchor.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if is_ca:
                try:
                    cert.verify_directly_issued_by(anchor)
                    return True
                except (ValueError, TypeError, Exception):
                    continue
        return False

    def reject(self, cert: x509.Certificate) -> Path:
        """Keep `cert` in the rejected folder (once) for the admin to review."""
        path = self.rejected_dir / certificate_file_name(cert)
        if not path.exists():
            path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        self.rejected_count += 1
        return path

    async def __call__(self, cert: x509.Certificate, app_description: ua.ApplicationDescription) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            self.reject(cert)
            logger.warning(
                "opcua: client certificate %s is outside its validity period; refused",
                cert.subject.rfc4514_string(),
            )
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)
        if not self.is_trusted(cert):
            path = self.reject(cert)
            logger.warning(
                "opcua: untrusted client certificate %s (application %s) refused and kept as %s; "
                "approve it with `edge-inspect opcua trust %s`",
                cert.subject.rfc4514_string(),
                app_description.ApplicationUri,
                path,
                path,
            )
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


def trust_certificate(cert_file: Path, trusted_dir: Path) -> Path:
    """Copy a certificate into the trusted folder (removing it from rejected/ if it came from there)."""
    cert = load_certificate_file(cert_file)
    trusted_dir.mkdir(parents=True, exist_ok=True)
    target = trusted_dir / certificate_file_name(cert)
    target.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    if cert_file.parent.name == "rejected" and cert_file.resolve() != target.resolve():
        cert_file.unlink()
    return target


def copy_into(folder: Path, cert_file: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(cert_file, folder / cert_file.name))


# -- users and roles -----------------------------------------------------------------------------
class PasswordUserManager:
    """asyncua user manager: username/password against scrypt hashes; anonymous is refused."""

    def __init__(self, users: Iterable[UserConfig]) -> None:
        self._users = {u.name: u for u in users}
        self.refused = 0

    def role_of(self, username: str | None) -> str | None:
        user = self._users.get(username or "")
        return user.role if user else None

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if not certificate:  # b"" on a channel without security
            # asyncua keeps the None channel open for discovery; no session may be activated on it
            self.refused += 1
            logger.warning("opcua: login of %r over a channel without security refused", username)
            return None
        user = self._users.get(username or "")
        if user is None or password is None or not verify_password(password, user.password_hash):
            self.refused += 1
            logger.warning("opcua: login refused for user %r", username)
            return None
        return User(role=UserRole.User, name=user.name)


class DemoUserManager:
    """`security: none`: everyone is an operator. Only for a demo bench."""

    def role_of(self, username: str | None) -> str:
        return "operator"

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User:
        return User(role=UserRole.User, name=username or "anonymous")


_WRITE = ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary)
_CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)


class RoleRuleset(SimpleRoleRuleset):
    """Viewer vs operator on top of asyncua's user/admin rules.

    A viewer may not write, and may only call the methods in `read_only_methods` (the result and
    recipe queries). The request body is decoded from a copy, so the server still reads it after.
    """

    def __init__(self, user_manager: PasswordUserManager | DemoUserManager) -> None:
        super().__init__()
        self.user_manager = user_manager
        self.read_only_methods: set[ua.NodeId] = set()
        self.denied = 0

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        if not super().check_validity(user, action_type_id, body):
            return False
        if action_type_id not in (_WRITE, _CALL) or user.role == UserRole.Admin:
            return True
        if self.user_manager.role_of(user.name) == "operator":
            return True
        if action_type_id == _CALL:
            params = struct_from_binary(ua.CallParameters, body.copy())
            if all(m.MethodId in self.read_only_methods for m in params.MethodsToCall):
                return True
        self.denied += 1
        logger.warning(
            "opcua: viewer %r may not %s", user.name, "write" if action_type_id == _WRITE else "call"
        )
        return False


SECURITY_POLICY_TYPES: dict[str, ua.SecurityPolicyType] = {
    "Basic256Sha256": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes128_Sha256_RsaOaep": ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    "Aes256_Sha256_RsaPss": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}

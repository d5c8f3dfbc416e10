"""Signed model manifests: ed25519 over a canonical JSON manifest (model sha256, card, target lines).

ML staff sign with a private key that never leaves them (`edge-inspect hub keys NAME`); agents trust
the public keys listed in their site file (`hub.trusted_keys`). An agent runs a model from the hub only
if the manifest's signature verifies with one of those keys, the file's sha256 is the manifest's, and
the manifest names the agent's own `site/line` as a target; otherwise it keeps its model and says why.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> keys = generate_signing_key(d, "ml-team")
    >>> m = {"manifest_version": 1, "model_sha256": "ab" * 32, "target": {"lines": ["plant-a/press"]}}
    >>> sig = sign_manifest(m, keys.private_file)
    >>> verify_manifest(m, sig, [keys.public_file])
    'ml-team'
    >>> verify_manifest({**m, "model_sha256": "cd" * 32}, sig, [keys.public_file])
    Traceback (most recent call last):
    ...
    contract.model_signing.ModelSignatureError: the manifest's signature does not verify with any ...

A manifest that names its signer (`signer: {key_id, name}`, as `hub publish` writes it) gets the precise
reason: *changed after it was signed* (its signer is trusted, the signature no longer matches) or
*signed with a key this agent does not trust*:

    >>> m = {**m, "signer": signer_of(keys.private_file)}
    >>> sig = sign_manifest(m, keys.private_file)
    >>> verify_manifest({**m, "target": {"lines": ["plant-a/weld"]}}, sig, [keys.public_file])
    Traceback (most recent call last):
    ...
    contract.model_signing.ModelSignatureError: the manifest was changed after it was signed: ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelSignatureError(Exception):
    """A model from the hub that must not run: bad signature, wrong hash, not for this line."""


@dataclass(frozen=True)
class SigningKeyFiles:
    private_file: Path
    public_file: Path


def generate_signing_key(folder: str | Path, name: str) -> SigningKeyFiles:
    """Write `<name>.ed25519` (private, PEM, 0600) and `<name>.pub` (public, PEM); never overwrites."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder)
    private_file, public_file = folder / f"{name}.ed25519", folder / f"{name}.pub"
    for existing in (private_file, public_file):
        if existing.exists():
            raise FileExistsError(f"{existing} exists already; remove it first if you really want a new key")
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(private_file, 0o600)
    public_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return SigningKeyFiles(private_file, public_file)


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8 (the same on every machine)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _public_raw(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key_file: str | Path) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(Path(public_key_file).read_bytes())
    return hashlib.sha256(_public_raw(key)).hexdigest()[:16]


def signer_of(private_key_file: str | Path) -> dict[str, str]:
    """`{key_id, name}` of a private key, to put in the manifest it signs (so a refusal can say why)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(private_key_file).read_bytes(), password=None)
    return {
        "key_id": hashlib.sha256(_public_raw(key.public_key())).hexdigest()[:16],
        "name": Path(private_key_file).stem,
    }


def sign_manifest(manifest: dict[str, Any], private_key_file: str | Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(Path(private_key_file).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"{private_key_file} is not an ed25519 private key (make one: edge-inspect hub keys)"
        )
    return base64.b64encode(key.sign(canonical(manifest))).decode()


def verify_manifest(manifest: dict[str, Any], signature: str, trusted_keys: list[Path]) -> str:
    """The name of the trusted key that signed `manifest`; raises `ModelSignatureError` otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not trusted_keys:
        raise ModelSignatureError("no trusted model-signing keys are configured (hub.trusted_keys)")
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError as exc:
        raise ModelSignatureError(f"the signature is not base64: {exc}") from exc
    data = canonical(manifest)
    ids: dict[str, Path] = {}
    for path in trusted_keys:
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ModelSignatureError(f"trusted key {path} cannot be read: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ModelSignatureError(f"trusted key {path} is not an ed25519 public key")
        ids[hashlib.sha256(_public_raw(key)).hexdigest()[:16]] = Path(path)
        try:
            key.verify(raw, data)
            return Path(path).stem
        except InvalidSignature:
            continue
    names = ", ".join(Path(p).name for p in trusted_keys)
    signer = manifest.get("signer") if isinstance(manifest.get("signer"), dict) else {}
    claimed = str(signer.get("key_id") or "")
    if claimed in ids:
        raise ModelSignatureError(
            f"the manifest was changed after it was signed: it names trusted key {ids[claimed].name} as its "
            "signer, but the signature does not match its content"
        )
    if claimed:
        raise ModelSignatureError(
            f"the manifest is signed with key {signer.get('name') or '?'} (id {claimed}), which is not one "
            f"of this agent's trusted keys ({names})"
        )
    raise ModelSignatureError(
        f"the manifest's signature does not verify with any trusted key ({names}): it names no signer, so "
        "it was either signed with another key or changed after signing"
    )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_model(
    manifest: dict[str, Any], signature: str, model_file: Path, site: str, line: str, trusted_keys: list[Path]
) -> str:
    """Everything an agent checks before it loads a model from the hub; returns the signer's key name."""
    signer = verify_manifest(manifest, signature, trusted_keys)
    actual = file_sha256(model_file)
    if actual != manifest.get("model_sha256"):
        raise ModelSignatureError(
            f"{model_file.name}: sha256 {actual[:16]}… is not the signed "
            f"{str(manifest.get('model_sha256'))[:16]}…"
        )
    targets = (manifest.get("target") or {}).get("lines") or []
    if f"{site}/{line}" not in targets:
        raise ModelSignatureError(
            f"the signed manifest does not target {site}/{line} (it targets "
            f"{', '.join(targets) or 'nothing'})"
        )
    return signer

"""Password hashes: one format for every login of the project (console, hub, OPC UA users).

A hash names its own cost, so the cost can rise without breaking stored hashes:
`scrypt$N$r$p$salt_b64$digest_b64` (scrypt, 32-byte digest, 16-byte random salt). `edge-inspect opcua
hash-password` and `edge-inspect console hash-password` print one for YAML files; the hub stores one
per dashboard user.

Older hubs stored `scrypt$salt_b64$digest_b64` (the same scrypt cost, not named). Such a hash still
verifies, and `needs_rehash` says it should be replaced: the hub rewrites it at the user's next successful
login.

Example:
    >>> h = hash_password("s3cret")
    >>> h.startswith("scrypt$16384$8$1$"), verify_password("s3cret", h), verify_password("wrong", h)
    (True, True, False)
    >>> needs_rehash(h), is_password_hash(h), is_password_hash("s3cret")
    (False, True, False)
    >>> old = legacy_hub_hash("s3cret", b"0" * 16)  # what a hub before the change stored
    >>> verify_password("s3cret", old), needs_rehash(old)
    (True, True)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# scrypt cost: ~50 ms per check on a factory PC; only paid at a login or an OPC UA session activation.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_DKLEN = 32


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=2**27)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A self-describing scrypt hash of `password`: `scrypt$N$r$p$salt_b64$digest_b64`."""
    salt = salt if salt is not None else os.urandom(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _parts(password_hash: str) -> tuple[int, int, int, bytes, bytes] | None:
    """(N, r, p, salt, digest) of a current or legacy hash, None when it is neither."""
    fields = password_hash.split("$")
    b64 = base64.b64decode
    try:
        if len(fields) == 6 and fields[0] == "scrypt":
            n, r, p = int(fields[1]), int(fields[2]), int(fields[3])
            return n, r, p, b64(fields[4], validate=True), b64(fields[5], validate=True)
        if len(fields) == 3 and fields[0] == "scrypt":  # the hub's former format: the cost was implied
            return SCRYPT_N, SCRYPT_R, SCRYPT_P, b64(fields[1], validate=True), b64(fields[2], validate=True)
    except ValueError:  # int() or base64 (binascii.Error is a ValueError)
        return None
    return None


def is_password_hash(value: str) -> bool:
    """True for a hash `verify_password` can check (current or legacy format), False for anything else
    (a plain-text password pasted into a YAML file, a truncated hash)."""
    parts = _parts(value)
    return parts is not None and len(parts[4]) == _DKLEN and parts[0] > 1


def verify_password(password: str, password_hash: str) -> bool:
    """Constant-time check of `password` against a hash in the current or a legacy format."""
    parts = _parts(password_hash)
    if parts is None:
        return False
    n, r, p, salt, digest = parts
    try:
        computed = _scrypt(password, salt, n, r, p)
    except ValueError:  # scrypt parameters out of range: not a hash we made
        return False
    return hmac.compare_digest(computed, digest)


def needs_rehash(password_hash: str) -> bool:
    """True when the hash should be replaced after a successful login: a legacy format or a lower cost."""
    parts = _parts(password_hash)
    if parts is None or password_hash.count("$") != 5:
        return True
    n, r, p, _, _ = parts
    return n < SCRYPT_N or r < SCRYPT_R or p < SCRYPT_P


def legacy_hub_hash(password: str, salt: bytes) -> str:
    """The format hubs stored before one format was kept (`scrypt$salt_b64$digest_b64`); for tests and
    for fixtures of old databases only, never for new hashes."""
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"

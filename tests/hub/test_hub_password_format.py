"""One password-hash format (contract.passwords) for the hub, the console and OPC UA users; a hub user
whose hash an older hub wrote still logs in, and that login rewrites the hash in the one format."""

from __future__ import annotations

import doctest
import time

import contract.passwords
from contract.passwords import (
    hash_password,
    is_password_hash,
    legacy_hub_hash,
    needs_rehash,
    verify_password,
)
from hub.auth import Users
from hub.store import HubStore


def test_docstring_examples() -> None:
    result = doctest.testmod(contract.passwords)
    assert result.attempted > 0 and result.failed == 0


def test_console_and_opcua_hashes_written_before_still_verify() -> None:
    # Made by opcua.config.hash_password before it moved (same salt, same cost): byte for byte the format.
    h = hash_password("line-op-2026", salt=b"\x01" * 16)
    assert h.split("$")[:4] == ["scrypt", "16384", "8", "1"]
    assert verify_password("line-op-2026", h) and not verify_password("line-op-2027", h)
    assert not needs_rehash(h)


def test_garbage_is_no_hash() -> None:
    for value in ["", "s3cret", "scrypt$", "scrypt$1$2$3$4$5", "scrypt$16384$8$1$%%%$AAAA", "bcrypt$x$y"]:
        assert not is_password_hash(value)
        assert not verify_password("s3cret", value)


def test_a_legacy_hub_hash_logs_in_once_and_is_rewritten(tmp_path) -> None:
    store = HubStore.open(str(tmp_path / "hub.sqlite"))
    try:
        users = Users(store.db)
        legacy = legacy_hub_hash("correct horse", b"\x07" * 16)
        store.db.execute(
            "INSERT INTO users(name, password_hash, role, created_at) VALUES (?,?,?,?)",
            ("ana", legacy, "ml", time.time()),
        )

        assert users.check("ana", "wrong password") is None
        (stored,) = store.db.query("SELECT password_hash FROM users WHERE name = 'ana'")[0]
        assert stored == legacy  # a failed login changes nothing

        assert users.check("ana", "correct horse") == "ml"
        (stored,) = store.db.query("SELECT password_hash FROM users WHERE name = 'ana'")[0]
        assert stored != legacy and stored.startswith("scrypt$16384$8$1$") and not needs_rehash(stored)
        assert users.check("ana", "correct horse") == "ml"
        assert users.check("ana", "wrong password") is None

        users.set("bo", "another password", "viewer")  # new users get the one format straight away
        (stored,) = store.db.query("SELECT password_hash FROM users WHERE name = 'bo'")[0]
        assert not needs_rehash(stored) and verify_password("another password", stored)
        assert users.check("nobody", "another password") is None
    finally:
        store.close()

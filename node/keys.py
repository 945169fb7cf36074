"""The node's Ed25519 key: generated on first start, stored as PEM (mode 0600)."""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def load_key(path: Path) -> Ed25519PrivateKey:
    """An existing key; ValueError (one line) when the file is not an unencrypted Ed25519 PEM key."""
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key ({str(exc).splitlines()[0]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def missing_key_message(path: Path, flag: str = "--key") -> str:
    """Why a named key file that does not exist is refused (a typo must not mine or sign under a new key)."""
    return (f"{flag} {path}: no such key file; create it with `polchain keys new --key {path}`, "
            f"or pass --create-key to create it now")


def open_key(path: Path, *, create: bool = False, flag: str = "--key") -> Ed25519PrivateKey:
    """A key file the operator named: loaded; created only when ``create`` says so. ValueError (one
    line) when it is missing (and not to be created) or not a key."""
    path = Path(path)
    if not path.exists() and not create:
        raise ValueError(missing_key_message(path, flag))
    return load_or_create_key(path)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    if path.exists():
        return load_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key

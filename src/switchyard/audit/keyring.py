"""Ed25519 signing keys for checkpoints, kept in a folder as a key ring.

`<key id>.key` holds a private key (PKCS#8 PEM, owner-only), `<key id>.pub` its public key and
`current` the id new checkpoints are signed with. Rotation adds a key and moves `current`; no
public key is ever removed, so every checkpoint stays verifiable. The key id is derived from
the public key, so a checkpoint names exactly the key that can check it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

CURRENT: Final = "current"
PRIVATE_SUFFIX: Final = ".key"
PUBLIC_SUFFIX: Final = ".pub"


class KeyRingError(Exception):
    pass


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass(slots=True)
class Signer:
    key_id: str
    private: Ed25519PrivateKey = field(repr=False)

    def sign(self, message: bytes) -> str:
        return self.private.sign(message).hex()

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


class KeyRing:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def generate(self, *, make_current: bool = True) -> str:
        """A new signing key; it becomes `current` unless told otherwise. Returns its id."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Ed25519PrivateKey.generate()
        kid = key_id(private.public_key())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(self.folder / f"{kid}{PRIVATE_SUFFIX}", pem, 0o600)
        _write_new(
            self.folder / f"{kid}{PUBLIC_SUFFIX}", public_pem(private.public_key()).encode(), 0o644
        )
        if make_current:
            self._point_current(kid, replace=True)
        return kid

    def ensure(self) -> str:
        """The current key id, making the ring's first key if it has none. Two processes
        starting at once agree on one key: `current` is created exclusively."""
        current = self.current_id()
        if current is not None:
            return current
        kid = self.generate(make_current=False)
        self._point_current(kid, replace=False)
        found = self.current_id()
        if found is None:
            raise KeyRingError(f"{self.folder}: no current signing key")
        return found

    def current_id(self) -> str | None:
        try:
            value = (self.folder / CURRENT).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyRingError(f"{self.folder / CURRENT}: unreadable: {exc}") from None
        return value or None

    def signer(self) -> Signer:
        kid = self.ensure()
        path = self.folder / f"{kid}{PRIVATE_SUFFIX}"
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyRingError(f"{path}: not a usable signing key ({type(exc).__name__})") from None
        if not isinstance(private, Ed25519PrivateKey) or key_id(private.public_key()) != kid:
            raise KeyRingError(f"{path}: not the Ed25519 key {kid}")
        return Signer(kid, private)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every public key of the ring, by id (the verifier's trust)."""
        out: dict[str, Ed25519PublicKey] = {}
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.glob(f"*{PUBLIC_SUFFIX}")):
            try:
                public = serialization.load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise KeyRingError(f"{path}: not a public key ({type(exc).__name__})") from None
            if not isinstance(public, Ed25519PublicKey):
                raise KeyRingError(f"{path}: not an Ed25519 public key")
            out[key_id(public)] = public
        return out

    def _point_current(self, kid: str, *, replace: bool) -> None:
        tmp = self.folder / f".{CURRENT}.{secrets.token_hex(6)}"
        tmp.write_text(kid + "\n", encoding="ascii")
        try:
            if replace:
                os.replace(tmp, self.folder / CURRENT)
            else:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, self.folder / CURRENT)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def verify(public: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        public.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

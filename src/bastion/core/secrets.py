"""Random tokens, token hashing, signing and encryption, all rooted in SECRET_KEY.

Keys are derived with HKDF per purpose, so one secret never signs two kinds of thing.
Key rings list keys newest first: the first signs or encrypts, all verify or decrypt,
which is how rotation works (the itsdangerous lesson).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_BYTES = 32


def new_token(nbytes: int = TOKEN_BYTES) -> str:
    """URL-safe random token (SPEC §5, §7: 32 random bytes)."""
    return secrets.token_urlsafe(nbytes)


def new_id() -> str:
    """Public identifier for rows: 128 random bits, hex."""
    return secrets.token_hex(16)


def token_hash(token: str) -> str:
    """SHA-256 hex: what the database stores instead of a bearer secret."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def derive_key(secret: str, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of the root secret, separated by purpose."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"bastion", info=purpose.encode()
    ).derive(secret.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """HMAC-SHA256 signatures over short strings, verified against a key ring."""

    def __init__(self, secrets_newest_first: Sequence[str], purpose: str) -> None:
        if not secrets_newest_first:
            raise ValueError("at least one secret is required")
        self._keys = [derive_key(s, "sign:" + purpose) for s in secrets_newest_first]

    def _mac(self, key: bytes, value: str) -> str:
        return _b64(hmac.new(key, value.encode(), hashlib.sha256).digest())

    def signature(self, value: str) -> str:
        return self._mac(self._keys[0], value)

    def sign(self, value: str) -> str:
        return f"{value}.{self.signature(value)}"

    def valid_signature(self, value: str, signature: str) -> bool:
        return any(
            hmac.compare_digest(self._mac(k, value).encode(), signature.encode("utf-8", "replace"))
            for k in self._keys
        )

    def unsign(self, signed: str) -> str | None:
        """The value when the signature checks out with any key of the ring, else None."""
        value, sep, signature = signed.rpartition(".")
        if not sep or not self.valid_signature(value, signature):
            return None
        return value


class Encryptor:
    """Authenticated encryption at rest (Fernet: AES-128-CBC + HMAC), rotatable."""

    def __init__(self, secrets_newest_first: Sequence[str], purpose: str) -> None:
        if not secrets_newest_first:
            raise ValueError("at least one secret is required")
        self._fernet = MultiFernet(
            [
                Fernet(base64.urlsafe_b64encode(derive_key(s, "encrypt:" + purpose)))
                for s in secrets_newest_first
            ]
        )

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str | None:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except (InvalidToken, ValueError):
            return None

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt under the newest key."""
        return self._fernet.rotate(ciphertext.encode()).decode()

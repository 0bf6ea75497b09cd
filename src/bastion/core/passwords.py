"""Password hashing and policy (SPEC §4).

Argon2id with at least OWASP's minimum parameters; bcrypt hashes from older systems
verify and are flagged for rehash. Hashing is CPU-bound and the caller runs it off the
event loop; this module stays synchronous and pure.
"""

from __future__ import annotations

import gzip
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import bcrypt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.core import argon2_sodium

MIN_LENGTH = 8
MAX_LENGTH = 1024
NIST_MIN_LENGTH = 15
NIST_MIN_LENGTH_WITH_MFA = 8
POLICIES = ("standard", "nist")


@dataclass(frozen=True)
class Argon2Params:
    """OWASP Password Storage Cheat Sheet minimum: m=19 MiB, t=2, p=1."""

    time_cost: int = 2
    memory_cost: int = 19456
    parallelism: int = 1


class PasswordTooLong(ValueError):
    """Refused before hashing so that a huge password never costs a slow hash."""


def normalize(password: str) -> str:
    """NFKC, so that the same password typed on different keyboards matches."""
    return unicodedata.normalize("NFKC", password)


class Hasher:
    """Argon2id hasher that also verifies legacy bcrypt hashes."""

    def __init__(self, params: Argon2Params | None = None) -> None:
        p = params or Argon2Params()
        self._params = p
        self._argon = PasswordHasher(
            time_cost=p.time_cost,
            memory_cost=p.memory_cost,
            parallelism=p.parallelism,
            type=Type.ID,
        )
        self._rehash_by_shape: dict[tuple[Any, ...], bool] = {}

    def hash(self, password: str) -> str:
        """Argon2id with the configured parameters: through libsodium for one lane
        (core/argon2_sodium.py), argon2-cffi otherwise; the same string format."""
        pw = normalize(password)
        if len(pw) > MAX_LENGTH:
            raise PasswordTooLong
        p = self._params
        if p.parallelism == 1:
            return argon2_sodium.hash_password(pw.encode(), p.time_cost, p.memory_cost)
        return self._argon.hash(pw)

    def verify(self, stored_hash: str, password: str) -> bool:
        """True when the password matches; never raises for a malformed hash."""
        pw = normalize(password)
        if len(pw) > MAX_LENGTH:
            return False
        if stored_hash.startswith(("$2b$", "$2a$", "$2y$")):
            try:
                return bcrypt.checkpw(pw.encode()[:72], stored_hash.encode())
            except ValueError:
                return False
        found = argon2_sodium.verify(stored_hash, pw.encode())
        if found is not None:
            return found
        try:
            return self._argon.verify(stored_hash, pw)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """bcrypt and outdated Argon2 parameters are upgraded at the next login."""
        if not stored_hash.startswith("$argon2id$"):
            return True
        # The answer depends on the parameters and the salt and hash lengths only: worked
        # out once per shape, not parsed again at every sign-in.
        parts = stored_hash.split("$")
        shape = ("$".join(parts[:4]), *map(len, parts[4:]))
        known = self._rehash_by_shape.get(shape)
        if known is None:
            try:
                known = self._argon.check_needs_rehash(stored_hash)
            except (InvalidHashError, ValueError):
                return True  # not remembered: says nothing of well-formed hashes
            if len(self._rehash_by_shape) < 64:
                self._rehash_by_shape[shape] = known
        return known


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list (see core/data/README.md for its source)."""
    raw = resources.files("bastion.core").joinpath("data/common-passwords.txt.gz").read_bytes()
    text = gzip.decompress(raw).decode("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def policy_violations(
    password: str, *, policy: str = "standard", email: str | None = None, mfa_enabled: bool = False
) -> list[str]:
    """Return one human-readable string per unmet rule; empty means acceptable."""
    pw = normalize(password)
    problems: list[str] = []
    if len(pw) > MAX_LENGTH:
        return [f"must be at most {MAX_LENGTH} characters"]
    if policy == "nist":
        minimum = NIST_MIN_LENGTH_WITH_MFA if mfa_enabled else NIST_MIN_LENGTH
        if len(pw) < minimum:
            problems.append(f"must be at least {minimum} characters")
    else:
        if len(pw) < MIN_LENGTH:
            problems.append(f"must be at least {MIN_LENGTH} characters")
        if not any(c.isupper() for c in pw):
            problems.append("must contain an uppercase letter")
        if not any(c.islower() for c in pw):
            problems.append("must contain a lowercase letter")
        if not any(c.isdigit() for c in pw):
            problems.append("must contain a digit")
        if all(c.isalnum() for c in pw):
            problems.append("must contain a symbol")
    if pw.lower() in common_passwords():
        problems.append("must not be a commonly used password")
    if policy == "nist" and email:
        local = email.split("@", 1)[0].lower()
        if len(local) >= 3 and local in pw.lower():
            problems.append("must not contain your email address")
    return problems

"""JWT signing keys (SPEC §8): generated at first start, cached per process, rotated with
``bastion keys rotate``.

- Private keys are stored as PEM encrypted with ``Encryptor(ring, "signing-keys")``
  (HKDF of SECRET_KEY, its own purpose: a leaked MFA key cannot open signing keys).
- The newest key without ``retired_at`` signs. A rotation retires it and adds a new one
  in one transaction. A retired key stays published in the JWKS (and accepted) until
  ``ACCESS_TOKEN_TTL`` + ``PUBLISH_MARGIN`` after its retirement, then drops out: by then
  every token it signed has expired, even one signed by a process that had not yet
  noticed the rotation.
- Each process caches the key set and reloads it every ``REFRESH_INTERVAL`` seconds, so
  a rotation made by another process (or the CLI) is seen within that time. A token with
  an unknown ``kid`` and a JWKS request force an earlier reload (at most once a second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core import jwt as core_jwt
from bastion.core.secrets import Encryptor
from bastion.flows.context import utcnow
from bastion.runtime import Bastion
from bastion.settings import Settings
from bastion.store import signing_keys as key_store
from bastion.store.db import Database

log = logging.getLogger("bastion.keys")

REFRESH_INTERVAL = 30.0  # seconds a process trusts its cached key set
FORCED_RELOAD_INTERVAL = 1.0  # unknown kid / JWKS request: reload at most this often
PUBLISH_MARGIN = int(REFRESH_INTERVAL) + 30  # seconds beyond ACCESS_TOKEN_TTL


def encryptor(settings: Settings) -> Encryptor:
    return Encryptor(settings.secret_ring, "signing-keys")


@dataclass(frozen=True)
class KeySet:
    signing: core_jwt.SigningKey | None
    verification: dict[str, core_jwt.VerificationKey]
    jwks: list[dict[str, Any]]


def published_until(retired_at: datetime, access_ttl: int) -> datetime:
    return retired_at + timedelta(seconds=access_ttl + PUBLISH_MARGIN)


def build_key_set(
    rows: Sequence[RowMapping],
    now: datetime,
    access_ttl: int,
    load_signing: Callable[[RowMapping], core_jwt.SigningKey | None],
) -> KeySet:
    """Published: active keys, and retired keys until ``published_until``. The newest
    active key signs (``load_signing(row)`` decrypts it)."""
    verification: dict[str, core_jwt.VerificationKey] = {}
    jwks: list[dict[str, Any]] = []
    active: list[RowMapping] = []
    for row in rows:
        retired = row["retired_at"]
        if retired is not None and published_until(retired, access_ttl) <= now:
            continue
        try:
            key = core_jwt.public_key_from_jwk(row["public_jwk"])
        except (ValueError, KeyError, TypeError):
            log.error("signing key %s has an unreadable public JWK; skipped", row["kid"])
            continue
        verification[key.kid] = key
        jwks.append(dict(row["public_jwk"]))
        if retired is None:
            active.append(row)
    newest = max(active, key=lambda r: (r["created_at"], r["kid"]), default=None)
    signing = load_signing(newest) if newest is not None else None
    return KeySet(signing, verification, jwks)


@dataclass
class KeyCache:
    """One per process and container: the key set, reloaded lazily."""

    db: Database
    settings: Settings
    enc: Encryptor
    _set: KeySet | None = None
    _loaded_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _private: dict[str, core_jwt.SigningKey] = field(default_factory=dict)

    def _load_signing(self, row: RowMapping) -> core_jwt.SigningKey | None:
        kid = str(row["kid"])
        if kid not in self._private:
            key = decrypt_key(self.enc, row)
            if key is None:
                log.error("signing key %s cannot be decrypted with SECRET_KEY", kid)
                return None
            self._private[kid] = key
        return self._private[kid]

    async def get(self, max_age: float = REFRESH_INTERVAL) -> KeySet:
        if self._set is None or time.monotonic() - self._loaded_at > max_age:
            async with self._lock:
                if self._set is None or time.monotonic() - self._loaded_at > max_age:
                    await self._reload()
        assert self._set is not None  # noqa: S101 - loaded above
        return self._set

    async def _reload(self) -> None:
        async with self.db.read() as conn:
            rows = await key_store.all_keys(conn)
        self._set = build_key_set(
            rows, utcnow(), self.settings.access_token_ttl, self._load_signing
        )
        self._loaded_at = time.monotonic()


_caches: dict[int, tuple[Bastion, KeyCache]] = {}


def cache_for(bx: Bastion) -> KeyCache:
    """The key cache of this container (a process normally has one container)."""
    entry = _caches.get(id(bx))
    if entry is None or entry[0] is not bx:
        entry = (bx, KeyCache(bx.db, bx.settings, encryptor(bx.settings)))
        _caches[id(bx)] = entry
    return entry[1]


def forget(bx: Bastion) -> None:
    _caches.pop(id(bx), None)


def decrypt_key(enc: Encryptor, row: RowMapping) -> core_jwt.SigningKey | None:
    pem = enc.decrypt(row["private_key"])
    if pem is None:
        return None
    try:
        private = core_jwt.load_private_key(pem, str(row["alg"]))
    except ValueError:
        return None
    return core_jwt.SigningKey(str(row["kid"]), str(row["alg"]), private)


async def _add_key(
    conn: AsyncConnection, enc: Encryptor, alg: str, now: datetime
) -> core_jwt.NewKey:
    new = core_jwt.generate_key(alg)
    await key_store.insert(
        conn,
        kid=new.kid,
        alg=new.alg,
        private_key=enc.encrypt(new.private_pem),
        public_jwk=new.public_jwk,
        created_at=now,
        retired_at=None,
    )
    return new


async def ensure_signing_key(
    db: Database, settings: Settings, alg: str = core_jwt.DEFAULT_ALG
) -> str | None:
    """At start: make sure one usable key signs. Safe when several workers start at
    once (serialised by ``key_store.lock``). Returns the kid added, if any."""
    enc = encryptor(settings)
    now = utcnow()
    async with db.write() as conn:
        await key_store.lock(conn)
        active = await key_store.active(conn)
        if any(decrypt_key(enc, row) is not None for row in active):
            return None
        if active:
            # SECRET_KEY changed without OLD_SECRET_KEYS: the key cannot sign any more.
            log.warning("the signing key cannot be decrypted; retiring it and adding one")
            await key_store.retire_active(conn, now)
        new = await _add_key(conn, enc, alg, now)
    log.info("generated JWT signing key %s (%s)", new.kid, new.alg)
    return new.kid


@dataclass(frozen=True)
class Rotation:
    kid: str
    alg: str
    retired: list[str]
    published_until: datetime


async def rotate(db: Database, settings: Settings, alg: str = core_jwt.DEFAULT_ALG) -> Rotation:
    """Retire the signing key(s) and add a new one, in one transaction; drop keys whose
    publication window has passed."""
    if alg not in core_jwt.ALGORITHMS:
        raise ValueError(
            f"unsupported algorithm {alg!r} (use one of {', '.join(core_jwt.ALGORITHMS)})"
        )
    enc = encryptor(settings)
    now = utcnow()
    async with db.write() as conn:
        await key_store.lock(conn)
        retired = await key_store.retire_active(conn, now)
        new = await _add_key(conn, enc, alg, now)
        await key_store.delete_retired_before(
            conn, now - timedelta(seconds=settings.access_token_ttl + PUBLISH_MARGIN)
        )
    return Rotation(new.kid, new.alg, retired, published_until(now, settings.access_token_ttl))


async def list_keys(db: Database, settings: Settings) -> list[dict[str, Any]]:
    now = utcnow()
    async with db.read() as conn:
        rows = await key_store.all_keys(conn)
    out = []
    for row in rows:
        retired = row["retired_at"]
        until = published_until(retired, settings.access_token_ttl) if retired else None
        state = (
            "signing" if retired is None else ("published" if until and until > now else "expired")
        )
        out.append(
            {
                "kid": row["kid"],
                "alg": row["alg"],
                "created_at": row["created_at"],
                "retired_at": retired,
                "state": state,
            }
        )
    return out


async def rotate_in_new_db(settings: Settings, alg: str = core_jwt.DEFAULT_ALG) -> Rotation:
    """For the CLI: rotate with a short-lived connection pool."""
    db = Database(settings.database_url)
    try:
        return await rotate(db, settings, alg)
    finally:
        await db.dispose()


async def list_in_new_db(settings: Settings) -> list[dict[str, Any]]:
    db = Database(settings.database_url)
    try:
        return await list_keys(db, settings)
    finally:
        await db.dispose()

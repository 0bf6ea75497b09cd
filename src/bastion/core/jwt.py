"""JWT access tokens (SPEC §8): asymmetric signing keys, JWK export, signing with a
``kid`` header, and verification with the algorithm pinned to the key.

Pure: no I/O, the clock is a parameter. RFC 7519 (JWT), RFC 7517/7518 (JWK/JWA),
RFC 8037 (EdDSA in JOSE), RFC 9068 (JWT access tokens, ``typ: at+jwt``) and RFC 8725
(JWT best practice: pin the algorithm per key, refuse ``none``, never let a public key
double as an HMAC secret).
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl import bindings as sodium

ALGORITHMS = ("EdDSA", "ES256")  # asymmetric only: HMAC and "none" are never accepted
DEFAULT_ALG = "EdDSA"
JWT_TYP = "at+jwt"  # RFC 9068 §2.1
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti")
MAX_TOKEN_LENGTH = 8192
# Servers share a clock in practice; tolerate a little skew on "issued at" only.
IAT_SKEW = 60

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class TokenError(Exception):
    """The token is not a valid access token; the message says why (never the token)."""


class UnknownKey(TokenError):
    """Signed with a ``kid`` this key set does not hold (perhaps rotated elsewhere)."""


@dataclass(frozen=True)
class NewKey:
    kid: str
    alg: str
    private_pem: str  # PKCS#8, unencrypted: the caller encrypts it at rest
    public_jwk: dict[str, str]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private_key: PrivateKey

    @functools.cached_property
    def ed25519_secret(self) -> bytes:
        """libsodium's form of an Ed25519 key (seed and public key, 64 bytes), derived
        once per key: ``sign`` hands it to libsodium on every token."""
        assert isinstance(self.private_key, ed25519.Ed25519PrivateKey)  # noqa: S101
        return bytes(sodium.crypto_sign_seed_keypair(self.private_key.private_bytes_raw())[1])


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    alg: str
    public_key: PublicKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_kid() -> str:
    return secrets.token_urlsafe(12)


def generate_key(alg: str = DEFAULT_ALG, kid: str | None = None) -> NewKey:
    """A fresh key pair: Ed25519 for EdDSA (default), P-256 for ES256."""
    private: PrivateKey
    if alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r} (use one of {ALGORITHMS})")
    kid = kid or new_kid()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return NewKey(kid, alg, pem, public_jwk(private.public_key(), kid, alg))


def load_private_key(pem: str, alg: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if alg == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if (
        alg == "ES256"
        and isinstance(key, ec.EllipticCurvePrivateKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise ValueError(f"stored key does not match algorithm {alg!r}")


def public_jwk(public_key: PublicKey, kid: str, alg: str) -> dict[str, str]:
    """RFC 7517 JWK of a public key (RFC 8037 OKP for Ed25519, RFC 7518 EC for P-256)."""
    if alg == "EdDSA" and isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64(raw),
            "kid": kid,
            "alg": alg,
            "use": "sig",
        }
    if alg == "ES256" and isinstance(public_key, ec.EllipticCurvePublicKey):
        numbers = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
            "kid": kid,
            "alg": alg,
            "use": "sig",
        }
    raise ValueError(f"key does not match algorithm {alg!r}")


def public_key_from_jwk(jwk: Mapping[str, Any]) -> VerificationKey:
    """Parse one of our published JWKs back into a verification key."""
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if not isinstance(kid, str) or alg not in ALGORITHMS:
        raise ValueError("JWK without kid or with an unsupported alg")
    if alg == "EdDSA" and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        key: PublicKey = ed25519.Ed25519PublicKey.from_public_bytes(_unb64(str(jwk["x"])))
    elif alg == "ES256" and jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(_unb64(str(jwk["x"])), "big"),
            int.from_bytes(_unb64(str(jwk["y"])), "big"),
            ec.SECP256R1(),
        ).public_key()
    else:
        raise ValueError("JWK type does not match its alg")
    return VerificationKey(kid, str(alg), key)


def access_claims(
    *,
    issuer: str,
    subject: str,
    audience: str,
    now: int,
    ttl: int,
    role: str,
    sid: str | None,
    ver: int,
    jti: str | None = None,
) -> dict[str, Any]:
    return {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + ttl,
        "jti": jti or secrets.token_urlsafe(16),
        "role": role,
        "sid": sid,
        "ver": ver,
    }


def sign(key: SigningKey, claims: Mapping[str, Any]) -> str:
    """A compact JWS. EdDSA tokens are assembled here (the header segment is built once
    per key; PyJWT's generic path cost 70 % on top of the signature itself, on every
    refresh grant) and signed by libsodium: Ed25519 is deterministic, so the signature
    is the one OpenSSL would make, in 18 µs instead of 30 (OpenSSL sets up a signing
    context on every call). ES256 goes through PyJWT, which converts the DER signature."""
    if isinstance(key.private_key, ed25519.Ed25519PrivateKey):
        payload = _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
        signing_input = f"{_header_segment(key.kid, key.alg)}.{payload}"
        signed = sodium.crypto_sign(signing_input.encode(), key.ed25519_secret)
        return f"{signing_input}.{_b64(signed[: sodium.crypto_sign_BYTES])}"
    return pyjwt.encode(
        dict(claims),
        key.private_key,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": JWT_TYP},
    )


@functools.lru_cache(maxsize=64)
def _header_segment(kid: str, alg: str) -> str:
    header = {"alg": alg, "kid": kid, "typ": JWT_TYP}
    return _b64(json.dumps(header, separators=(",", ":")).encode())


def unverified_kid(token: str) -> str | None:
    """The ``kid`` header, unverified (to pick the key), or None when malformed."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        header = pyjwt.get_unverified_header(token)
    except pyjwt.PyJWTError:
        return None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and unverified_kid(token) is not None


def verify(
    token: str,
    keys: Mapping[str, VerificationKey],
    *,
    audience: str,
    issuer: str,
    now: float,
) -> dict[str, Any]:
    """The claims of a valid access token, else TokenError.

    The key is chosen by ``kid`` and its algorithm is the only one accepted, so ``none``,
    HMAC with a public key as the secret, or another asymmetric algorithm all fail.
    ``exp`` is required and checked against ``now`` (the injectable clock).
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("malformed token")
    try:
        header = pyjwt.get_unverified_header(token)
    except pyjwt.PyJWTError:
        raise TokenError("malformed token") from None
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise TokenError("no kid")
    key = keys.get(kid)
    if key is None:
        raise UnknownKey("unknown kid")
    if header.get("alg") != key.alg or key.alg not in ALGORITHMS:
        raise TokenError("algorithm not allowed for this key")
    typ = header.get("typ", JWT_TYP)
    if not isinstance(typ, str) or typ.lower() not in (JWT_TYP, "application/" + JWT_TYP):
        raise TokenError("not an access token")
    try:
        claims: dict[str, Any] = pyjwt.decode(
            token,
            key.public_key,
            algorithms=[key.alg],
            audience=audience,
            issuer=issuer,
            options={
                "require": list(REQUIRED_CLAIMS),
                # Checked below against the injected clock instead of PyJWT's own.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except pyjwt.PyJWTError as exc:
        raise TokenError(type(exc).__name__) from None
    exp, iat = _number(claims.get("exp")), _number(claims.get("iat"))
    if exp is None or iat is None:
        raise TokenError("exp and iat must be numbers")
    if exp <= now:
        raise TokenError("expired")
    if iat > now + IAT_SKEW:
        raise TokenError("issued in the future")
    nbf = claims.get("nbf")
    if nbf is not None and ((nbf := _number(nbf)) is None or nbf > now + IAT_SKEW):
        raise TokenError("not yet valid")
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
        raise TokenError("sub and jti must be strings")
    ver = claims.get("ver")
    if not isinstance(ver, int) or isinstance(ver, bool):
        raise TokenError("ver must be an integer")
    sid = claims.get("sid")
    if sid is not None and not isinstance(sid, str):
        raise TokenError("sid must be a string")
    return claims


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None

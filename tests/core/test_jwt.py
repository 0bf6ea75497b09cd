"""core/jwt.py and the key-set rules of flows/keys.py: pure, with an injected clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core import jwt as core_jwt
from bastion.flows.keys import PUBLISH_MARGIN, build_key_set

ISS, AUD = "https://auth.example", "bastion"
NOW = 1_800_000_000


def key_pair(alg: str = "EdDSA") -> tuple[core_jwt.SigningKey, dict[str, core_jwt.VerificationKey]]:
    new = core_jwt.generate_key(alg)
    signing = core_jwt.SigningKey(new.kid, alg, core_jwt.load_private_key(new.private_pem, alg))
    return signing, {new.kid: core_jwt.public_key_from_jwk(new.public_jwk)}


def claims(**over: Any) -> dict[str, Any]:
    base = core_jwt.access_claims(
        issuer=ISS, subject="u1", audience=AUD, now=NOW, ttl=900, role="viewer", sid="s1", ver=0
    )
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def verify(token: str, keys: dict[str, core_jwt.VerificationKey], now: float = NOW + 1) -> Any:
    return core_jwt.verify(token, keys, audience=AUD, issuer=ISS, now=now)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None = None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{b64(sig)}"


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_sign_and_verify_round_trip_with_kid(alg: str) -> None:
    signing, keys = key_pair(alg)
    token = core_jwt.sign(signing, claims())
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": signing.kid, "typ": "at+jwt"}
    got = verify(token, keys)
    assert set(got) == {"iss", "sub", "aud", "iat", "exp", "jti", "role", "sid", "ver"}
    assert got["exp"] - got["iat"] == 900
    # The published JWK verifies with plain PyJWT too (what resource servers do).
    new_key = keys[signing.kid]
    jwk = core_jwt.public_jwk(new_key.public_key, signing.kid, alg)
    pyjwt.decode(
        token,
        pyjwt.PyJWK(jwk).key,
        algorithms=[alg],
        audience=AUD,
        issuer=ISS,
        options={"verify_exp": False, "verify_iat": False},
    )


_EDDSA = key_pair("EdDSA")


@settings(max_examples=200, deadline=None)
@given(claims_extra=st.dictionaries(st.text(max_size=20), st.text(max_size=200), max_size=5))
def test_eddsa_signature_is_openssls(claims_extra: dict[str, str]) -> None:
    """libsodium signs EdDSA tokens; Ed25519 is deterministic, so every signature must be
    byte for byte the one cryptography (OpenSSL) makes with the same key."""
    signing, _ = _EDDSA
    token = core_jwt.sign(signing, {**claims(), **claims_extra})
    signing_input, _, signature = token.rpartition(".")
    assert isinstance(signing.private_key, ed25519.Ed25519PrivateKey)
    assert b64(signing.private_key.sign(signing_input.encode())) == signature
    signing.private_key.public_key().verify(
        base64.urlsafe_b64decode(signature + "=="), signing_input.encode()
    )


def test_expired_token_refused_by_injected_clock() -> None:
    signing, keys = key_pair()
    token = core_jwt.sign(signing, claims())
    verify(token, keys, now=NOW + 899)
    with pytest.raises(core_jwt.TokenError):
        verify(token, keys, now=NOW + 900)


def test_token_without_exp_refused() -> None:
    signing, keys = key_pair()
    token = core_jwt.sign(signing, claims(exp=None))
    with pytest.raises(core_jwt.TokenError):
        verify(token, keys)


@pytest.mark.parametrize("missing", ["iss", "sub", "aud", "iat", "jti", "ver"])
def test_token_missing_required_claim_refused(missing: str) -> None:
    signing, keys = key_pair()
    token = core_jwt.sign(signing, claims(**{missing: None}))
    with pytest.raises(core_jwt.TokenError):
        verify(token, keys)


def test_alg_none_refused() -> None:
    signing, keys = key_pair()
    token = forge({"alg": "none", "kid": signing.kid, "typ": "at+jwt"}, claims())
    with pytest.raises(core_jwt.TokenError):
        verify(token, keys)


def test_hs256_with_public_key_as_secret_refused() -> None:
    signing, keys = key_pair()
    public = keys[signing.kid].public_key
    secrets = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        json.dumps(core_jwt.public_jwk(public, signing.kid, "EdDSA")).encode(),
    ]
    for secret in secrets:
        token = forge({"alg": "HS256", "kid": signing.kid, "typ": "at+jwt"}, claims(), secret)
        with pytest.raises(core_jwt.TokenError):
            verify(token, keys)


def test_algorithm_pinned_to_key() -> None:
    ed, ed_keys = key_pair("EdDSA")
    es, es_keys = key_pair("ES256")
    # An ES256 token presented under the Ed25519 key's kid.
    signed = core_jwt.sign(core_jwt.SigningKey(ed.kid, "ES256", es.private_key), claims())
    with pytest.raises(core_jwt.TokenError):
        verify(signed, {**ed_keys, **es_keys})


def test_unknown_kid_and_wrong_audience_or_issuer_refused() -> None:
    signing, keys = key_pair()
    other, _ = key_pair()
    with pytest.raises(core_jwt.UnknownKey):
        verify(core_jwt.sign(other, claims()), keys)
    for bad in (claims(aud="someone-else"), claims(iss="https://evil.example")):
        with pytest.raises(core_jwt.TokenError):
            verify(core_jwt.sign(signing, bad), keys)


def test_tampered_payload_and_garbage_refused() -> None:
    signing, keys = key_pair()
    head, _, sig = core_jwt.sign(signing, claims()).split(".")
    body = b64(json.dumps(claims(role="admin")).encode())
    for token in (f"{head}.{body}.{sig}", "", "x", "a.b.c", "." * 3, "e" * 9000):
        with pytest.raises(core_jwt.TokenError):
            verify(token, keys)


def test_other_token_type_refused() -> None:
    signing, keys = key_pair()
    token = pyjwt.encode(
        claims(),
        signing.private_key,
        algorithm="EdDSA",
        headers={"kid": signing.kid, "typ": "id+jwt"},
    )
    with pytest.raises(core_jwt.TokenError):
        verify(token, keys)


def test_generate_refuses_symmetric_algorithms() -> None:
    for alg in ("HS256", "none", "RS256"):
        with pytest.raises(ValueError):
            core_jwt.generate_key(alg)


def _row(
    kid: str, created: datetime, retired: datetime | None, alg: str = "EdDSA"
) -> dict[str, Any]:
    new = core_jwt.generate_key(alg, kid=kid)
    return {
        "kid": kid,
        "alg": alg,
        "public_jwk": new.public_jwk,
        "private_pem": new.private_pem,
        "created_at": created,
        "retired_at": retired,
    }


def test_key_set_publishes_retired_key_until_its_tokens_expire() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ttl = 900
    rows = [_row("old", t0, t0 + timedelta(hours=1)), _row("new", t0 + timedelta(hours=1), None)]

    def load(row: Any) -> core_jwt.SigningKey:
        return core_jwt.SigningKey(
            row["kid"], row["alg"], core_jwt.load_private_key(row["private_pem"], row["alg"])
        )

    retired_at = t0 + timedelta(hours=1)
    during = build_key_set(rows, retired_at + timedelta(seconds=ttl), ttl, load)
    assert during.signing is not None and during.signing.kid == "new"
    assert set(during.verification) == {"old", "new"}
    assert {k["kid"] for k in during.jwks} == {"old", "new"}
    after = build_key_set(rows, retired_at + timedelta(seconds=ttl + PUBLISH_MARGIN), ttl, load)
    assert set(after.verification) == {"new"} and [k["kid"] for k in after.jwks] == ["new"]


def test_clock_is_real_time_compatible() -> None:
    signing, keys = key_pair()
    now = int(time.time())
    token = core_jwt.sign(
        signing,
        core_jwt.access_claims(
            issuer=ISS, subject="u", audience=AUD, now=now, ttl=60, role="r", sid="s", ver=3
        ),
    )
    assert core_jwt.verify(token, keys, audience=AUD, issuer=ISS, now=time.time())["ver"] == 3

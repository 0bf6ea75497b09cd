"""Property tests of the pure core (issue 11): password normalization, access-token
encode/decode, safe redirects, the TOTP window, emails and backup codes. Each property
is a security invariant stated for every input Hypothesis can think of, not a few
examples."""

from __future__ import annotations

import string
import unicodedata
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bastion.core import jwt as core_jwt
from bastion.core import totp
from bastion.core.emails import is_valid_email, normalize_email
from bastion.core.passwords import (
    MAX_LENGTH,
    Argon2Params,
    Hasher,
    PasswordTooLong,
    normalize,
    policy_violations,
)
from bastion.core.redirects import safe_redirect

# Cheap Argon2 parameters: the properties are about normalization, not cost.
FAST = Hasher(Argon2Params(time_cost=1, memory_cost=64, parallelism=1))
passwords = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)


# --- password normalization ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(passwords, st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]))
def test_password_matches_in_every_unicode_normal_form(password: str, form: str) -> None:
    """The same password typed on another keyboard (another normal form) still verifies."""
    stored = FAST.hash(password)
    assert FAST.verify(stored, unicodedata.normalize(form, password))


@settings(max_examples=40, deadline=None)
@given(passwords, passwords)
def test_passwords_that_differ_after_nfkc_never_verify(a: str, b: str) -> None:
    assume(normalize(a) != normalize(b))
    assert not FAST.verify(FAST.hash(a), b)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=MAX_LENGTH + 1, max_value=MAX_LENGTH * 8), st.characters())
def test_overlong_password_refused_before_hashing(length: int, char: str) -> None:
    password = char * length
    assume(len(normalize(password)) > MAX_LENGTH)
    try:
        FAST.hash(password)
        raised = False
    except PasswordTooLong:
        raised = True
    assert raised
    assert not FAST.verify("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA", password)
    assert policy_violations(password) == [f"must be at most {MAX_LENGTH} characters"]


@given(st.text(max_size=60))
def test_normalization_is_idempotent_and_length_rule_uses_normalized_form(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once
    long_rule = f"must be at most {MAX_LENGTH} characters"
    assert (long_rule in policy_violations(text)) == (len(once) > MAX_LENGTH)


# --- access tokens (core/jwt.py) -------------------------------------------------------

ISS, AUD, NOW = "https://auth.example", "bastion", 1_800_000_000
_NEW = core_jwt.generate_key("EdDSA")
SIGNING = core_jwt.SigningKey(
    _NEW.kid, "EdDSA", core_jwt.load_private_key(_NEW.private_pem, "EdDSA")
)
KEYS = {_NEW.kid: core_jwt.public_key_from_jwk(_NEW.public_jwk)}
_OTHER = core_jwt.generate_key("ES256")
OTHER = core_jwt.SigningKey(
    _OTHER.kid, "ES256", core_jwt.load_private_key(_OTHER.private_pem, "ES256")
)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def claims_for(**over: Any) -> dict[str, Any]:
    base = core_jwt.access_claims(
        issuer=ISS, subject="u", audience=AUD, now=NOW, ttl=900, role="viewer", sid=None, ver=0
    )
    base.update(over)
    return base


@settings(max_examples=60, deadline=None)
@given(
    sub=text,
    role=text,
    sid=st.none() | text,
    ver=st.integers(min_value=0, max_value=2**53),
    ttl=st.integers(min_value=1, max_value=10**7),
)
def test_token_round_trip_preserves_claims(
    sub: str, role: str, sid: str | None, ver: int, ttl: int
) -> None:
    claims = claims_for(sub=sub, role=role, sid=sid, ver=ver, exp=NOW + ttl)
    token = core_jwt.sign(SIGNING, claims)
    assert core_jwt.verify(token, KEYS, audience=AUD, issuer=ISS, now=NOW) == claims
    # ...and it is dead from its expiry on, whatever the lifetime.
    try:
        core_jwt.verify(token, KEYS, audience=AUD, issuer=ISS, now=NOW + ttl)
        expired_accepted = True
    except core_jwt.TokenError:
        expired_accepted = False
    assert not expired_accepted


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_altered_token_character_is_refused(data: st.DataObject) -> None:
    token = core_jwt.sign(SIGNING, claims_for())
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_."))
    assume(replacement != token[index])
    forged = token[:index] + replacement + token[index + 1 :]
    try:
        got = core_jwt.verify(forged, KEYS, audience=AUD, issuer=ISS, now=NOW)
    except core_jwt.TokenError:
        return
    # Base64url has slack bits in the last character of a segment: a change there can
    # decode to the same bytes, hence the same (still valid) token.
    assert got == claims_for() | {"jti": got["jti"]}
    assert core_jwt.verify(token, KEYS, audience=AUD, issuer=ISS, now=NOW) == got


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_garbage_never_verifies_and_never_crashes(junk: bytes | str) -> None:
    token = junk.decode("latin-1") if isinstance(junk, bytes) else junk
    try:
        core_jwt.verify(token, KEYS, audience=AUD, issuer=ISS, now=NOW)
        accepted = True
    except core_jwt.TokenError:
        accepted = False
    assert not accepted
    assert core_jwt.unverified_kid(token) is None or isinstance(core_jwt.unverified_kid(token), str)


def test_token_of_a_key_outside_the_set_is_refused() -> None:
    token = core_jwt.sign(OTHER, claims_for())
    try:
        core_jwt.verify(token, KEYS, audience=AUD, issuer=ISS, now=NOW)
        accepted = True
    except core_jwt.UnknownKey:
        accepted = False
    assert not accepted


# --- safe redirects --------------------------------------------------------------------

path_chars = st.sampled_from(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%/?#")


@given(st.text(path_chars, max_size=60))
def test_same_site_paths_are_kept(rest: str) -> None:
    target = "/" + rest
    expected = target if not target.startswith("//") else "/"
    assert safe_redirect(target) == expected


@given(
    st.text(max_size=80),
    st.sampled_from(["//", "/\\", "\\\\", "https://", "http:", "javascript:", " /", "\t/"]),
)
def test_redirects_off_site_are_refused(rest: str, prefix: str) -> None:
    assert safe_redirect(prefix + rest) == "/"


@given(st.text(max_size=120))
def test_safe_redirect_result_is_always_a_local_path(target: str) -> None:
    got = safe_redirect(target, default="/home")
    assert got in (target, "/home")
    assert got.startswith("/") and not got.startswith("//") and "\\" not in got
    assert not any(ord(c) < 0x21 or ord(c) == 0x7F for c in got)


# --- TOTP window -----------------------------------------------------------------------

secrets_b32 = st.binary(min_size=10, max_size=32).map(
    lambda b: __import__("base64").b32encode(b).decode().rstrip("=")
)
instants = st.integers(min_value=30 * 10, max_value=2**33)


@settings(max_examples=200)
@given(secrets_b32, instants, st.integers(min_value=-4, max_value=4))
def test_totp_accepts_exactly_one_step_either_side(secret: str, now: int, offset: int) -> None:
    step = totp.time_step(now)
    code = totp.code_at_step(secret, step + offset)
    matched = totp.verify(secret, code, now)
    window = [totp.code_at_step(secret, s) for s in range(step - 1, step + 2)]
    if abs(offset) <= 1:
        assert matched is not None and matched <= step + offset
    else:
        # Only a coincidence with a code inside the window (10^-6 per step) may match.
        assert (matched is None) == (code not in window)


@settings(max_examples=200)
@given(secrets_b32, instants, st.integers(min_value=-1, max_value=1))
def test_totp_code_cannot_be_replayed_after_acceptance(secret: str, now: int, offset: int) -> None:
    code = totp.code_at_step(secret, totp.time_step(now) + offset)
    matched = totp.verify(secret, code, now)
    assert matched is not None
    assert totp.verify(secret, code, now, last_step=matched) is None
    # Nor later, while the code is still inside the window.
    assert totp.verify(secret, code, now + 30, last_step=matched) is None


@given(secrets_b32, instants, st.text(max_size=12))
def test_totp_verify_never_raises_on_any_code(secret: str, now: int, code: str) -> None:
    matched = totp.verify(secret, code, now)
    assert matched is None or abs(matched - totp.time_step(now)) <= 1


# --- backup codes and emails -----------------------------------------------------------


@given(st.data())
def test_backup_codes_are_case_dash_and_space_insensitive(data: st.DataObject) -> None:
    code = totp.new_backup_codes(1)[0]
    variant = "".join(
        data.draw(st.sampled_from([c, c.upper(), f" {c}", f"{c}-"])) for c in code.replace("-", "")
    )
    assert totp.backup_code_hash(variant) == totp.backup_code_hash(code)


local = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20)


@given(local, local)
def test_email_normalization_is_idempotent_and_case_insensitive(user: str, host: str) -> None:
    email = f"{user}@{host}.example"
    assert normalize_email(email.upper()) == normalize_email(email) == email
    assert normalize_email(normalize_email(email)) == normalize_email(email)


@given(local, st.sampled_from(["ı", "İ", "ｉ", "і", "ⅰ", "\u0131", "ℹ"]))
def test_lookalike_emails_never_normalize_to_an_ascii_address(user: str, lookalike: str) -> None:
    """The dotless-i takeover: a lookalike address must stay a different account."""
    ascii_email = f"i{user}@example.com"
    lookalike_email = f"{lookalike}{user}@example.com"
    assert normalize_email(lookalike_email) != normalize_email(ascii_email)


@given(st.text(max_size=300))
def test_email_check_never_raises(text_in: str) -> None:
    assert is_valid_email(text_in) in (True, False)

"""core/passwords.py: hashing, legacy hashes, normalization and both policies (SPEC §4)."""

from __future__ import annotations

import time

import bcrypt
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.passwords import (
    MAX_LENGTH,
    Argon2Params,
    Hasher,
    common_passwords,
    normalize,
    policy_violations,
)

HASHER = Hasher()


def test_argon2id_with_owasp_minimum_parameters() -> None:
    h = HASHER.hash("Correct-Horse-9!")
    assert h.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in h
    assert HASHER.verify(h, "Correct-Horse-9!")
    assert not HASHER.verify(h, "correct-horse-9!")
    assert not HASHER.needs_rehash(h)


def test_bcrypt_hash_verifies_and_needs_rehash() -> None:
    legacy = bcrypt.hashpw(b"Legacy-Pass-1!", bcrypt.gensalt(rounds=4)).decode()
    assert legacy.startswith("$2b$")
    assert HASHER.verify(legacy, "Legacy-Pass-1!")
    assert not HASHER.verify(legacy, "wrong")
    assert HASHER.needs_rehash(legacy)


def test_outdated_argon2_parameters_need_rehash() -> None:
    weak = Hasher(Argon2Params(time_cost=1, memory_cost=8192, parallelism=1)).hash("x-Yz1234!")
    assert HASHER.verify(weak, "x-Yz1234!")
    assert HASHER.needs_rehash(weak)


def test_malformed_hash_never_raises() -> None:
    for bad in ("", "$argon2id$garbage", "$2b$nope", "plaintext"):
        assert HASHER.verify(bad, "whatever") is False


def test_overlong_password_is_refused_without_hashing() -> None:
    huge = "A1!a" * 100_000
    t = time.perf_counter()
    assert HASHER.verify(HASHER.hash("Correct-Horse-9!"), huge) is False
    assert policy_violations(huge) == [f"must be at most {MAX_LENGTH} characters"]
    assert time.perf_counter() - t < 0.5


def test_nfkc_normalization_matches_compatible_forms() -> None:
    assert normalize("Ｐａｓｓ") == "Pass"
    h = HASHER.hash("Ｃorrect-Horse-9!")
    assert HASHER.verify(h, "Correct-Horse-9!")


def test_common_list_is_real_and_large() -> None:
    words = common_passwords()
    assert len(words) >= 10_000
    assert {"123456", "password", "qwerty"} <= words


def test_standard_policy_rules() -> None:
    assert policy_violations("Correct-Horse-9!") == []
    assert "must contain a symbol" in policy_violations("CorrectHorse9")
    assert "must contain a digit" in policy_violations("Correct-Horse!")
    assert "must contain an uppercase letter" in policy_violations("correct-horse-9!")
    assert "must contain a lowercase letter" in policy_violations("CORRECT-HORSE-9!")
    assert "must be at least 8 characters" in policy_violations("Aa1!")
    assert "must not be a commonly used password" in policy_violations("P@ssw0rd")


def test_nist_policy_rules() -> None:
    assert policy_violations("correct horse battery", policy="nist") == []
    assert "must be at least 15 characters" in policy_violations("shortbutfine", policy="nist")
    assert policy_violations("shortbutfine", policy="nist", mfa_enabled=True) == []
    assert "must not be a commonly used password" in policy_violations(
        "123456789012345", policy="nist"
    ) or policy_violations("password", policy="nist", mfa_enabled=True)
    assert "must not contain your email address" in policy_violations(
        "alice-likes-long-passwords", policy="nist", email="alice@example.com"
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=64))
def test_normalize_is_idempotent(text: str) -> None:
    assert normalize(normalize(text)) == normalize(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_policy_never_raises(text: str) -> None:
    problems = policy_violations(text)
    assert isinstance(problems, list)
    assert all(isinstance(p, str) for p in problems)

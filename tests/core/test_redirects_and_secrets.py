"""core/redirects.py, core/secrets.py and core/emails.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.emails import is_valid_email, normalize_email
from bastion.core.redirects import safe_redirect
from bastion.core.secrets import Encryptor, Signer, new_token, token_hash


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/account", "/account"),
        ("/a/b?x=1#y", "/a/b?x=1#y"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("account", "/"),
        ("/\tevil", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_safe_redirect(target: str | None, expected: str) -> None:
    assert safe_redirect(target) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_safe_redirect_only_returns_same_site_paths(target: str) -> None:
    out = safe_redirect(target)
    assert out.startswith("/")
    assert not out.startswith("//")
    assert "\\" not in out


def test_tokens_are_32_bytes_and_hashed() -> None:
    t = new_token()
    assert len(t) >= 43
    assert len(token_hash(t)) == 64 and token_hash(t) != t


def test_signer_rotation() -> None:
    old = Signer(["old-secret-0123456789"], "x")
    ring = Signer(["new-secret-0123456789", "old-secret-0123456789"], "x")
    signed = old.sign("value")
    assert ring.unsign(signed) == "value"
    assert Signer(["new-secret-0123456789"], "x").unsign(signed) is None
    assert ring.unsign(signed + "x") is None
    assert Signer(["old-secret-0123456789"], "other-purpose").unsign(signed) is None


def test_encryptor_rotation() -> None:
    old = Encryptor(["old-secret-0123456789"], "mfa")
    ring = Encryptor(["new-secret-0123456789", "old-secret-0123456789"], "mfa")
    ct = old.encrypt("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DP" not in ct
    assert ring.decrypt(ct) == "JBSWY3DPEHPK3PXP"
    rotated = ring.rotate(ct)
    assert Encryptor(["new-secret-0123456789"], "mfa").decrypt(rotated) == "JBSWY3DPEHPK3PXP"
    assert Encryptor(["new-secret-0123456789"], "mfa").decrypt(ct) is None


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("a@example.com", True),
        ("first.last+tag@sub.example.co.uk", True),
        ("a@b", False),
        ("a b@example.com", False),
        ("a@example.com\r\nBcc: x@y.z", False),
        ("a\x00@example.com", False),
        ("@example.com", False),
        ("a@@example.com", False),
        ("a..b@example.com", False),
        ("x" * 65 + "@example.com", False),
    ],
)
def test_email_syntax(email: str, ok: bool) -> None:
    assert is_valid_email(normalize_email(email)) is ok


def test_email_normalization_keeps_lookalikes_distinct() -> None:
    assert normalize_email("  Bob@Example.COM ") == "bob@example.com"
    assert normalize_email("mıke@example.com") != normalize_email("mike@example.com")

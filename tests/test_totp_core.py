"""core/totp.py: RFC 6238 vectors, interoperability with oathtool and pyotp, the replay
window, the otpauth URI and QR code, backup codes."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import segno

from bastion.core import totp
from tests.qr_decode import OATHTOOL, decode_modules, decode_svg, require_tool

# RFC 6238 Appendix B: seeds are ASCII "1234567890" repeated to the hash's size.
SEED_SHA1 = base64.b32encode(b"12345678901234567890").decode()
SEED_SHA256 = base64.b32encode(b"12345678901234567890123456789012").decode()
SEED_SHA512 = base64.b32encode(b"1234567890" * 6 + b"1234").decode()

RFC6238_VECTORS = [
    # time, SHA-1, SHA-256, SHA-512 (8 digits)
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("when", "sha1", "sha256", "sha512"), RFC6238_VECTORS)
def test_rfc6238_appendix_b_vectors(when: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp.totp(SEED_SHA1, when, digits=8) == sha1
    assert totp.totp(SEED_SHA256, when, digits=8, digest="sha256") == sha256
    assert totp.totp(SEED_SHA512, when, digits=8, digest="sha512") == sha512
    # and the verifier accepts them, reporting the RFC's time step
    step = totp.verify(SEED_SHA1, sha1, when, digits=8)
    assert step == when // 30


def test_time_step_from_datetime_and_seconds() -> None:
    moment = datetime(2009, 2, 13, 23, 31, 30, tzinfo=UTC)  # 1234567890
    assert totp.time_step(moment) == totp.time_step(1234567890) == 41152263
    assert totp.totp(SEED_SHA1, moment, digits=8) == "89005924"


def test_new_secret_is_160_bit_base32() -> None:
    secrets = {totp.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for s in secrets:
        assert len(totp.decode_secret(s)) == 20
        assert s == s.upper() and "=" not in s and len(s) == 32


def test_codes_match_oathtool() -> None:
    require_tool(OATHTOOL, "oathtool")
    secret = totp.new_secret()
    for when in (0, 59, 1111111109, 1700000000, 1700000029, 1700000030):
        out = subprocess.run(
            [OATHTOOL, "--totp", "-b", "-N", f"@{when}", secret],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == totp.totp(secret, when)
        assert totp.verify(secret, out.stdout.strip(), when) == when // 30


def test_oathtool_current_code_is_accepted_now() -> None:
    require_tool(OATHTOOL, "oathtool")
    secret = totp.new_secret()
    out = subprocess.run(
        [OATHTOOL, "--totp", "-b", secret], capture_output=True, text=True, check=True
    )
    assert totp.verify(secret, out.stdout.strip(), datetime.now(UTC)) is not None


def test_codes_match_pyotp() -> None:
    secret = totp.new_secret()
    for when in (30, 1700000000, 1999999999):
        assert pyotp.TOTP(secret).at(when) == totp.totp(secret, when)


def test_verify_accepts_one_step_either_side_only() -> None:
    secret = totp.new_secret()
    now = 1_700_000_015
    step = now // 30
    for delta in (-1, 0, 1):
        assert totp.verify(secret, totp.code_at_step(secret, step + delta), now) == step + delta
    for delta in (-3, -2, 2, 3):
        assert totp.verify(secret, totp.code_at_step(secret, step + delta), now) is None


def test_totp_code_cannot_be_replayed_core() -> None:
    """RFC 6238 §5.2: a step at or below the last accepted one is refused."""
    secret = totp.new_secret()
    now = 1_700_000_015
    code = totp.totp(secret, now)
    accepted = totp.verify(secret, code, now)
    assert accepted == now // 30
    assert totp.verify(secret, code, now, last_step=accepted) is None
    older = totp.code_at_step(secret, accepted - 1)
    assert totp.verify(secret, older, now, last_step=accepted) is None
    newer = totp.code_at_step(secret, accepted + 1)
    assert totp.verify(secret, newer, now, last_step=accepted) == accepted + 1


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "12345x", "١٢٣٤٥٦"])
def test_verify_refuses_malformed_codes(bad: str) -> None:
    assert totp.verify(totp.new_secret(), bad, 1_700_000_000) is None


def test_verify_tolerates_spaces_in_code() -> None:
    secret = totp.new_secret()
    code = totp.totp(secret, 1_700_000_000)
    assert totp.verify(secret, f"{code[:3]} {code[3:]}", 1_700_000_000) is not None


def test_otpauth_uri_names_issuer_and_account() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "ada@example.com")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert unquote(parts.path) == "/Bastion:ada@example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret] and query["issuer"] == ["Bastion"]
    assert query["digits"] == ["6"] and query["period"] == ["30"]
    parsed = pyotp.parse_uri(uri)
    assert parsed.secret == secret and parsed.issuer == "Bastion"
    assert parsed.name == "ada@example.com"


def test_qr_svg_decodes_to_otpauth_uri(tmp_path: Path) -> None:
    uri = totp.provisioning_uri(totp.new_secret(), "grace+qr@example.com")
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg") and "<title>" in svg
    assert decode_svg(svg, tmp_path) == uri


def test_qr_matrix_round_trip_png(tmp_path: Path) -> None:
    """Independent of the SVG parser: segno's own matrix, via zbarimg."""
    uri = totp.provisioning_uri(totp.new_secret(), "alan@example.com")
    qr = segno.make_qr(uri, error="m")
    grid = [[bool(v) for v in row] for row in qr.matrix_iter(scale=1, border=4)]
    assert decode_modules(grid, tmp_path) == uri


def test_backup_codes_format_and_uniqueness() -> None:
    codes = totp.new_backup_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        head, sep, tail = code.partition("-")
        assert sep and len(head) == 4 and len(tail) == 4
        assert all(c in totp.BACKUP_ALPHABET for c in head + tail)
    for ambiguous in "01ilo":
        assert ambiguous not in totp.BACKUP_ALPHABET


def test_backup_code_normalisation_case_dash_space_insensitive() -> None:
    code = totp.new_backup_codes(1)[0]
    digest = totp.backup_code_hash(code)
    plain = code.replace("-", "")
    for variant in (code.upper(), plain, f" {plain[:2]} {plain[2:]} ", f"{plain[:4]}--{plain[4:]}"):
        assert totp.backup_code_hash(variant) == digest
    assert digest == hashlib.sha256(plain.encode()).hexdigest()
    assert totp.normalize_backup_code("abcd-efg") is None
    assert totp.normalize_backup_code("abcd-efg0") is None  # 0 is not in the alphabet
    with pytest.raises(ValueError):
        totp.backup_code_hash("nope")

"""Request bodies. Strings refuse NUL and other control characters up front, so bad
bytes get a 422 here instead of an error from the database driver."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _no_controls(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Email = Annotated[str, Field(min_length=3, max_length=320), AfterValidator(_no_controls)]
Name = Annotated[str, Field(max_length=200), AfterValidator(_no_controls)]
# Passwords: the 1024-character cap applies after NFKC; the flows check it and answer 422
# quickly. This bound only keeps absurd bodies out.
Password = Annotated[str, Field(min_length=1, max_length=8192), AfterValidator(_no_nul)]
Token = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_no_controls)]
Code = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_no_controls)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class RegisterIn(Strict):
    email: Email
    password: Password
    name: Name | None = None


class LoginIn(Strict):
    email: Email
    password: Password


class PasswordChangeIn(Strict):
    current_password: Password
    new_password: Password


class TokenIn(Strict):
    token: Token


class EmailIn(Strict):
    email: Email


class ResetIn(Strict):
    token: Token
    password: Password

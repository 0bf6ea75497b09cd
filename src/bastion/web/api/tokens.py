"""Tokens for APIs (SPEC §8): ``POST /api/auth/token`` (RFC 6749), ``/revoke`` (RFC
7009), ``/introspect`` (RFC 7662) and ``GET /.well-known/jwks.json``.

Thin: parameters come form-encoded (as the RFCs say) or as JSON; the rules live in
flows/tokens.py and flows/keys.py. Errors of these endpoints use the RFC 6749 §5.2 shape
``{"error", "error_description"}`` (plus ``message``, as everywhere else in the API).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bastion.core.rbac import has_permission
from bastion.core.secrets import constant_time_equals
from bastion.flows import accounts, keys, revocation
from bastion.flows import tokens as token_flow
from bastion.flows.errors import DomainError
from bastion.flows.tokens import OAuthInvalidRequest, UnsupportedGrantType
from bastion.runtime import Bastion
from bastion.web import deps
from bastion.web.api import responses as R
from bastion.web.deps import context, get_bx
from bastion.web.middleware import FAST_POST

router = APIRouter(tags=["tokens"])

# RFC 6749 §5.1: token responses are never cached.
TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_PARAM = 8192
GRANTS = ("password", "mfa", "refresh_token")


def _body(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI request body of these endpoints: form-encoded (RFC 6749) or JSON, read
    by ``read_params`` (so that schema fuzzing exercises the parser too)."""
    schema = {"type": "object", "properties": props, "required": required}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            },
        }
    }


_TEXT: dict[str, Any] = {"type": "string", "maxLength": MAX_PARAM}
TOKEN_BODY = _body(
    ["grant_type"],
    grant_type={"type": "string", "enum": list(GRANTS)},
    username=_TEXT,
    password=_TEXT,
    mfa_token=_TEXT,
    code=_TEXT,
    refresh_token=_TEXT,
)
TOKEN_PARAM_BODY = _body(["token"], token=_TEXT, token_type_hint=_TEXT)


def oauth_error(exc: DomainError) -> JSONResponse:
    """Any domain error in the RFC 6749 §5.2 shape, keeping its status (423, 429 as §3)."""
    body = exc.body()
    if "error_description" not in body:
        body = {"error": exc.code, "error_description": exc.message, **exc.extra}
    body.setdefault("message", exc.message)
    return JSONResponse(body, status_code=exc.status, headers={**TOKEN_HEADERS, **exc.headers})


async def read_params(request: Request) -> dict[str, str]:
    """Form-encoded or JSON parameters as strings. RFC 6749 §3.2: repeated parameters
    are an error; so are non-string values and control characters."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    pairs: list[tuple[str, Any]]
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: absurdly deep JSON must be a 400 like any other bad body.
            raise OAuthInvalidRequest("The body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise OAuthInvalidRequest("The body must be a JSON object.")
        pairs = [(k, v) for k, v in body.items() if v is not None]
    elif ctype == "application/x-www-form-urlencoded":
        # The standard library's parser: what every OAuth client sends, parsed at a
        # fraction of the cost of the multipart-capable form parser.
        try:
            pairs = parse_qsl(
                (await request.body()).decode("utf-8"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=64,
            )
        except (UnicodeDecodeError, ValueError):
            raise OAuthInvalidRequest("The form body is not valid.") from None
    elif ctype == "multipart/form-data":
        async with request.form() as form:
            pairs = list(form.multi_items())
    elif ctype == "" and not await request.body():
        pairs = []
    else:
        raise OAuthInvalidRequest("Send parameters form-encoded or as JSON.")
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise OAuthInvalidRequest(f"Parameter {name!r} is repeated.")
        if not isinstance(value, str):
            raise OAuthInvalidRequest(f"Parameter {name!r} must be a string.")
        if len(value) > MAX_PARAM or "\x00" in value or not _encodable(value):
            raise OAuthInvalidRequest(f"Parameter {name!r} is invalid.")
        params[name] = value
    return params


def _encodable(value: str) -> bool:
    """False for lone surrogates (``"\\ud800"`` in JSON), which no UTF-8 store accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def required(params: dict[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not params.get(n)]
    if missing:
        raise OAuthInvalidRequest(f"Missing parameter: {', '.join(missing)}.")
    return [params[n] for n in names]


@router.post("/api/auth/token", openapi_extra=TOKEN_BODY, responses=R.ok(R.TokenPairOut))
async def token(request: Request) -> JSONResponse:
    """Password, MFA and refresh-token grants; answers ``{access_token, token_type,
    expires_in, refresh_token}``."""
    bx = get_bx(request)
    ctx = context(request)
    try:
        params = await read_params(request)
        (grant,) = required(params, "grant_type")
        if grant != "refresh_token":
            # Refresh grants count only their failures (flows/tokens.py).
            await accounts.guard(bx, "token:ip", ctx.ip, ctx)
        if grant == "password":
            username, password = required(params, "username", "password")
            pair = await token_flow.password_grant(bx, ctx, username, password)
        elif grant == "mfa":
            mfa_token, code = required(params, "mfa_token", "code")
            pair = await token_flow.mfa_grant(bx, ctx, mfa_token, code)
        elif grant == "refresh_token":
            (refresh,) = required(params, "refresh_token")
            pair = await token_flow.refresh_grant_limited(bx, ctx, refresh)
        else:
            raise UnsupportedGrantType(f"Supported grant types: {', '.join(GRANTS)}.")
    except DomainError as exc:
        return oauth_error(exc)
    return JSONResponse(pair.body(), headers=TOKEN_HEADERS)


FAST_POST["/api/auth/token"] = token  # every refresh grant: skip the routing (middleware.py)


@router.post("/api/auth/revoke", openapi_extra=TOKEN_PARAM_BODY)
async def revoke(request: Request) -> JSONResponse:
    """RFC 7009: 200 whether or not the token was known (no oracle)."""
    bx = get_bx(request)
    ctx = context(request)
    try:
        await accounts.guard(bx, "token:ip", ctx.ip, ctx)
        params = await read_params(request)
        (value,) = required(params, "token")
        await revocation.revoke(bx, ctx, value)
    except DomainError as exc:
        return oauth_error(exc)
    return JSONResponse({}, headers=TOKEN_HEADERS)


async def introspection_caller(bx: Bastion, request: Request) -> int:
    """200 for INTROSPECTION_TOKEN or the access token of a user with ``manage_users``;
    403 for a valid access token without that permission (as the admin API, SPEC §10);
    401 otherwise."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer ":
        return 401
    presented = header[7:].strip()
    secret = bx.settings.introspection_token
    if secret and presented and constant_time_equals(presented, secret):
        return 200
    found = await token_flow.verify_access(bx, presented)
    if found is None:
        return 401
    if has_permission(bx.settings.roles, str(found[1]["role"]), "manage_users"):
        return 200
    return 403


@router.post("/api/auth/introspect", openapi_extra=TOKEN_PARAM_BODY)
async def introspect(request: Request) -> JSONResponse:
    """RFC 7662: ``{"active": false}`` or the token's claims."""
    bx = get_bx(request)
    caller = await introspection_caller(bx, request)
    if caller != 200:
        code = "invalid_token" if caller == 401 else "insufficient_scope"
        text = "Present INTROSPECTION_TOKEN or an admin access token."
        return JSONResponse(
            {"error": code, "error_description": text, "message": text},
            status_code=caller,
            headers={**TOKEN_HEADERS, "WWW-Authenticate": f'Bearer error="{code}"'},
        )
    try:
        params = await read_params(request)
        (value,) = required(params, "token")
    except DomainError as exc:
        return oauth_error(exc)
    return JSONResponse(
        await revocation.introspect(bx, context(request), value), headers=TOKEN_HEADERS
    )


@router.get("/.well-known/jwks.json", responses=R.ok(R.JwksOut))
async def jwks(request: Request) -> JSONResponse:
    """The public keys: the signing key and retired keys whose tokens may still live."""
    key_set = await keys.cache_for(get_bx(request)).get(max_age=keys.FORCED_RELOAD_INTERVAL)
    return JSONResponse({"keys": key_set.jwks}, headers={"Cache-Control": "public, max-age=60"})


async def startup(bx: Bastion) -> None:
    """STARTUP_HOOKS entry: a usable signing key exists (generated at first start), the
    key cache is warm, and bearer tokens are verified here."""
    await keys.ensure_signing_key(bx.db, bx.settings)
    keys.forget(bx)
    await keys.cache_for(bx).get(max_age=0)
    deps.bearer_verifier = token_flow.verify_bearer


# Importing the router is enough for bearer authentication to work.
deps.bearer_verifier = token_flow.verify_bearer

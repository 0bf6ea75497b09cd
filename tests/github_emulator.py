"""A small local HTTP server that speaks GitHub's documented OAuth app endpoints and the
two REST endpoints Bastion uses, laid out like GitHub Enterprise Server
(``base_url`` = the server, ``api_url`` = ``/api/v3``).

- ``GET /login/oauth/authorize`` shows a sign-in/authorize form in which the test's
  "browser" says who the GitHub user is (id, login, emails as JSON) and allows or
  cancels; ``POST`` answers with GitHub's redirect (``code`` and ``state``, or
  ``error=access_denied``).
- ``POST /login/oauth/access_token``: client id/secret, single-use code bound to the
  redirect URI, PKCE S256 verification; errors as GitHub sends them (HTTP 200 with
  ``error=bad_verification_code``).
- ``GET /api/v3/user`` and ``GET /api/v3/user/emails`` with the bearer token.

Run: ``python tests/github_emulator.py PORT CLIENT_ID CLIENT_SECRET``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import sys
from typing import Any
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID, CLIENT_SECRET = sys.argv[2], sys.argv[3]
codes: dict[str, dict[str, Any]] = {}
tokens: dict[str, dict[str, Any]] = {}


def _s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


async def authorize(request: Request) -> Response:
    if request.method == "GET":
        q = request.query_params
        if q.get("client_id") != CLIENT_ID:
            return HTMLResponse("<h1>unknown client</h1>", status_code=404)
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in q.items()
        )
        return HTMLResponse(
            f"""<!doctype html><title>Authorize</title><h1>Authorize {html.escape(CLIENT_ID)}</h1>
<p>Scopes: {html.escape(q.get("scope", ""))}</p>
<form method="post" action="/login/oauth/authorize">{hidden}
<input name="id"><input name="login"><input name="name"><input name="emails">
<button name="decision" value="allow">Authorize</button>
<button name="decision" value="cancel">Cancel</button></form>"""
        )
    form = dict(await request.form())
    redirect_uri = str(form.get("redirect_uri", ""))
    state = str(form.get("state", ""))
    if form.get("decision") != "allow":
        query = {
            "error": "access_denied",
            "error_description": "The user has denied your application access.",
            "error_uri": "https://docs.github.com/apps/troubleshooting-authorization-request-errors/#access-denied",
            "state": state,
        }
        return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)
    code = secrets.token_hex(10)
    codes[code] = {
        "redirect_uri": redirect_uri,
        "challenge": form.get("code_challenge"),
        "method": form.get("code_challenge_method"),
        "scope": form.get("scope", ""),
        "user": {
            "id": int(str(form["id"])),
            "login": form["login"],
            "name": form.get("name") or None,
            "email": None,
        },
        "emails": json.loads(str(form.get("emails") or "[]")),
    }
    return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", 302)


async def access_token(request: Request) -> Response:
    form = dict(await request.form())
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
        return _error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        )
    grant = codes.pop(str(form.get("code", "")), None)  # single use
    if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
        return _error("bad_verification_code", "The code passed is incorrect or expired.")
    verifier = str(form.get("code_verifier") or "")
    if grant["challenge"] and (grant["method"] != "S256" or _s256(verifier) != grant["challenge"]):
        return _error("bad_verification_code", "The code_verifier does not match the challenge.")
    token = "gho_" + secrets.token_hex(18)
    tokens[token] = grant
    body = {
        "access_token": token,
        "token_type": "bearer",
        "scope": grant["scope"].replace(" ", ","),
    }
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(body)
    return Response(urlencode(body), media_type="application/x-www-form-urlencoded")


def _error(error: str, description: str) -> Response:
    # GitHub answers token errors with HTTP 200.
    return JSONResponse({"error": error, "error_description": description})


def _grant(request: Request) -> dict[str, Any] | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() not in ("bearer", "token"):
        return None
    return tokens.get(token.strip())


async def user(request: Request) -> Response:
    grant = _grant(request)
    if grant is None:
        return JSONResponse({"message": "Requires authentication"}, status_code=401)
    return JSONResponse(grant["user"])


async def user_emails(request: Request) -> Response:
    grant = _grant(request)
    if grant is None:
        return JSONResponse({"message": "Requires authentication"}, status_code=401)
    if "user:email" not in grant["scope"].split():
        return JSONResponse({"message": "Not Found"}, status_code=404)
    return JSONResponse(grant["emails"])


app = Starlette(
    routes=[
        Route("/login/oauth/authorize", authorize, methods=["GET", "POST"]),
        Route("/login/oauth/access_token", access_token, methods=["POST"]),
        Route("/api/v3/user", user),
        Route("/api/v3/user/emails", user_emails),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

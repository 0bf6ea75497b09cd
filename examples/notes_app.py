"""A small notes app protected by Bastion (SPEC §10): read, write and delete permissions.

In-process (the app shares Bastion's database; same BASTION_* settings as the server):

    BASTION_DATABASE_URL=sqlite:///bastion.db BASTION_SECRET_KEY=... \\
        uvicorn --app-dir examples notes_app:app --port 9000

Against a running Bastion (cookie checked with GET /api/auth/session, bearer tokens
verified against its JWKS):

    NOTES_MODE=remote NOTES_BASTION_URL=http://127.0.0.1:8000 \\
        uvicorn --app-dir examples notes_app:app --port 9000

Sign in on Bastion (same host, so the browser sends the bastion_session cookie to both),
then open http://127.0.0.1:9000/notes.
"""

from __future__ import annotations

import html
import itertools
import os
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from bastion.integrations import (
    BastionAuth,
    BastionMiddleware,
    Identity,
    current_user,
    require_permission,
    require_role,
    require_user,
)

MODE = os.environ.get("NOTES_MODE", "in-process")
BASTION_URL = os.environ.get("NOTES_BASTION_URL", "http://127.0.0.1:8000").rstrip("/")

if MODE == "remote":
    auth = BastionAuth.remote(
        BASTION_URL, cache_ttl=float(os.environ.get("NOTES_CACHE_TTL", "5")), home="/notes"
    )
else:
    auth = BastionAuth.in_process(home="/notes")  # BASTION_* settings from the environment

app = FastAPI(title="Notes")
auth.install(app)
app.add_middleware(
    BastionMiddleware, auth=auth, protected=["/notes"], auth_only=["/login"], home="/notes"
)

NOTES: dict[int, dict[str, str]] = {}
_ids = itertools.count(1)


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


@app.get("/", response_class=HTMLResponse)
async def home(user: Annotated[Identity | None, Depends(current_user)]) -> str:
    who = html.escape(user.email or user.id) if user else "nobody"
    return f"<h1>Notes</h1><p>Signed in as {who}.</p><p><a href='/notes'>Your notes</a></p>"


@app.get("/login", response_class=HTMLResponse)
async def login(request: Request) -> str:
    back = html.escape(request.query_params.get("callbackUrl", "/notes"))
    return f"<h1>Sign in</h1><p><a href='{BASTION_URL}/login'>Sign in with Bastion</a>, then go back to <code>{back}</code>.</p>"  # noqa: E501


@app.get("/notes", response_class=HTMLResponse)
async def notes_page(user: Annotated[Identity, Depends(require_permission("read"))]) -> str:
    items = "".join(f"<li>{html.escape(n['text'])}</li>" for n in NOTES.values())
    return f"<h1>Notes of {html.escape(user.email or user.id)}</h1><ul>{items}</ul>"


@app.get("/api/me")
async def me(user: Annotated[Identity, Depends(require_user)]) -> dict[str, object]:
    return {"id": user.id, "email": user.email, "role": user.role, "via": user.via,
            "permissions": sorted(user.permissions)}  # fmt: skip


@app.get("/api/notes")
async def list_notes(
    _: Annotated[Identity, Depends(require_permission("read"))],
) -> dict[str, object]:
    return {"notes": [{"id": i, **n} for i, n in NOTES.items()]}


@app.post("/api/notes", status_code=201)
async def add_note(
    body: NoteIn, user: Annotated[Identity, Depends(require_permission("write"))]
) -> dict[str, object]:
    note_id = next(_ids)
    NOTES[note_id] = {"text": body.text, "author": user.id}
    return {"id": note_id, **NOTES[note_id]}


@app.delete("/api/notes/{note_id}", status_code=204)
async def delete_note(
    note_id: int, _: Annotated[Identity, Depends(require_permission("delete"))]
) -> Response:
    if NOTES.pop(note_id, None) is None:
        return Response(status_code=404)
    return Response(status_code=204)


@app.get("/api/admin/stats")
async def stats(_: Annotated[Identity, Depends(require_role("admin"))]) -> dict[str, int]:
    return {"notes": len(NOTES)}

"""The floor: a minimal FastAPI app with one JSON endpoint, served by the same uvicorn
settings and worker count as Bastion (bench/run.py starts it)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/json")
async def json_endpoint() -> JSONResponse:
    return JSONResponse({"ok": True, "user": {"id": "0123456789abcdef", "role": "viewer"}})

"""Health, readiness and metrics (SPEC §11)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bastion.web.api import responses as R
from bastion.web.deps import get_bx

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={**R.ok(R.ReadyOut), 503: {"model": R.ReadyOut, "description": "Not ready"}},
)
async def readyz(request: Request) -> JSONResponse:
    bx = get_bx(request)
    checks = {"database": await bx.db.ping()}
    if bx.settings.redis_url:
        checks["redis"] = await bx.limiter.ping()
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

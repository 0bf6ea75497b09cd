"""``/api/auth/sessions``: the caller's sessions and devices (SPEC §7)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from bastion.core import devices as core_devices
from bastion.flows import devices as device_flow
from bastion.flows import sessions as session_flow
from bastion.flows.sessions import Authenticated
from bastion.runtime import Bastion
from bastion.web.api import responses as R
from bastion.web.deps import clear_session_cookies, context, get_bx, require_auth
from bastion.web.errors import NO_STORE

router = APIRouter(prefix="/api/auth/sessions", tags=["sessions"])


def install_device_hook() -> None:
    """Sessions created from now on record browser, OS, device type and country."""
    session_flow.describe_device = core_devices.describe


async def warm_up(bx: Bastion) -> None:
    """Load the GeoIP data and compile the user-agent regexes off the event loop, so the
    first sign-in does not pay for it inside its transaction."""

    def load() -> None:
        core_devices.use_city_database(
            str(bx.settings.geoip_database) if bx.settings.geoip_database else None
        )
        core_devices.load_geoip(bx.settings.data_dir)
        core_devices.parse_user_agent("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")

    await asyncio.to_thread(load)


@router.get("", responses=R.ok(R.SessionsOut))
async def list_sessions(
    request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    bx = get_bx(request)
    sessions = await device_flow.list_sessions(
        bx, context(request), auth.user["id"], auth.session_id
    )
    return JSONResponse({"sessions": sessions}, headers=NO_STORE)


@router.post("/revoke-others", responses=R.ok(R.RevokedOut))
async def revoke_others(
    request: Request, auth: Authenticated = Depends(require_auth)
) -> JSONResponse:
    bx = get_bx(request)
    n = await device_flow.revoke_others(
        bx, context(request), auth.user["id"], auth.session_id, auth.user["id"]
    )
    return JSONResponse({"revoked": n}, headers=NO_STORE)


@router.post("/revoke-all", status_code=204)
async def revoke_all(request: Request, auth: Authenticated = Depends(require_auth)) -> Response:
    bx = get_bx(request)
    await device_flow.revoke_all(bx, context(request), auth.user["id"], auth.user["id"])
    response = Response(status_code=204, headers=NO_STORE)
    clear_session_cookies(response, bx)
    return response


@router.delete("/{session_id}", status_code=204)
async def revoke_session(
    session_id: str, request: Request, auth: Authenticated = Depends(require_auth)
) -> Response:
    bx = get_bx(request)
    await device_flow.revoke_session(
        bx, context(request), auth.user["id"], session_id[:64], auth.user["id"]
    )
    response = Response(status_code=204, headers=NO_STORE)
    if session_id == auth.session_id:
        clear_session_cookies(response, bx)
    return response

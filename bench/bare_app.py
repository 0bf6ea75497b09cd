"""The floor: a minimal FastAPI app with one JSON endpoint, served by the same uvicorn
settings and worker count as Bastion (bench/run.py starts it)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerifyMismatchError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/json")
async def json_endpoint() -> JSONResponse:
    return JSONResponse({"ok": True, "user": {"id": "0123456789abcdef", "role": "viewer"}})


# A login with nothing but HTTP, JSON and the hash: Argon2id with Bastion's parameters
# (argon2-cffi's verify) in a thread pool as large as a Bastion worker's
# (BENCH_HASH_THREADS: the cores shared out among the workers). The logins table shows it
# between the bare hash and Bastion, to tell the server's share of the overhead from the
# database's.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, type=Type.ID)
_STORED = _HASHER.hash("Correct-Horse-9!")
_THREADS = int(os.environ.get("BENCH_HASH_THREADS") or os.cpu_count() or 2)
_POOL = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="argon2")


def _verify(password: str) -> bool:
    try:
        return _HASHER.verify(_STORED, password)
    except VerifyMismatchError:
        return False


@app.post("/api/auth/login")
async def login_endpoint(request: Request) -> JSONResponse:
    body = await request.json()
    ok = await asyncio.get_running_loop().run_in_executor(_POOL, _verify, body["password"])
    if not ok:
        return JSONResponse({"error": "invalid_credentials"}, status_code=401)
    return JSONResponse({"user": {"email": body["email"]}})

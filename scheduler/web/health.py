"""``/healthz``: whether the API and Redis answer; with a reader's token, each worker's and scheduler's last heartbeat.

Without a token (a load balancer's probe) it says only ``{"status": "ok"}`` (200) or
``{"status": "not ok"}`` (503): host names, process ids and heartbeat ages are for
readers, so a caller with the API or the read token gets them as well.
"""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scheduler.core.model import iso_z, utc_of
from scheduler.web._http import SafeJSONResponse
from scheduler.web.auth import can_read
from scheduler.web.deps import WebDep

__all__ = ["router"]

_STALE_HEARTBEAT_MS = 30_000
"""Processes beat every 5 s; one silent for 30 s is reported stale."""
_FORGET_HEARTBEAT_MS = 86_400_000
"""A process silent for a day is no longer listed."""

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request, web: WebDep) -> JSONResponse:
    """ok or not ok; for a reader, Redis and each worker's and scheduler's last heartbeat
    (``stale`` past 30 s) too."""
    reader = can_read(request, web)
    try:
        web.client.ping()
        if not reader:
            return SafeJSONResponse({"status": "ok"})
        beats = web.store.heartbeats()
        unfinished = web.store.unfinished_count()
    except redis.RedisError:
        detail = {"redis": "unavailable"} if reader else {}
        return SafeJSONResponse({"status": "not ok", **detail}, status_code=503)
    now_ms = int(web.clock().timestamp() * 1000)
    processes = {
        name: {
            "role": beat.get("role", "?"),
            "last_heartbeat": iso_z(utc_of(beat.get("at_ms"))),
            "age_s": round((now_ms - int(beat.get("at_ms", 0))) / 1000, 1),
            "stale": now_ms - int(beat.get("at_ms", 0)) > _STALE_HEARTBEAT_MS,
        }
        for name, beat in sorted(beats.items())
        if now_ms - int(beat.get("at_ms", 0)) < _FORGET_HEARTBEAT_MS
    }
    return SafeJSONResponse(
        {"status": "ok", "redis": "ok", "processes": processes, "unfinished_sends": unfinished}
    )

"""``/healthz``: whether Redis answers, and each worker's and scheduler's last heartbeat. It is open."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from scheduler.core.model import iso_z, utc_of
from scheduler.web._http import SafeJSONResponse
from scheduler.web.deps import WebDep

__all__ = ["router"]

_STALE_HEARTBEAT_MS = 30_000
"""Processes beat every 5 s; one silent for 30 s is reported stale."""
_FORGET_HEARTBEAT_MS = 86_400_000
"""A process silent for a day is no longer listed."""

router = APIRouter()


@router.get("/healthz")
def healthz(web: WebDep) -> JSONResponse:
    """Redis, and each worker's and scheduler's last heartbeat (``stale`` past 30 s)."""
    try:
        web.client.ping()
        beats = web.store.heartbeats()
        unfinished = web.store.unfinished_count()
    except redis.RedisError:
        return SafeJSONResponse({"redis": "unavailable"}, status_code=503)
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
    return SafeJSONResponse({"redis": "ok", "processes": processes, "unfinished_sends": unfinished})

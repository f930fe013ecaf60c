"""``/v1/incidents``: every incident's state, and one incident with its communications and feedback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

from scheduler.core.model import Incident, iso_z, ms_of, utc_of
from scheduler.core.ports import format_cursor
from scheduler.web._http import SafeJSONResponse, invalid, page_window
from scheduler.web.auth import require_reader
from scheduler.web.deps import WebDep

__all__ = ["incident_json", "router"]

router = APIRouter()


def incident_json(incident: Incident) -> dict[str, Any]:
    """The incident with its ``*_ms`` times as ISO 8601 ``*_at`` fields."""
    return {
        (k[:-3] + "_at" if k.endswith("_ms") else k): (iso_z(utc_of(v)) if k.endswith("_ms") else v)
        for k, v in incident.to_json().items()
    }


@router.get("/v1/incidents", dependencies=[Depends(require_reader)])
def incidents(
    web: WebDep, limit: int = Query(100, ge=1, le=1_000), cursor: str | None = None, since: str | None = None
) -> JSONResponse:
    """The incidents' current state, newest opened first, one page of ``limit``, opened in
    the last ``since`` (``2h``, ``7d``) when given; ``next_cursor`` (null on the last page)
    is passed back as ``cursor`` for the next one."""
    errors: list[tuple[str, str]] = []
    after, start = page_window(cursor, since, web.clock(), errors)
    if errors:
        return invalid(errors)
    ids, following = web.store.incident_page(limit, after, ms_of(start) if start else None)
    return SafeJSONResponse(
        {
            "incidents": [incident_json(s) for s in web.store.incidents(ids)],
            "next_cursor": format_cursor(following) if following else None,
        }
    )


@router.get("/v1/incidents/{incident_id}", dependencies=[Depends(require_reader)])
def incident(incident_id: str, web: WebDep) -> JSONResponse:
    """One incident: its state, its communications by stakeholder, and the feedback received."""
    state = web.store.incident(incident_id)
    if state is None:
        raise HTTPException(404, f"no incident {incident_id!r}")
    grouped: dict[str, list[dict[str, Any]]] = {sid: [] for sid in state.stakeholders}
    for comm in web.store.incident_comms(incident_id):
        grouped.setdefault(comm.stakeholder_id, []).append(comm.as_json())
    answers = {sid: f.as_json() for sid, f in web.store.feedback_for(incident_id).items()}
    return SafeJSONResponse(
        {"incident": incident_json(state), "communications": grouped, "feedback": answers}
    )

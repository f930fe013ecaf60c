"""``/v1/incidents``: every incident's state, and one incident with its communications and feedback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from scheduler.core.model import Incident, iso_z, utc_of
from scheduler.web._http import SafeJSONResponse
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
def incidents(web: WebDep) -> JSONResponse:
    """Every incident's current state, newest first."""
    states = (web.store.incident(i) for i in reversed(web.store.incident_ids()))
    return SafeJSONResponse({"incidents": [incident_json(s) for s in states if s is not None]})


@router.get("/v1/incidents/{incident_id}", dependencies=[Depends(require_reader)])
def incident(incident_id: str, web: WebDep) -> JSONResponse:
    """One incident: its state, its communications by stakeholder, and the feedback received."""
    state = web.store.incident(incident_id)
    if state is None:
        raise HTTPException(404, f"no incident {incident_id!r}")
    grouped: dict[str, list[dict[str, Any]]] = {sid: [] for sid in state.stakeholders}
    for comm in web.store.communications():
        if comm.incident_id == incident_id:
            grouped.setdefault(comm.stakeholder_id, []).append(comm.as_json())
    answers = {sid: f.as_json() for sid, f in web.store.feedback_for(incident_id).items()}
    return SafeJSONResponse(
        {"incident": incident_json(state), "communications": grouped, "feedback": answers}
    )

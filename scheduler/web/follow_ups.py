"""``POST /v1/incidents/{id}/follow-ups``: tell a reader what was done about their feedback."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from scheduler.core.closing import FollowUpError
from scheduler.core.config import Config
from scheduler.core.feedback import MAX_COMMENT_CHARS
from scheduler.service.follow_ups import send_follow_up
from scheduler.web._http import SafeJSONResponse, invalid
from scheduler.web.auth import require_token
from scheduler.web.deps import WebDep

__all__ = ["router"]

router = APIRouter()


class FollowUp(BaseModel):
    """The body: whom to answer and what to tell them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    stakeholder_id: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=MAX_COMMENT_CHARS)


@router.post("/v1/incidents/{incident_id}/follow-ups", status_code=202, dependencies=[Depends(require_token)])
async def follow_up(incident_id: str, body: FollowUp, web: WebDep) -> JSONResponse:
    """202 with the follow-up's communication id; 422 naming the field when the incident or
    stakeholder is unknown or the text is empty; 503 without a configuration to read."""
    config = web.config()
    if config is None:
        return SafeJSONResponse({"detail": "no configuration to read the stakeholder from"}, status_code=503)

    def current() -> Config:
        return config

    try:
        comm_id = await run_in_threadpool(
            send_follow_up,
            web.store,
            web.timers,
            current,
            web.broker,
            incident_id,
            body.stakeholder_id,
            body.text,
            web.clock(),
        )
    except FollowUpError as e:
        field, _, reason = str(e).partition(": ")
        return invalid([(field, reason)])
    return SafeJSONResponse({"id": comm_id, "status": "scheduled"}, status_code=202)

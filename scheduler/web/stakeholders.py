"""``GET /v1/stakeholders/{id}`` and the page ``/stakeholders/{id}``: one stakeholder's
history across incidents, for anyone with a reading credential.

The incidents are those retention keeps; each is read once, with its communications
and feedback, so the cost grows with the incidents kept, not with requests.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from scheduler.core.history import StakeholderHistory, stakeholder_history
from scheduler.web._http import SafeJSONResponse, page
from scheduler.web.auth import caller_role, require_reader, sign_in_page, sign_out_csrf
from scheduler.web.deps import Web, WebDep
from scheduler.web.history_svg import bars_svg, dots_svg
from scheduler.web.pages import render_notice, render_stakeholder

__all__ = ["history_of", "router"]

router = APIRouter()


def history_of(web: Web, stakeholder_id: str, now: datetime) -> StakeholderHistory | None:
    """The stakeholder's history, or None when it is neither configured nor told of any incident."""
    config = web.config()
    states = [s for s in web.store.incidents(web.store.incident_ids()) if stakeholder_id in s.stakeholders]
    if not states and (config is None or config.stakeholder(stakeholder_id) is None):
        return None
    ids = [s.id for s in states]
    comms = web.store.incident_comms(*ids) if ids else []
    answers = {i: found for i in ids if (found := web.store.feedback_for(i).get(stakeholder_id)) is not None}
    return stakeholder_history(
        stakeholder_id, web.name(stakeholder_id), states, comms, answers, now, web.grace_s()
    )


@router.get("/v1/stakeholders/{stakeholder_id}", dependencies=[Depends(require_reader)])
def stakeholder(stakeholder_id: str, web: WebDep) -> JSONResponse:
    """Every incident that concerned the stakeholder, the messages sent, promises kept,
    late and missed, their ratings and comments over time, and our follow-ups."""
    history = history_of(web, stakeholder_id, web.clock())
    if history is None:
        raise HTTPException(404, f"no stakeholder {stakeholder_id!r}")
    return SafeJSONResponse(history.as_json())


@router.get("/stakeholders/{stakeholder_id}", response_class=HTMLResponse)
def stakeholder_page(request: Request, stakeholder_id: str, web: WebDep) -> Response:
    """The history as a page, with kept-rate and ratings drawn over time."""
    if caller_role(request, web, cookie=True) is None:
        return sign_in_page(web)
    now = web.clock()
    history = history_of(web, stakeholder_id, now)
    if history is None:
        return page(
            render_notice(
                "Not found",
                f"No stakeholder {stakeholder_id!r} is configured or was told of an incident.",
                error=True,
            ),
            404,
        )
    kept = [
        (i.id, i.kept_rate, f"{i.id}: {i.kept} of {i.kept + i.late + i.missed} promises kept")
        for i in history.incidents
        if i.kept_rate is not None
    ]
    ratings = [
        (
            str(r["incident_id"]),
            float(r["rating"]),
            f"{r['incident_id']}: rated {r['rating']} of 5 on {str(r['at'])[:10]}",
        )
        for r in history.ratings
        if r["rating"] is not None
    ]
    return page(
        render_stakeholder(
            history,
            now,
            kept_svg=bars_svg([(label, float(value), words) for label, value, words in kept])
            if kept
            else None,
            ratings_svg=dots_svg(ratings) if ratings else None,
            sign_out=sign_out_csrf(request, web),
        )
    )

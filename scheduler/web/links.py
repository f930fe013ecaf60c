"""``/feedback/…`` and ``/unsubscribe/…``: the pages feedback and unsubscribe links open.

Opening a link (GET) never records anything: mail scanners fetch every link in a
message. A rating link shows the feedback form with that rating chosen; the reader's
POST of the form records it. An unsubscribe link asks whether to stop this incident's
mail or all incident mail; the reader's button, or a mail client's RFC 8058 one-click
POST (which stops all incident mail), records the opt-out, and the page that confirms it
offers to undo it. Every link is HMAC-signed for its stakeholder (and incident); a
forged or altered one gets 403 and changes nothing, and a signed one whose stakeholder is
not configured (or whose incident is not known) gets 404 and changes nothing either. An
unsubscribe link whose incident retention has removed still stops all incident mail.
A form posted from another site's page (its ``Origin`` is not this one) gets 403.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from scheduler.core.feedback import MAX_COMMENT_CHARS, RATINGS, FeedbackError, opt_out_id
from scheduler.mail.signing import sign, verify_link
from scheduler.web._http import cross_site, forbidden, page, read_form
from scheduler.web.deps import Web, WebDep
from scheduler.web.feedback_acted import feedback_given
from scheduler.web.pages import (
    UnsubscribeChoice,
    render_feedback_page,
    render_notice,
    render_unsubscribe,
)

__all__ = ["router"]

_UNREADABLE = "The form could not be read. Please go back to the page and send it again."

router = APIRouter()


def _unknown() -> HTMLResponse:
    return page(
        render_notice(
            "This link does not work any more",
            "It names a recipient or an incident we no longer know.",
            error=True,
        ),
        404,
    )


def _known(web: Web, stakeholder_id: str, incident_id: str | None) -> bool:
    """Whether the stakeholder is configured (or was told of the incident) and the incident,
    when one is named, is known: a link for anything else changes nothing."""
    state = web.store.incident(incident_id) if incident_id else None
    if incident_id and state is None:
        return False
    config = web.config()
    configured = config is not None and config.stakeholder(stakeholder_id) is not None
    return configured or (state is not None and stakeholder_id in state.stakeholders)


def _rating(text: str | None) -> int | None:
    """A rating 1-5 from a form or a link, or None for anything else."""
    value = int(text) if text and text.isascii() and text.isdigit() and len(text) == 1 else None
    return value if value in RATINGS else None


# -- feedback -----------------------------------------------------------------------


def _feedback_page(
    web: Web,
    incident_id: str,
    stakeholder_id: str,
    status_code: int = 200,
    *,
    rating: int | None = None,
    comment: str = "",
    message: str = "",
    error: str = "",
) -> HTMLResponse:
    state = web.store.incident(incident_id)
    saved = web.store.feedback_for(incident_id).get(stakeholder_id)
    html = render_feedback_page(
        incident_id=incident_id,
        title=state.title if state else "",
        stakeholder=web.name(stakeholder_id),
        action=f"/feedback/{quote(incident_id, safe='')}/{quote(stakeholder_id, safe='')}",
        comment_sig=sign(web.secret, "feedback-comment", incident_id, stakeholder_id),
        rating=rating if rating is not None else (saved.rating if saved else None),
        saved_rating=saved.rating if saved else None,
        comment=comment,
        message=message,
        error=error,
    )
    return page(html, status_code)


@router.get("/feedback/{incident_id}/{stakeholder_id}", response_class=HTMLResponse)
def feedback(
    incident_id: str, stakeholder_id: str, web: WebDep, sig: str = "", rating: str | None = None
) -> Response:
    """The feedback form; a rating link's rating comes chosen. Nothing is recorded here."""
    if rating is None:
        if not verify_link(web.secret, sig, "feedback-page", incident_id, stakeholder_id):
            return forbidden()
        if not _known(web, stakeholder_id, incident_id):
            return _unknown()
        return _feedback_page(web, incident_id, stakeholder_id)
    if not verify_link(web.secret, sig, "feedback", incident_id, stakeholder_id, rating):
        return forbidden()
    if not _known(web, stakeholder_id, incident_id):
        return _unknown()
    chosen = _rating(rating)
    if chosen is None:
        return page(render_notice("Not a rating", "A rating is 1 to 5.", error=True), 422)
    return _feedback_page(
        web,
        incident_id,
        stakeholder_id,
        rating=chosen,
        message=f"You chose {chosen} of 5. Press Send to record it; you may add a comment.",
    )


@router.post("/feedback/{incident_id}/{stakeholder_id}", response_class=HTMLResponse)
async def feedback_sent(request: Request, incident_id: str, stakeholder_id: str, web: WebDep) -> Response:
    """The form: a rating, a comment (at most 4000 characters) or both, signed for this
    incident and stakeholder; the latest answer wins."""
    if cross_site(request, web):
        return forbidden()
    form = await read_form(request)
    if form is None:
        return page(render_notice("Not saved", _UNREADABLE, error=True), 400)
    if not verify_link(web.secret, form.get("sig", ""), "feedback-comment", incident_id, stakeholder_id):
        return forbidden()
    if not await run_in_threadpool(_known, web, stakeholder_id, incident_id):
        return _unknown()
    return await run_in_threadpool(
        _keep_feedback, web, incident_id, stakeholder_id, form.get("rating"), form.get("comment", "")
    )


def _keep_feedback(
    web: Web, incident_id: str, stakeholder_id: str, rating_text: str | None, comment: str
) -> Response:
    rating = _rating(rating_text)
    shown = comment[:MAX_COMMENT_CHARS]
    if rating_text and rating is None:
        return _feedback_page(web, incident_id, stakeholder_id, 422, error="Not saved: a rating is 1 to 5.")
    if rating is None and not comment.strip():
        error = "Not saved: choose a rating or write a comment."
        return _feedback_page(web, incident_id, stakeholder_id, 422, error=error)
    try:
        if comment.strip():
            web.store.record_comment(incident_id, stakeholder_id, comment, web.clock())
    except FeedbackError as e:
        return _feedback_page(
            web, incident_id, stakeholder_id, 422, rating=rating, error=f"Not saved: {e}.", comment=shown
        )
    if rating is not None:
        web.store.record_rating(incident_id, stakeholder_id, rating, web.clock())
    feedback_given(web, incident_id, stakeholder_id, rating, comment)
    said = [f"you rated our messages {rating} of 5"] if rating is not None else []
    said += ["your comment was recorded"] if comment.strip() else []
    message = "Thank you! " + ", and ".join(said).capitalize() + "."
    kept = web.store.feedback_for(incident_id).get(stakeholder_id)
    return _feedback_page(
        web, incident_id, stakeholder_id, comment=kept.comment if kept else "", message=message
    )


# -- unsubscribe --------------------------------------------------------------------


def _unsubscribe_signed(web: Web, sig: str, stakeholder_id: str, incident: str) -> bool:
    parts = (stakeholder_id, incident) if incident else (stakeholder_id,)
    return verify_link(web.secret, sig, "unsubscribe", *parts)


def _still_known(web: Web, stakeholder_id: str, incident: str) -> str | None:
    """The incident to offer along with all mail ("" for none), or None when the link
    names a stakeholder that is not configured: an incident retention removed is not offered."""
    if incident and _known(web, stakeholder_id, incident):
        return incident
    return "" if _known(web, stakeholder_id, None) else None


def _incident_words(web: Web, incident: str) -> str:
    state = web.store.incident(incident)
    title = state.title if state else ""
    return f"{incident} ({title})" if title else incident


@router.get("/unsubscribe/{stakeholder_id}", response_class=HTMLResponse)
def confirm_unsubscribe(
    request: Request, stakeholder_id: str, web: WebDep, sig: str = "", incident: str = ""
) -> Response:
    """Asks which mail to stop: opening the link (mail scanners do) unsubscribes no one."""
    if not _unsubscribe_signed(web, sig, stakeholder_id, incident):
        return forbidden()
    known = _still_known(web, stakeholder_id, incident)
    if known is None:
        return _unknown()
    incident = known
    name = web.name(stakeholder_id)
    action = f"{request.url.path}?{request.url.query}"
    if web.store.is_opted_out(stakeholder_id):
        lines = [f"{name} already receives no incident messages from us."]
        choices = [UnsubscribeChoice("all", "Receive incident messages again", undo=True)]
        return page(render_unsubscribe("Unsubscribed", lines, action, choices))
    lines = [f"Which messages should {name} stop receiving?"]
    choices = []
    if incident:
        lines.append(f"The message you came from was about {_incident_words(web, incident)}.")
        choices.append(UnsubscribeChoice("incident", f"Only the messages about {incident}"))
    choices.append(UnsubscribeChoice("all", "All incident messages"))
    return page(render_unsubscribe("Unsubscribe?", lines, action, choices))


@router.post("/unsubscribe/{stakeholder_id}", response_class=HTMLResponse)
async def unsubscribe(
    request: Request, stakeholder_id: str, web: WebDep, sig: str = "", incident: str = ""
) -> Response:
    """Records (or, with ``undo``, removes) the opt-out the reader chose; RFC 8058's
    one-click POST (``List-Unsubscribe=One-Click``) stops all incident mail."""
    if cross_site(request, web):
        return forbidden()
    form = await read_form(request)
    if form is None:
        return page(render_notice("Not saved", _UNREADABLE, error=True), 400)
    if not _unsubscribe_signed(web, sig, stakeholder_id, incident):
        return forbidden()
    known = await run_in_threadpool(_still_known, web, stakeholder_id, incident)
    if known is None:
        return _unknown()
    incident = known
    scope = "all" if form.get("List-Unsubscribe") == "One-Click" else form.get("scope") or "all"
    if scope not in ("incident", "all") or (scope == "incident" and not incident):
        return page(render_notice("Not saved", "Choose one of the buttons on the page.", error=True), 422)
    only = incident if scope == "incident" else None
    name = web.name(stakeholder_id)
    what = f"messages about {_incident_words(web, incident)}" if only else "incident messages"
    action = f"{request.url.path}?{request.url.query}"
    if form.get("undo"):
        await run_in_threadpool(web.store.remove_opt_out, opt_out_id(stakeholder_id, only))
        lines = [f"{name} will receive {what} again."]
        return page(render_unsubscribe("Subscribed again", lines, action, []))
    await run_in_threadpool(web.store.record_opt_out, stakeholder_id, web.clock(), only)
    lines = [f"{name} will receive no more {what}."]
    choices = [UnsubscribeChoice(scope, "Undo: keep receiving them", undo=True)]
    return page(render_unsubscribe("Unsubscribed", lines, action, choices))

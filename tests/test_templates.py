"""The bundled message templates: what each audience reads for each kind of message."""

from __future__ import annotations

import dataclasses
import html
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.core.closing import AFTER_KINDS
from scheduler.core.config import Config, parse_config
from scheduler.core.model import Kind
from scheduler.core.owners import OWNER_KINDS
from scheduler.mail.messages import template_context
from scheduler.mail.preflight import check_templates, sample_communication
from scheduler.mail.readthrough import MANY_CHANGES
from scheduler.mail.render import PARTS, RenderedMessage, TemplateSet
from scheduler.service.settings import bundled_path

NOW = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)
SECRET = "test-secret"
AUDIENCES = ("customer", "executive", "engineering")
INTERNAL = ("executive", "engineering")
# sample_communication promises the next update 30 minutes after NOW (14:33:05 UTC), stated rounded up
ZONES = {
    "Europe/Berlin": "15:34 CET",
    "America/New_York": "09:34 EST",
    "Asia/Tokyo": "23:34 JST",
}
HOSTILE = "Checkout down <script>alert(1)</script> {{ 7*7 }}"
TEMPLATES = TemplateSet(bundled_path("templates"))


def make_config(audience: str, timezone: str) -> Config:
    return parse_config(
        {
            "sender": "Acme Status <status@acme.example>",
            "base_url": "https://status.acme.example",
            "stakeholders": [
                {
                    "id": "reader",
                    "name": "ACME Finance",
                    "email": "reader@acme.example",
                    "audience": audience,
                    "timezone": timezone,
                }
            ],
        }
    )


def context_for(
    audience: str,
    kind: str,
    timezone: str = "Europe/Berlin",
    changes: list[dict[str, Any]] | None = None,
    **incident: Any,
) -> dict[str, Any]:
    config = make_config(audience, timezone)
    stakeholder = config.stakeholders[0]
    comm = sample_communication(kind, stakeholder.id, timezone, NOW)
    stored = dict(comm.context)
    stored["incident"] = {**stored["incident"], **incident}
    if changes is not None:
        stored["changes"] = changes
    comm = dataclasses.replace(comm, context=stored)
    return template_context(comm, stakeholder, config, NOW, SECRET)


def render(audience: str, kind: str, **kwargs: Any) -> RenderedMessage:
    return TEMPLATES.render(audience, kind, context_for(audience, kind, **kwargs))


def visible(markup: str) -> str:
    """The words a reader sees in an HTML body, whitespace collapsed."""
    body = re.sub(r"<(title|head)>.*?</\1>", " ", markup, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def flat(text: str) -> str:
    return " ".join(text.split())


NO_NEWS: list[dict[str, Any]] = []


@pytest.mark.parametrize("audience", AUDIENCES)
def test_every_audience_has_its_own_complete_set(audience: str) -> None:
    """Each bundled audience set has every kind a reader gets in all three parts, so nothing falls
    back to default/; what only an owner gets is in default/ alone."""
    for kind in [k for k in Kind if k not in OWNER_KINDS]:
        for part in PARTS:
            assert TEMPLATES.name_of(audience, kind, part) == f"{audience}/{kind}.{part}.j2"


def test_an_audience_without_a_set_falls_back_to_default() -> None:
    """A stakeholder whose audience has no folder gets the default/ set."""
    assert TEMPLATES.name_of("partners", "update", "html") == "default/update.html.j2"
    rendered = render("partners", "acknowledgment")
    assert "Next update by 15:34 CET" in rendered.text


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
@pytest.mark.parametrize("kind", list(Kind))
def test_subject_is_one_short_line_with_the_incident_title(audience: str, kind: str) -> None:
    """Every subject is a single short line that names the incident."""
    context = context_for(audience, kind)
    raw = TEMPLATES.env.get_template(TEMPLATES.name_of(audience, kind, "subject")).render(context)
    assert "\n" not in raw.strip()
    subject = TEMPLATES.render(audience, kind, context).subject
    assert "\n" not in subject and "\r" not in subject
    assert "Card payments failing for some customers" in subject
    assert len(subject) <= 120


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize(("timezone", "promise"), ZONES.items())
def test_acknowledgment_owns_the_problem_and_promises_the_next_update_in_the_readers_zone(
    audience: str, timezone: str, promise: str
) -> None:
    """An acknowledgment takes responsibility (apologising to customers, owning it among colleagues), names the
    owner and states the next update in the reader's zone."""
    context = context_for(audience, "acknowledgment", timezone=timezone)
    rendered = TEMPLATES.render(audience, "acknowledgment", context)
    for body in (rendered.text, visible(rendered.html)):
        if audience in INTERNAL:
            assert context["tone"]["colleague"] in body and "sorry" not in body and "you depend" not in body
        else:
            assert "responsibility" in body and "sorry" in body
        assert f"Next update by {promise}" in body
        assert "Card payments failing for some customers" in body
        assert "Payments on-call" in body
        assert "About 1 in 5 card payments fail." in body


@pytest.mark.parametrize("audience", AUDIENCES)
def test_acknowledgment_says_what_is_being_done(audience: str) -> None:
    """An acknowledgment carries the plan, and says work is under way when there is no plan yet."""
    rendered = render(audience, "acknowledgment")
    assert "Rotate the certificate, then replay failed payments." in rendered.text
    empty = render(audience, "acknowledgment", plan="", owner="", impact="")
    assert "Next update by 15:34 CET" in empty.text
    assert "Owner" in empty.text or "in charge" in empty.text


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
@pytest.mark.parametrize(("timezone", "promise"), ZONES.items())
def test_update_without_changes_says_there_is_no_new_information(
    audience: str, timezone: str, promise: str
) -> None:
    """An update with nothing changed says there is no new information since the last message, and when the next comes."""
    context = context_for(audience, "update", timezone=timezone, changes=NO_NEWS)
    assert context["no_news"] is True
    rendered = TEMPLATES.render(audience, "update", context)
    since = context["since"]
    assert since.endswith(promise[-3:])
    for body in (rendered.text, visible(rendered.html)):
        assert re.search(rf"no new information since (our last message at )?{re.escape(since)}", flat(body))
        assert context["tone"]["still_working"] in body
        assert f"Next update by {promise}" in body
        assert "Rotate the certificate, then replay failed payments." in body


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
def test_update_with_changes_lists_them_and_the_current_plan(audience: str) -> None:
    """An update with changes lists each changed field, the current plan and the next update time."""
    rendered = render(audience, "update", changes=MANY_CHANGES)
    for body in (rendered.text, visible(rendered.html)):
        assert "no new information" not in body
        assert "identified" in body
        assert "payments, checkout" in body
        assert "Platform on-call" in body
        assert "Rotate the certificate" in body
        assert "Next update by 15:34 CET" in body
    if audience != "executive":  # executives get the field names, the rest get each value
        assert "Then replay failed payments." in rendered.text


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
@pytest.mark.parametrize("kind", list(Kind))
def test_change_values_may_be_strings_lists_or_none(audience: str, kind: str) -> None:
    """A change whose old or new value is a list, None or empty renders without error and without 'None'."""
    rendered = render(audience, kind, changes=MANY_CHANGES)
    assert "None" not in rendered.text and "None" not in rendered.html
    assert "['" not in rendered.text and "['" not in rendered.html


def test_engineering_update_shows_every_change_as_old_and_new_value() -> None:
    """Engineering reads each change with its old and its new value."""
    rendered = render("engineering", "update", changes=MANY_CHANGES)
    text, markup = rendered.text, rendered.html
    assert "Severity: sev2 -> sev1" in text
    assert "Affected services: payments -> payments, checkout" in text
    assert "Status: investigating -> identified" in text
    assert "Owner: (none) -> Platform on-call" in text
    assert "Impact: Some payments fail. -> (none)" in text
    assert "was: Fail over." in text and "now: Rotate the certificate." in text
    assert "investigating -&gt; identified" in markup
    assert "Fail over.<br>now: Rotate the certificate.<br>Then replay failed payments." in markup


@pytest.mark.parametrize("kind", list(Kind))
def test_engineering_messages_carry_the_technical_detail(kind: str) -> None:
    """Engineering messages name the incident id and its technical fields."""
    rendered = render("engineering", kind, services=["payments", "ledger"])
    context = context_for("engineering", kind)
    assert "INC-SAMPLE" in rendered.subject
    if kind == "feedback_request" or kind in AFTER_KINDS or kind in OWNER_KINDS:
        assert "INC-SAMPLE" in rendered.text
        return
    for body in (rendered.text, visible(rendered.html)):
        for fact in ("INC-SAMPLE", "SEV1", "payments, ledger", "identified", "Payments on-call"):
            assert fact in body
        assert f"Opened: {context['incident']['opened_at']}" in flat(body)
        assert "A certificate expired on the card processor link." in body
        assert "About 1 in 5 card payments fail." in body
        assert "Rotate the certificate, then replay failed payments." in body


@pytest.mark.parametrize("kind", list(Kind))
def test_executive_messages_are_short(kind: str) -> None:
    """Executive text bodies are a few lines: what, impact, owner and (while open) the next update, then the contact."""
    rendered = render("executive", kind)
    lines = [line for line in rendered.text.splitlines() if line.strip()]
    assert len(lines) <= (12 if kind == "feedback_request" else 11)
    if kind in AFTER_KINDS:
        assert "Card payments failing for some customers" in rendered.text
    elif kind != "feedback_request" and kind not in OWNER_KINDS:
        assert "Card payments failing for some customers" in rendered.text
        assert "About 1 in 5 card payments fail." in rendered.text
        assert "Payments on-call" in rendered.text
    if kind in ("acknowledgment", "update"):
        assert "Next update by 15:34 CET" in rendered.text


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("severity", ("sev1", "sev2", "sev3", "sev4"))
def test_customer_bodies_use_no_internal_severity_codes(kind: str, severity: str) -> None:
    """Customers read severity in words: no 'sev1'-style code appears in the body, even for a severity change."""
    changes = [{"field": "severity", "old": "sev3", "new": severity}] if kind == "update" else None
    rendered = render("customer", kind, severity=severity, changes=changes)
    for body in (rendered.text, rendered.html):
        assert not re.search(r"sev\s*\d", body, flags=re.I)
    if kind == "acknowledgment":
        words = {"sev1": "critical", "sev2": "major", "sev3": "moderate", "sev4": "minor"}
        assert f"How serious it is: {words[severity]}." in rendered.text
    if kind == "update":
        assert "(was moderate)" in rendered.text


def test_customer_messages_put_status_into_words() -> None:
    """Customers read what the status means, not only the status code."""
    ack = render("customer", "acknowledgment", status="investigating")
    assert "we are looking for the cause" in ack.text
    update = render("customer", "update")
    assert "Status: identified (we have found the cause and are working on a fix)" in update.text


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
def test_resolution_says_what_happened_what_was_done_and_how_it_will_not_recur(audience: str) -> None:
    """A resolution gives the summary, and the plan as what was done and will be done so it does not happen again."""
    rendered = render(audience, "resolution")
    for body in (rendered.text, visible(rendered.html)):
        assert "A certificate expired on the card processor link." in body
        assert "Rotate the certificate, then replay failed payments." in body
        assert re.search(r"not happen again|recurrence|prevention", body, re.IGNORECASE)
        assert "Next update" not in body
    assert rendered.subject.startswith("[Resolved]")


@pytest.mark.parametrize("audience", AUDIENCES)
def test_resolution_without_a_plan_does_not_pretend_to_have_one(audience: str) -> None:
    """A resolution with no plan recorded says prevention is still to be worked out."""
    rendered = render(audience, "resolution", plan="", summary="")
    assert re.search(r"still|no plan", rendered.text)
    assert "Rotate the certificate" not in rendered.text


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
def test_feedback_request_thanks_and_carries_all_five_rating_links(audience: str) -> None:
    """A feedback request thanks the reader, links each rating 1-5 in both bodies and mentions the comment."""
    context = context_for(audience, "feedback_request")
    rendered = TEMPLATES.render(audience, "feedback_request", context)
    links = context["feedback"]["links"]
    assert sorted(links) == [1, 2, 3, 4, 5]
    for rating, link in links.items():
        assert f"rating={rating}&sig=" in link
        assert link in rendered.text
        assert f'href="{html.escape(link)}"' in rendered.html
    for body in (rendered.text, visible(rendered.html)):
        assert "Thank you" in body or "Thanks" in body
        assert "comment" in body


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
@pytest.mark.parametrize("kind", list(Kind))
def test_incident_text_is_escaped_in_html_and_never_evaluated(audience: str, kind: str) -> None:
    """Markup and template syntax in incident text arrive escaped in HTML and literally in text and subject."""
    rendered = render(audience, kind, title=HOSTILE, summary=HOSTILE, plan=HOSTILE, owner=HOSTILE)
    assert "<script" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "<script>alert(1)</script>" in rendered.text
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "{{ 7*7 }}" in part
        assert "</script> 49" not in part and "&gt; 49" not in part


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
@pytest.mark.parametrize("kind", list(Kind))
def test_html_needs_no_external_resources(audience: str, kind: str) -> None:
    """HTML bodies are self-contained: inline styles only, no stylesheets, imports, scripts or remote images."""
    markup = render(audience, kind).html.lower()
    for banned in ("<link", "<style", "@import", "<script", "<img", "src=", "url(", "<iframe"):
        assert banned not in markup
    assert markup.startswith("<!doctype html>")
    assert markup.rstrip().endswith("</html>")


@pytest.mark.parametrize("audience", (*AUDIENCES, "default"))
@pytest.mark.parametrize("kind", list(Kind))
def test_text_and_html_state_the_same_facts(audience: str, kind: str) -> None:
    """Whatever incident fact or time the text body states, the HTML body states too, and the other way round."""
    context = context_for(audience, kind, changes=MANY_CHANGES if kind == "update" else None)
    rendered = TEMPLATES.render(audience, kind, context)
    text, seen = flat(rendered.text), visible(rendered.html)
    incident = context["incident"]
    facts = [
        incident["id"],
        incident["title"],
        incident["summary"],
        incident["impact"],
        incident["plan"],
        incident["owner"],
        incident["opened_at"],
        incident["resolved_at"],
        context["since"],
        context["next_update"],
        context["stakeholder"]["name"],
        context["sender"],
        "Platform on-call",
        "payments, checkout",
    ]
    for fact in filter(None, facts):
        assert (fact in text) == (fact in seen), fact


@pytest.mark.parametrize("audience", AUDIENCES)
def test_an_update_after_the_day_changes_states_the_date(audience: str) -> None:
    """A next update on another day than the message carries the date, in the reader's zone."""
    config = make_config(audience, "Asia/Tokyo")
    comm = sample_communication("update", "reader", "Asia/Tokyo", NOW)
    comm = dataclasses.replace(comm, next_update_at=datetime(2026, 11, 26, 16, 0, tzinfo=UTC))
    context = template_context(comm, config.stakeholders[0], config, NOW, SECRET)
    assert context["next_update"] == "01:00 JST tomorrow"
    rendered = TEMPLATES.render(audience, "update", context)
    assert "Next update by 01:00 JST tomorrow" in rendered.text
    assert "Next update by 01:00 JST tomorrow" in visible(rendered.html)


def test_bundled_templates_pass_the_preflight_check() -> None:
    """`amends config check` finds no problem in the bundled sets for all three audiences and the default."""
    config = parse_config(
        {
            "sender": "Acme Status <status@acme.example>",
            "base_url": "https://status.acme.example",
            "stakeholders": [
                {
                    "id": "c",
                    "name": "C",
                    "email": "c@acme.example",
                    "audience": "customer",
                    "timezone": "Europe/Berlin",
                },
                {
                    "id": "x",
                    "name": "X",
                    "email": "x@acme.example",
                    "audience": "executive",
                    "timezone": "America/New_York",
                },
                {
                    "id": "e",
                    "name": "E",
                    "email": "e@acme.example",
                    "audience": "engineering",
                    "timezone": "Asia/Tokyo",
                },
                {"id": "d", "name": "D", "email": "d@acme.example"},
            ],
        }
    )
    assert check_templates(config, bundled_path("templates"), now=NOW) == []


def _paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        return [p for k, v in value.items() for p in _paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_readme_documents_every_context_variable() -> None:
    """templates/README.md names every variable of the template context."""
    readme = (bundled_path("templates") / "README.md").read_text(encoding="utf-8")
    context = context_for("customer", "update")
    paths = _paths(context) + [f"changes[].{k}" for k in context["changes"][0]]
    for path in paths:
        assert f"`{path}`" in readme, path
    assert "AMENDS_TEMPLATES" in readme and "amends config check" in readme

"""Rendering is safe whatever an event says: sandboxed templates, no header injection, threading ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core.config import parse_config
from scheduler.core.model import Communication, Kind
from scheduler.mail.messages import compose_email
from scheduler.mail.preflight import check_templates, sample_communication
from scheduler.mail.render import TemplateSet, clean_header
from scheduler.service.settings import bundled_path

NOW = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the night Berlin falls back
CONFIG = parse_config(
    {
        "sender": "Acme Status <status@acme.example>",
        "stakeholders": [
            {
                "id": "cust",
                "name": "Customer Co",
                "email": "c@customer.example",
                "audience": "customer",
                "timezone": "Europe/Berlin",
            },
            {"id": "exec", "name": "Board", "email": "b@acme.example", "audience": "executive"},
            {
                "id": "eng",
                "name": "Engineers",
                "email": "e@acme.example",
                "audience": "engineering",
                "timezone": "America/New_York",
            },
            {"id": "plain", "name": "Someone", "email": "s@acme.example"},
        ],
    }
)
TEMPLATES = TemplateSet(bundled_path("templates"))


def _comm(kind: str, stakeholder_id: str, **incident: Any) -> Communication:
    comm = sample_communication(
        kind, stakeholder_id, CONFIG.timezone_of(CONFIG.stakeholder(stakeholder_id)), NOW
    )  # type: ignore[arg-type]
    context = json.loads(json.dumps(comm.context))
    context["incident"].update(incident)
    return Communication(**{**comm.__dict__, "context": context})


def _email(kind: str, stakeholder_id: str, **incident: Any) -> Any:
    stakeholder = CONFIG.stakeholder(stakeholder_id)
    assert stakeholder is not None
    email, _ = compose_email(
        _comm(kind, stakeholder_id, **incident), stakeholder, CONFIG, TEMPLATES, NOW, "k"
    )
    return message_from_bytes(email.as_bytes(), policy=policy.default)


@pytest.mark.parametrize("stakeholder_id", ["cust", "exec", "eng", "plain"])
@pytest.mark.parametrize("kind", list(Kind))
def test_event_text_is_data_never_template_source(kind: str, stakeholder_id: str) -> None:
    """A title or summary of `{{ 7*7 }}` shows those characters, and HTML in it is escaped."""
    message = _email(
        kind,
        stakeholder_id,
        title="{{ 7*7 }} <script>alert(1)</script>",
        summary="{% for x in range(3) %}loop{% endfor %}",
    )
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "{{ 7*7 }}" in message["Subject"] and "49" not in message["Subject"]
    assert "<script>" not in html
    for body, script in ((text, "<script>"), (html, "&lt;script&gt;")):
        if "7*7" in body:  # an update body need not repeat the title
            assert "{{ 7*7 }}" in body and script in body
    assert "looploop" not in text + html


@pytest.mark.parametrize("kind", list(Kind))
def test_crlf_in_a_title_cannot_add_headers(kind: str) -> None:
    """A title carrying `\\r\\nBcc: x@evil.example` yields one Subject line and no Bcc header."""
    message = _email(kind, "cust", title="Payments down\r\nBcc: x@evil.example\nX-Evil: 1")
    assert message.get_all("Bcc") is None and message.get_all("X-Evil") is None
    assert len(message.get_all("Subject")) == 1
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]


def test_threading_headers_are_deterministic() -> None:
    """The same communication always gets the same Message-ID; later ones refer to the first."""
    first = _email("acknowledgment", "cust")
    again = _email("acknowledgment", "cust")
    assert first["Message-ID"] == again["Message-ID"]
    update = _email("update", "cust")
    assert update["In-Reply-To"] == update["References"] == "<amends.INC-SAMPLE.cust@acme.example>"


def test_customers_get_a_signed_list_unsubscribe_link() -> None:
    """Customer messages carry List-Unsubscribe with a signed link; other audiences do not."""
    assert "/unsubscribe/cust?incident=INC-SAMPLE&sig=" in _email("update", "cust")["List-Unsubscribe"]
    assert _email("update", "cust")["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert _email("update", "eng")["List-Unsubscribe"] is None


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(list(Kind)),
    stakeholder_id=st.sampled_from(["cust", "exec", "eng", "plain"]),
    texts=st.lists(st.text(max_size=300), min_size=6, max_size=6),
    services=st.lists(st.text(max_size=40), max_size=4),
)
def test_arbitrary_event_text_never_breaks_rendering_or_headers(
    kind: str, stakeholder_id: str, texts: list[str], services: list[str]
) -> None:
    """Any text in any incident field renders, and no header of the message contains a line break."""
    title, summary, impact, plan, owner, status = texts
    message = _email(
        kind,
        stakeholder_id,
        title=title,
        summary=summary,
        impact=impact,
        plan=plan,
        owner=owner,
        status=status,
        services=services,
    )
    for name, value in message.items():
        assert "\n" not in str(value) and "\r" not in str(value), name
    assert message.get_all("Bcc") is None


@given(st.text())
def test_clean_header_is_always_one_line(text: str) -> None:
    """clean_header never returns a control character or a line separator."""
    cleaned = clean_header(text)
    assert not any(ord(c) < 32 or c in "\x7f\x85\u2028\u2029" for c in cleaned)


def test_config_check_reports_template_problems_with_name_and_line(tmp_path: Path) -> None:
    """A syntax error, an undefined variable and a missing promise are each reported with the template."""
    import shutil

    folder = tmp_path / "templates"
    shutil.copytree(bundled_path("templates"), folder)
    (folder / "engineering" / "resolution.html.j2").write_text("line one\n{% if %}\n")
    with (folder / "executive" / "update.txt.j2").open("a") as f:
        f.write("{{ incident.nam }}\n")
    ack = folder / "customer" / "acknowledgment.txt.j2"
    ack.write_text(ack.read_text().replace("{{ next_update }}", "soon"))
    feedback = folder / "default" / "feedback_request.html.j2"
    feedback.write_text("<p>Thanks</p>")
    problems = check_templates(CONFIG, folder, NOW)
    joined = "\n".join(problems)
    assert "engineering/resolution.html.j2:2: " in joined
    assert "executive/update.txt.j2:" in joined and "has no attribute 'nam'" in joined
    line = next(p for p in problems if "executive/update.txt.j2" in p)
    assert line.split(":")[2].strip().isdigit()
    assert "customer/acknowledgment.txt.j2: does not state the next update time" in joined
    assert "default/feedback_request.html.j2: does not carry the feedback links" in joined
    assert check_templates(CONFIG, bundled_path("templates"), NOW) == []


def test_next_update_on_another_day_names_the_day() -> None:
    """A promise on a later local day carries the date, here across the fall-back night in New York."""
    comm = _comm("acknowledgment", "eng")
    comm = Communication(**{**comm.__dict__, "next_update_at": NOW + timedelta(hours=30)})
    stakeholder = CONFIG.stakeholder("eng")
    assert stakeholder is not None
    _, rendered = compose_email(comm, stakeholder, CONFIG, TEMPLATES, NOW, "k")
    assert "by Mon 26 Oct 02:30 EDT" in rendered.text


def test_an_edited_or_added_template_is_used_once_its_recheck_time_has_passed(tmp_path: Path) -> None:
    """A running worker picks up template edits: a template looked up is kept for RECHECK_S,
    then its file (and whether the audience now has a template of its own) is checked again."""
    import os
    import shutil

    from scheduler.mail.render import RECHECK_S

    folder = tmp_path / "templates"
    shutil.copytree(bundled_path("templates"), folder)
    ticks = [100.0]
    templates = TemplateSet(folder, clock=lambda: ticks[0])
    context = _context()
    title = context["incident"]["title"]
    subject = folder / "default" / "update.subject.j2"

    def subject_now() -> str:
        return templates.render("partners", "update", context).subject

    assert title in subject_now()
    subject.write_text("Edited: {{ incident.title }}")
    os.utime(subject, (1_000, 1_000))  # a different mtime, however fast the test runs
    ticks[0] += RECHECK_S / 2
    assert not subject_now().startswith("Edited:")  # still the one looked up
    ticks[0] += RECHECK_S / 2
    assert subject_now() == f"Edited: {title}"
    (folder / "partners").mkdir()
    (folder / "partners" / "update.subject.j2").write_text("Partners: {{ incident.title }}")
    assert subject_now() == f"Edited: {title}"
    ticks[0] += RECHECK_S
    assert subject_now() == f"Partners: {title}"


def _context() -> dict[str, Any]:
    """A full template context for an update to the engineering stakeholder."""
    from scheduler.mail.messages import template_context

    stakeholder = CONFIG.stakeholder("eng")
    assert stakeholder is not None
    return template_context(_comm("update", "eng"), stakeholder, CONFIG, NOW, "k")


@pytest.mark.parametrize(
    "source",
    [
        "{{ incident.title }}",
        "{{ incident.keys }}",  # a key named like a dict method: the method wins, as in Jinja2
        "{{ incident['keys'] }}",
        "{{ incident.items() | list | length }}",
        "{{ incident.missing is defined }}",
        "{{ incident.__class__ is defined }}",
        "{{ incident.services | join(', ') }}",
        "{{ incident.nested.deep }}",
    ],
)
def test_the_sandbox_reads_dict_keys_as_jinja2s_own_does(source: str) -> None:
    """The sandbox's shortcut for plain dicts renders exactly what Jinja2's sandbox renders."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    incident = {"title": "Card payments", "keys": "k", "services": ["a", "b"], "nested": {"deep": 1}}
    ours = TEMPLATES.env.from_string(source).render(incident=incident)
    theirs = SandboxedEnvironment(undefined=StrictUndefined).from_string(source).render(incident=incident)
    assert ours == theirs

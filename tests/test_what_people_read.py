"""Messages a communications lead would sign: a human to answer, a plan, prevention, a tone that fits."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from email import message_from_string, policy
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli.main import main
from scheduler.core.config import Config, parse_config
from scheduler.core.events import parse_event
from scheduler.core.model import Kind
from scheduler.core.owners import OWNER_KINDS
from scheduler.core.tone import tone_for
from scheduler.mail.messages import compose_email, template_context
from scheduler.mail.preflight import sample_communication, thin_event_warnings, thin_message_warnings
from scheduler.mail.readthrough import read_through, variants
from scheduler.mail.render import TemplateSet
from scheduler.service.settings import bundled_path
from tests.conftest import event

NOW = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)
TEMPLATES = TemplateSet(bundled_path("templates"))
AUDIENCES = ("customer", "executive", "engineering", "default")
READER_KINDS = [k for k in Kind if k not in OWNER_KINDS]
"""What readers receive; an owner's alerts, digests and reminders go to the owner."""
DANA = {"name": "Dana Whitfield", "email": "dana@acme.example", "phone": "+1 555 0100"}


def config_with(**extra: Any) -> Config:
    return parse_config(
        {
            "sender": "Acme Status <status@acme.example>",
            "contact": {**DANA, "status_page": "https://status.acme.example"},
            "audiences": {"executive": {"contact": {"name": "Lee Chief", "email": "lee@acme.example"}}},
            "stakeholders": [
                {"id": "c", "name": "ACME Finance", "email": "c@x.example", "audience": "customer"},
                {"id": "x", "name": "Board", "email": "x@x.example", "audience": "executive"},
                {
                    "id": "e",
                    "name": "Payments Eng",
                    "email": "e@x.example",
                    "audience": "engineering",
                    "contact": {"name": "Ops Desk", "email": "ops@acme.example"},
                },
                {"id": "d", "name": "Someone", "email": "d@x.example"},
            ],
            **extra,
        }
    )


def rendered(config: Config, stakeholder_id: str, kind: str, seq: int = 2, **incident: Any) -> Any:
    stakeholder = config.stakeholder(stakeholder_id)
    assert stakeholder is not None
    comm = sample_communication(kind, stakeholder.id, "Europe/Berlin", NOW)
    comm = dataclasses.replace(
        comm, seq=seq, context={**comm.context, "incident": {**comm.context["incident"], **incident}}
    )
    return compose_email(comm, stakeholder, config, TEMPLATES, NOW, "secret")


@pytest.mark.parametrize("kind", READER_KINDS)
@pytest.mark.parametrize(
    ("stakeholder_id", "name", "address"),
    [
        ("c", "Dana Whitfield", "dana@acme.example"),
        ("x", "Lee Chief", "lee@acme.example"),
        ("e", "Ops Desk", "ops@acme.example"),
        ("d", "Dana Whitfield", "dana@acme.example"),
    ],
)
def test_every_message_names_a_person_and_replies_go_to_them(
    kind: str, stakeholder_id: str, name: str, address: str
) -> None:
    """Each message's Reply-To and both bodies name the stakeholder's contact, else the audience's, else the default."""
    email, message = rendered(config_with(), stakeholder_id, kind)
    parsed = message_from_string(email.as_string(), policy=policy.default)
    assert str(parsed["Reply-To"]) == f"{name} <{address}>"
    for body in (message.text, message.html):
        assert name in body and address in body


def test_without_a_contact_there_is_no_reply_to_and_the_sender_is_named() -> None:
    """With no contact configured, mail carries no Reply-To and tells readers to answer the sender."""
    config = parse_config(
        {
            "sender": "Acme Status <status@acme.example>",
            "stakeholders": [{"id": "d", "name": "D", "email": "d@x.example"}],
        }
    )
    email, message = rendered(config, "d", "acknowledgment")
    assert "Reply-To" not in email
    assert "Acme Status at status@acme.example" in message.text


@pytest.mark.parametrize("audience", AUDIENCES)
def test_an_acknowledgment_without_a_plan_still_says_what_happens_next_and_gives_the_workaround(
    audience: str,
) -> None:
    """Without a plan the acknowledgment says the cause comes first, and it gives the reader's workaround."""
    config = config_with()
    sid = {"customer": "c", "executive": "x", "engineering": "e", "default": "d"}[audience]
    _, message = rendered(
        config, sid, "acknowledgment", plan="", workaround="Pay by bank transfer meanwhile."
    )
    assert "working on it now" not in message.text
    assert "Pay by bank transfer meanwhile." in message.text
    if audience != "engineering":
        assert "cause" in message.text


@pytest.mark.parametrize("audience", AUDIENCES)
def test_a_resolution_shows_prevention_apart_from_the_plan_and_promises_the_review(audience: str) -> None:
    """The resolution gives the fix and the prevention as two things, the impact quoted as said at the time, and the review date."""
    config = config_with()
    sid = {"customer": "c", "executive": "x", "engineering": "e", "default": "d"}[audience]
    _, message = rendered(
        config,
        sid,
        "resolution",
        plan="Fail over to the backup processor.",
        prevention="Certificates now renew 30 days ahead.",
        review_by="2026-12-01",
    )
    text = message.text
    assert "Fail over to the backup processor." in text and "Certificates now renew 30 days ahead." in text
    assert text.index("Fail over") != text.index("Certificates")
    assert "Tuesday 1 December 2026" in text
    assert "About 1 in 5 card payments fail." in text
    assert re.search(r"as (we described it|reported|last reported) (at the time|while it lasted)", text)
    assert "from our incident plan" not in text and "what will prevent a recurrence" not in text


def test_the_apology_scales_with_severity() -> None:
    """A sev1 acknowledgment apologises gravely; a sev4 one says sorry for the inconvenience without "letting you down"."""
    grave = {tone_for("sev1", "acknowledgment", "INC-1", f"s{i}", 1)["apology"] for i in range(20)}
    light = {tone_for("sev4", "acknowledgment", "INC-1", f"s{i}", 1)["apology"] for i in range(20)}
    assert not grave & light
    assert all("letting you down" not in a and "deeply" not in a and "truly" not in a for a in light)
    assert all("responsibility" in a and "sorry" in a for a in grave | light)


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("severity", ("sev1", "sev2", "sev3", "sev4"))
def test_updates_along_a_thread_never_repeat_the_previous_closing(audience: str, severity: str) -> None:
    """Consecutive no-news updates of one thread word their closing and "still working" line differently, the same each time."""
    config = config_with()
    sid = {"customer": "c", "executive": "x", "engineering": "e", "default": "d"}[audience]
    stakeholder = config.stakeholder(sid)
    assert stakeholder is not None
    texts = []
    for seq in range(2, 8):
        comm = sample_communication("update", sid, "Europe/Berlin", NOW)
        incident = {**comm.context["incident"], "severity": severity}
        comm = dataclasses.replace(
            comm, seq=seq, context={**comm.context, "changes": [], "incident": incident}
        )
        context = template_context(comm, stakeholder, config, NOW, "secret")
        texts.append((context["tone"], TEMPLATES.render(audience, "update", context).text))
    closing = "colleague" if audience in ("executive", "engineering") else "apology"
    for (tone, text), (before, _) in zip(texts[1:], texts, strict=False):
        assert tone[closing] in text and tone["still_working"] in text
        assert tone[closing] != before[closing] and tone["still_working"] != before["still_working"]
    assert tone_for(severity, "update", "INC-SAMPLE", sid, 3) == texts[1][0]


def test_preview_warns_where_event_text_says_almost_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends preview` warns about "Fixed" as a summary and a resolution with no prevention, and still previews."""
    events = [event(), event("resolved", at=datetime(2026, 11, 26, 16, 0, tzinfo=UTC), summary="Fixed")]
    warnings = thin_event_warnings([parse_event(e) for e in events])
    assert any("incident.summary 'Fixed' says almost nothing" in w for w in warnings)
    assert any("no prevention" in w for w in warnings)
    path = tmp_path / "events.json"
    import json

    path.write_text(json.dumps(events))
    assert main(["preview", str(path), "--config", str(bundled_path("config") / "amends.yaml")]) == 0
    captured = capsys.readouterr()
    assert "says almost nothing" in captured.err and "resolution" in captured.out


def test_config_check_warns_about_a_template_that_says_almost_nothing(tmp_path: Path) -> None:
    """A text template that renders a handful of words is named by the thin-message check."""
    folder = tmp_path / "templates"
    import shutil

    shutil.copytree(bundled_path("templates") / "default", folder / "default")
    (folder / "default" / "update.txt.j2").write_text("Update. Next update by {{ next_update }}.\n")
    warnings = thin_message_warnings(TemplateSet(folder), config_with(), NOW)
    assert [w.split(":")[0] for w in warnings] == ["default/update.txt.j2"]
    assert not thin_message_warnings(TEMPLATES, config_with(), NOW)


def test_config_check_reports_an_unknown_audience_even_when_the_file_is_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends config check` names a misspelt audience both in a valid file and alongside other errors."""
    path = tmp_path / "amends.yaml"
    path.write_text(
        'sender: "A <s@a.example>"\nstakeholders:\n'
        "  - {id: a, name: A, email: a@acme.example, audience: custmer, timezone: Mars/Base}\n"
    )
    assert main(["config", "check", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "stakeholders[0].timezone" in err and "stakeholders[0].audience" in err and "custmer" in err
    path.write_text(
        'sender: "A <s@a.example>"\nstakeholders:\n  - {id: a, name: A, email: a@acme.example, audience: custmer}\n'
    )
    assert main(["config", "check", "--file", str(path)]) == 0
    captured = capsys.readouterr()
    assert "custmer" in captured.err and "warning" in captured.out


def test_the_bundled_templates_read_cleanly_in_every_case_and_channel() -> None:
    """Every bundled audience, kind and channel reads without a slip, optional fields empty, set or at their longest."""
    assert read_through(TEMPLATES, config_with(), NOW) == []


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("stakeholder_id", ["c", "x", "e", "d"])
@pytest.mark.parametrize(
    "incident",
    [
        {"plan": "", "workaround": "", "review_by": ""},
        {"plan": "", "workaround": "Pay by bank transfer", "review_by": "2026-12-01"},
        {"plan": "Fail over", "workaround": "Pay by bank transfer", "review_by": "2026-12-01"},
    ],
)
def test_no_sentence_runs_into_the_next_in_the_text_part(
    kind: str, stakeholder_id: str, incident: dict[str, str]
) -> None:
    """Whatever optional fields are empty, every sentence of the text part ends before the next begins."""
    _, rendered_message = rendered(config_with(), stakeholder_id, kind, **incident)
    for line in rendered_message.text.splitlines():
        assert not re.search(r"[a-z0-9][.!?:][A-Z]", line), line


@pytest.mark.parametrize("audience", AUDIENCES)
def test_a_summary_set_with_the_resolution_reads_as_where_things_stand_an_earlier_one_as_what_happened(
    audience: str,
) -> None:
    """`resolved --summary "Payments work again"` is put under "Where things stand", never under "What happened"."""
    config = config_with()
    sid = {"customer": "c", "executive": "x", "engineering": "e", "default": "d"}[audience]
    stakeholder = config.stakeholder(sid)
    assert stakeholder is not None
    comm = sample_communication("resolution", sid, "Europe/Berlin", NOW)
    change = {"field": "summary", "old": "A certificate expired.", "new": "Payments work again"}
    incident = {**comm.context["incident"], "summary": "Payments work again"}
    now_set = dataclasses.replace(comm, context={**comm.context, "incident": incident, "changes": [change]})
    _, message = compose_email(now_set, stakeholder, config, TEMPLATES, NOW, "secret")
    assert "Where things stand" in message.text and "Payments work again" in message.text
    assert "What happened" not in message.text
    _, earlier = rendered(config, sid, "resolution")
    assert (
        "What happened" in earlier.text
        and "A certificate expired on the card processor link." in earlier.text
    )


VENDOR_WORDS = ("sorry", "apolog", "your patience", "inconvenience", "you depend", "letting you down")


@pytest.mark.parametrize("severity", ("sev1", "sev2", "sev3", "sev4"))
@pytest.mark.parametrize("kind", READER_KINDS)
@pytest.mark.parametrize("stakeholder_id", ["x", "e"])
def test_internal_readers_are_spoken_to_as_colleagues_not_as_customers(
    stakeholder_id: str, kind: str, severity: str
) -> None:
    """Executives and engineers read ownership in a colleague's words in every case, never a vendor's apology."""
    config = config_with()
    stakeholder = config.stakeholder(stakeholder_id)
    assert stakeholder is not None
    sample = sample_communication(kind, stakeholder_id, "Europe/Berlin", NOW)
    sample = dataclasses.replace(
        sample, context={**sample.context, "incident": {**sample.context["incident"], "severity": severity}}
    )
    for _, comm in variants(sample):
        _, message = compose_email(comm, stakeholder, config, TEMPLATES, NOW, "secret")
        for body in (message.text, message.html):
            assert not [w for w in VENDOR_WORDS if w in body.lower()], body
        if kind != "feedback_request":
            assert (
                template_context(comm, stakeholder, config, NOW, "secret")["tone"]["colleague"]
                in message.text
            )

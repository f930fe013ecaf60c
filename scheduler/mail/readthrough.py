"""Reading every message a template set can write, as its readers will get it.

Each audience's kinds are rendered for email's text part and for the Slack and
Teams texts, with the incident's optional fields empty, set, and at the longest an
event may carry; updates also with no news, with changes and as a first contact; the kinds after an
incident also in each shape of what they are about (no rating, no comment, no new date…). Each
text is then proofread (:mod:`scheduler.mail.proofread`). ``amends config check`` and
the tests run this over the templates in use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from scheduler.core.config import Config
from scheduler.core.events import MAX_LINE_CHARS, MAX_TEXT_CHARS
from scheduler.core.model import Communication, Kind
from scheduler.errors import TemplateError
from scheduler.mail.channels import CHAT_PARTS, chat_text
from scheduler.mail.closing_samples import about_variants
from scheduler.mail.messages import template_context
from scheduler.mail.preflight import sample_communication, sample_readers
from scheduler.mail.proofread import proofread
from scheduler.mail.render import TemplateSet

__all__ = ["MANY_CHANGES", "OPTIONAL_FIELDS", "read_through", "variants"]

OPTIONAL_FIELDS = ("summary", "impact", "plan", "owner", "workaround", "prevention", "review_by")
_SECRET = "sample-secret"


def _long(sentence: str, limit: int) -> str:
    """``sentence`` repeated over several lines up to ``limit`` characters."""
    lines, text = [], ""
    while len(text) + len(sentence) + 1 <= limit:
        lines.append(sentence)
        text = "\n".join(lines)
    return text


_LONGEST = {
    "title": _long("Card payments failing for some customers in every region", MAX_LINE_CHARS)[
        :MAX_LINE_CHARS
    ],
    "summary": _long("A certificate expired on the link to the card processor.", MAX_TEXT_CHARS),
    "impact": _long("About one in five card payments fails at checkout.", MAX_TEXT_CHARS),
    "plan": _long("Rotate the certificate, then replay the failed payments.", MAX_TEXT_CHARS),
    "owner": ("Payments on-call, with the platform team " * 5)[:MAX_LINE_CHARS].strip(),
    "workaround": _long("Pay by bank transfer until card payments work again.", MAX_TEXT_CHARS),
    "prevention": _long("Certificates renew automatically thirty days ahead.", MAX_TEXT_CHARS),
}
_NEW_SUMMARY = {"field": "summary", "old": "A certificate expired.", "new": "Card payments work again."}
MANY_CHANGES: list[dict[str, Any]] = [
    {"field": "severity", "old": "sev2", "new": "sev1"},
    {"field": "services", "old": ["payments"], "new": ["payments", "checkout"]},
    {"field": "status", "old": "investigating", "new": "identified"},
    {"field": "plan", "old": "Fail over.", "new": "Rotate the certificate.\nThen replay failed payments."},
    {"field": "owner", "old": None, "new": "Platform on-call"},
    {"field": "impact", "old": "Some payments fail.", "new": ""},
    {"field": "workaround", "old": "", "new": "Pay by bank transfer."},
]
"""An update's changes of every shape: a severity, a list, a status, several lines, from
nothing, to nothing."""


def _with(comm: Communication, *, incident: dict[str, Any] | None = None, **stored: Any) -> Communication:
    context = {**comm.context, **stored}
    context["incident"] = {**comm.context["incident"], **(incident or {})}
    return dataclasses.replace(comm, context=context)


def variants(comm: Communication) -> Iterator[tuple[str, Communication]]:
    """``comm`` with its optional fields empty, as it is, at their longest, with each one
    alone set and each one alone empty; an update
    also with no news, with several changes, and as the reader's first message."""
    bare: dict[str, Any] = {name: "" for name in OPTIONAL_FIELDS} | {"services": []}
    yield "optional fields empty", _with(comm, incident=bare)
    yield "every field set", comm
    yield "every field at its longest", _with(comm, incident=_LONGEST)
    for name in OPTIONAL_FIELDS:
        yield f"only {name} set", _with(comm, incident={**bare, name: comm.context["incident"][name]})
        yield f"all but {name} set", _with(comm, incident={name: ""})
    if comm.kind == Kind.UPDATE:
        yield "no news, optional fields empty", _with(comm, incident=bare, changes=[])
        yield "no news", _with(comm, changes=[])
        yield "many changes", _with(comm, changes=MANY_CHANGES)
        yield "first contact", _with(comm, changes=[], first_contact=True, since_ms=None)
    if comm.kind == Kind.RESOLUTION:
        yield "first contact", _with(comm, changes=[], first_contact=True, since_ms=None)
    for case, about in about_variants(comm.kind):
        yield case, _with(comm, about=about)
        yield "summary set with the resolution", _with(comm, changes=[*MANY_CHANGES[-1:], _NEW_SUMMARY])


def read_through(templates: TemplateSet, config: Config, now: datetime) -> list[str]:
    """One line per slip found in any text an audience's template can render, naming the
    template, the line and the case (``executive/acknowledgment.txt.j2:7 (every field set): …``).

    Template errors are left to :func:`~scheduler.mail.preflight.check_templates`.
    """
    found: dict[tuple[str, str], str] = {}
    for audience, stakeholder in sample_readers(templates, config):
        timezone = config.timezone_of(stakeholder)
        for kind in Kind:
            sample = sample_communication(kind, stakeholder.id, timezone, now)
            for case, comm in variants(sample):
                context = template_context(comm, stakeholder, config, now, _SECRET)
                try:
                    texts = [
                        (
                            templates.name_of(audience, kind, "txt"),
                            templates.render(audience, kind, context).text,
                        )
                    ]
                    texts += [chat_text(templates, audience, kind, part, context) for part in CHAT_PARTS]
                except TemplateError:
                    break
                for name, text in texts:
                    for slip in proofread(text):
                        found.setdefault(
                            (name, slip.what), f"{name}:{slip.line} ({case}): {slip.what}: {slip.text!r}"
                        )
    return sorted(found.values())

"""Rendering communications from Jinja2 templates into email messages.

Templates live in ``<templates>/<audience>/<kind>.<part>.j2`` (parts: ``subject``,
``txt``, ``html``) with ``<templates>/default/`` as the fallback. They run in Jinja2's
sandbox with ``StrictUndefined``; HTML parts autoescape. Event text only ever enters as
context data, never as template source.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jinja2
import pendulum
from jinja2.sandbox import SandboxedEnvironment

from scheduler.errors import TemplateError

__all__ = ["PARTS", "RenderedMessage", "TemplateSet", "build_email", "clean_header", "local_time", "sentence"]

PARTS = ("subject", "txt", "html")
_POLICY = email.policy.SMTP.clone(max_line_length=998)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")


def clean_header(text: str, limit: int = 250) -> str:
    """One line fit for a mail header: control characters become spaces, runs collapse."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def sentence(text: object) -> str:
    """``text`` ending in a full stop unless it already ends in punctuation."""
    words = str(text).rstrip()
    return words if not words or words[-1] in ".!?…:;)\"'" else f"{words}."


def local_time(moment: datetime | None, timezone: str, reference: datetime | None = None) -> str:
    """``14:30 CET`` in the reader's zone; with the weekday and date when not on ``reference``'s day."""
    if moment is None:
        return ""
    local = pendulum.instance(moment).in_tz(timezone)
    clock = "HH:mm:ss" if local.second else "HH:mm"
    if reference is not None and pendulum.instance(reference).in_tz(timezone).date() != local.date():
        return local.format(f"ddd D MMM, {clock} zz")
    return local.format(f"{clock} zz")


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


class TemplateSet:
    """The template folder, compiled once per process."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise TemplateError(f"the template folder {folder} does not exist (AMENDS_TEMPLATES)")
        if not (folder / "default").is_dir():
            raise TemplateError(f"the template folder {folder} has no default/ set")
        self.folder = folder
        self.env: SandboxedEnvironment = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(folder)),
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["sentence"] = sentence

    def name_of(self, audience: str, kind: str, part: str) -> str:
        own = f"{audience}/{kind}.{part}.j2"
        if (self.folder / own).is_file():
            return own
        return f"default/{kind}.{part}.j2"

    def render(self, audience: str, kind: str, context: dict[str, Any]) -> RenderedMessage:
        parts: dict[str, str] = {}
        for part in PARTS:
            name = self.name_of(audience, kind, part)
            try:
                parts[part] = self.env.get_template(name).render(context)
            except jinja2.TemplateNotFound:
                raise TemplateError(f"template {name} is missing") from None
            except jinja2.TemplateSyntaxError as e:
                raise TemplateError(f"{e.name or name}:{e.lineno}: {e.message}") from None
            except (jinja2.UndefinedError, jinja2.exceptions.SecurityError, TypeError, ValueError) as e:
                raise TemplateError(f"{name}:{_template_line(e)}: {e}") from None
        return RenderedMessage(clean_header(parts["subject"]), parts["txt"], parts["html"])


def _template_line(error: BaseException) -> str:
    """The template line a rendering error happened on (Jinja2 maps frames to template lines)."""
    line = "?"
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line


def build_email(
    rendered: RenderedMessage,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    thread_id: str | None,
    sent_at: datetime,
    extra_headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A multipart/alternative message with a text and an HTML part.

    ``thread_id`` (the first message's Message-ID) goes into In-Reply-To and References so
    that every message of one incident to one stakeholder shows as one thread.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = clean_header(sender)
    message["To"] = clean_header(recipient)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id
    if thread_id and thread_id != message_id:
        message["In-Reply-To"] = thread_id
        message["References"] = thread_id
    message["Auto-Submitted"] = "auto-generated"
    for name, value in (extra_headers or {}).items():
        message[name] = clean_header(value, limit=900)
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def message_id_for(key: str, domain: str) -> str:
    """A deterministic Message-ID: the same key always gives the same id."""
    safe = re.sub(r"[^A-Za-z0-9._-]", ".", key)
    return f"<{safe}@{domain}>"

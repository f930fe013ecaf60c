"""Rendering communications from Jinja2 templates into email messages.

Templates live in ``<templates>/<audience>/<kind>.<part>.j2`` (parts: ``subject``,
``txt``, ``html``) with ``<templates>/default/`` as the fallback. They run in Jinja2's
sandbox with ``StrictUndefined``; HTML parts autoescape. Event text only ever enters as
context data, never as template source.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jinja2
import pendulum
from jinja2.sandbox import SandboxedEnvironment

from scheduler.errors import TemplateError
from scheduler.text import scrub, strip_bidi

__all__ = [
    "MAX_VERBATIM_LINE",
    "PARTS",
    "VERBATIM_HEADERS",
    "RenderedMessage",
    "TemplateSet",
    "build_email",
    "clean_header",
    "local_time",
    "message_id_for",
    "sentence",
]

PARTS = ("subject", "txt", "html")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")

VERBATIM_HEADERS = frozenset(
    {"message-id", "in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post"}
)
"""Headers written exactly as given: never RFC 2047-encoded, never folded.

RFC 2369 forbids encoded-words and whitespace inside ``<URL>``, and a msg-id has no place
where RFC 5322 allows folding; Python's header folding does both to a long value, which
breaks one-click unsubscribe and threading in real mail clients.
"""
MAX_VERBATIM_LINE = 998
"""RFC 5322's limit on a line, which a verbatim header must keep to on its own."""


class _MailPolicy(EmailPolicy):
    """``email.policy.SMTP`` (CRLF, 78-column folding, 7-bit only) except for VERBATIM_HEADERS."""

    def header_store_parse(self, name: str, value: str) -> tuple[str, str]:
        if name.lower() not in VERBATIM_HEADERS:
            return super().header_store_parse(name, value)
        line = f"{name}: {value}"
        if not value.isascii() or not value.isprintable() or len(line) > MAX_VERBATIM_LINE:
            raise ValueError(f"{name} must be printable ASCII of at most {MAX_VERBATIM_LINE} characters")
        return name, value

    def fold(self, name: str, value: str) -> str:
        if name.lower() in VERBATIM_HEADERS and type(value) is str:
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)  # type: ignore[no-any-return]

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in VERBATIM_HEADERS and type(value) is str:
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


# 7-bit: every body part is quoted-printable, so the message is plain ASCII, reads the
# same through any relay, and its string form is exactly the bytes on the wire.
_POLICY = _MailPolicy(linesep="\r\n", max_line_length=78, cte_type="7bit")


def clean_header(text: str, limit: int = 250) -> str:
    """One line fit for a mail header: control characters become spaces, runs collapse;
    bidirectional controls and lone surrogates, which could disguise or break it, go."""
    line = " ".join(_CONTROL.sub(" ", strip_bidi(scrub(text))).split())
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
    that every message of one incident to one stakeholder shows as one thread. The
    message is all ASCII and flattens the same way every time (the MIME boundary derives
    from the Message-ID), so ``message.as_string()`` is the exact form that is sent and
    logged. Headers in VERBATIM_HEADERS in ``extra_headers`` are kept exactly as given.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = clean_header(sender)
    message["To"] = clean_header(recipient)
    message["Subject"] = clean_header(rendered.subject)
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id
    if thread_id and thread_id != message_id:
        message["In-Reply-To"] = thread_id
        message["References"] = thread_id
    message["Auto-Submitted"] = "auto-generated"
    for name, value in (extra_headers or {}).items():
        message[name] = value if name.lower() in VERBATIM_HEADERS else clean_header(value, limit=900)
    message.set_content(scrub(rendered.text), cte="quoted-printable")
    message.add_alternative(scrub(rendered.html), subtype="html", cte="quoted-printable")
    # "=_" never occurs in quoted-printable text, so this boundary cannot collide with a body
    message.set_boundary("=_amends_" + hashlib.sha256(message_id.encode()).hexdigest()[:32])
    return message


def message_id_for(key: str, domain: str) -> str:
    """A deterministic Message-ID: the same key always gives the same id.

    Both halves are reduced to the characters a dot-atom allows, so that the id never
    needs encoding; an internationalised domain is written in its ASCII (IDNA) form.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", ".", key)
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_domain = domain
    ascii_domain = re.sub(r"[^A-Za-z0-9.-]", "-", ascii_domain).strip(".")[:253] or "amends.invalid"
    return f"<{safe}@{ascii_domain}>"

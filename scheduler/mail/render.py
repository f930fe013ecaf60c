"""Rendering communications from Jinja2 templates.

Templates live in ``<templates>/<audience>/<kind>.<part>.j2`` (parts: ``subject``,
``txt``, ``html``) with ``<templates>/default/`` as the fallback. They run in Jinja2's
sandbox with ``StrictUndefined``; HTML parts autoescape. Event text only ever enters as
context data, never as template source. :mod:`scheduler.mail.mime` makes the email.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from scheduler.core.text import scrub, strip_bidi
from scheduler.errors import TemplateError

__all__ = [
    "DAYS",
    "MONTHS",
    "PARTS",
    "RenderedMessage",
    "TemplateSet",
    "clean_header",
    "local_time",
    "render_named",
    "sentence",
    "zone",
]

PARTS = ("subject", "txt", "html")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")


def clean_header(text: str, limit: int = 250) -> str:
    """One line fit for a mail header: control characters become spaces, runs collapse;
    bidirectional controls and lone surrogates, which could disguise or break it, go."""
    line = " ".join(_CONTROL.sub(" ", strip_bidi(scrub(text))).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def sentence(text: object) -> str:
    """``text`` ending in a full stop unless it already ends in punctuation."""
    words = str(text).rstrip()
    return words if not words or words[-1] in ".!?…:;)\"'" else f"{words}."


@functools.lru_cache(maxsize=512)
def zone(timezone: str) -> ZoneInfo:
    """The IANA time zone ``timezone`` (``Europe/Berlin``), loaded once."""
    return ZoneInfo(timezone)


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def local_time(moment: datetime | None, timezone: str, reference: datetime | None = None) -> str:
    """``14:30 CET`` in the reader's zone; with the weekday and date when not on ``reference``'s day."""
    if moment is None:
        return ""
    local = moment.astimezone(zone(timezone))
    clock = f"{local:%H:%M:%S}" if local.second else f"{local:%H:%M}"
    if reference is not None and reference.astimezone(local.tzinfo).date() != local.date():
        return f"{DAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]}, {clock} {local.tzname()}"
    return f"{clock} {local.tzname()}"


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
            parts[part] = render_named(self.env, self.name_of(audience, kind, part), context)
        return RenderedMessage(clean_header(parts["subject"]), parts["txt"], parts["html"])


def render_named(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render the template ``name``; Jinja2's errors become TemplateError naming the template and line."""
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {name} is missing") from None
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{e.name or name}:{e.lineno}: {e.message}") from None
    except (jinja2.UndefinedError, jinja2.exceptions.SecurityError, TypeError, ValueError) as e:
        raise TemplateError(f"{name}:{_template_line(e)}: {e}") from None


def _template_line(error: BaseException) -> str:
    """The template line a rendering error happened on (Jinja2 maps frames to template lines)."""
    line = "?"
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line

"""Rendering communications from Jinja2 templates.

Templates live in ``<templates>/<audience>/<kind>.<part>.j2`` (parts: ``subject``,
``txt``, ``html``) with ``<templates>/default/`` as the fallback. They run in Jinja2's
sandbox with ``StrictUndefined``; HTML parts autoescape. Event text only ever enters as
context data, never as template source. :mod:`scheduler.mail.mime` makes the email.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    "message_time",
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


def message_time(
    moment: datetime | None, timezone: str, today: datetime, *, seconds: bool = False, promise: bool = False
) -> str:
    """``moment`` as a reader in ``timezone`` reads it in a message written at ``today``.

    ``08:21 CET`` on the reader's today, ``08:21 CET tomorrow`` or ``yesterday`` next to it,
    ``Tue 3 Dec 08:21 CET`` further away (with the year when it is not this one). Seconds
    only with ``seconds`` (a cadence under a minute); otherwise a ``promise`` is rounded up
    to the minute, so that "by 08:22" holds for a message due at 08:21:22, and any other
    time is cut to its minute.
    """
    if moment is None:
        return ""
    if promise and not seconds and (moment.second or moment.microsecond):
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    local = moment.astimezone(zone(timezone))
    clock = f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"
    at = f"{clock} {local.tzname()}"
    days = (local.date() - today.astimezone(local.tzinfo).date()).days
    if days == 0:
        return at
    if days in _NEXT_TO_TODAY:
        return f"{at} {_NEXT_TO_TODAY[days]}"
    year = f" {local.year}" if local.year != today.astimezone(local.tzinfo).year else ""
    return f"{DAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]}{year} {at}"


_NEXT_TO_TODAY = {1: "tomorrow", -1: "yesterday"}


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox, reading a key of a plain dict (``incident.title``) without first
    raising and catching an AttributeError for it.

    The result is the sandbox's own: for a plain dict, ``getattr`` fails for every name
    that is not an attribute of ``dict`` itself, and the sandbox then reads the key.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_DICT_ATTRIBUTES = frozenset(dir(dict))

RECHECK_S = 1.0
"""How long a looked-up template is used before its file is checked again: an edited
template is picked up by the next message at most this much later."""


class TemplateSet:
    """The template folder, compiled once per process.

    Which file serves an audience's kind and part, and that file's compiled template, are
    looked up once and then used for ``RECHECK_S`` before being checked on disk again: a
    worker composing hundreds of messages a second does not stat six files for each.
    """

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not folder.is_dir():
            raise TemplateError(f"the template folder {folder} does not exist (AMENDS_TEMPLATES)")
        if not (folder / "default").is_dir():
            raise TemplateError(f"the template folder {folder} has no default/ set")
        self.folder = folder
        self.env: SandboxedEnvironment = _Sandbox(
            loader=jinja2.FileSystemLoader(str(folder)),
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html.j2")),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._clock = clock
        self._held: dict[tuple[str, str, str], tuple[str, jinja2.Template, float]] = {}
        self.env.filters["sentence"] = sentence

    def name_of(self, audience: str, kind: str, part: str) -> str:
        own = f"{audience}/{kind}.{part}.j2"
        if (self.folder / own).is_file():
            return own
        return f"default/{kind}.{part}.j2"

    def render(self, audience: str, kind: str, context: dict[str, Any]) -> RenderedMessage:
        parts = {part: self._render(audience, kind, part, context) for part in PARTS}
        return RenderedMessage(clean_header(parts["subject"]), parts["txt"], parts["html"])

    def _render(self, audience: str, kind: str, part: str, context: Mapping[str, Any]) -> str:
        key = (audience, kind, part)
        now = self._clock()
        held = self._held.get(key)
        if held is None or now - held[2] >= RECHECK_S:
            name = self.name_of(audience, kind, part)
            try:
                held = (name, self.env.get_template(name), now)  # Jinja2 reloads a changed file
            except _JINJA_ERRORS as e:
                raise _template_error(e, name) from None
            self._held[key] = held
        name, template, _ = held
        try:
            return template.render(context)
        except _JINJA_ERRORS as e:
            raise _template_error(e, name) from None


def render_named(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render the template ``name``; Jinja2's errors become TemplateError naming the template and line."""
    try:
        return env.get_template(name).render(context)
    except _JINJA_ERRORS as e:
        raise _template_error(e, name) from None


_JINJA_ERRORS = (
    jinja2.TemplateNotFound,
    jinja2.TemplateSyntaxError,
    jinja2.UndefinedError,
    jinja2.exceptions.SecurityError,
    TypeError,
    ValueError,
)


def _template_error(error: Exception, name: str) -> TemplateError:
    """A Jinja2 error met loading or rendering ``name``, as a TemplateError naming the template and line."""
    if isinstance(error, jinja2.TemplateNotFound):
        return TemplateError(f"template {name} is missing")
    if isinstance(error, jinja2.TemplateSyntaxError):
        return TemplateError(f"{error.name or name}:{error.lineno}: {error.message}")
    return TemplateError(f"{name}:{_template_line(error)}: {error}")


def _template_line(error: BaseException) -> str:
    """The template line a rendering error happened on (Jinja2 maps frames to template lines)."""
    line = "?"
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line

"""Reading a rendered text part as an editor would: the slips a template makes, not the event.

A template that eats a line break runs one sentence into the next heading
(``…by the next updateWorkaround: …``); an optional field left empty leaves a heading
with nothing after it (``Owner: .``); a fragment printed twice doubles a word or a full
stop. :func:`proofread` finds these in a rendered text, so that the bundled templates
(in the tests) and a user's own (``amends config check``) are read before anyone gets
them. Web and mail addresses are left out of the reading: they are not prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Slip", "proofread"]

_NOT_PROSE = re.compile(r"\S+://\S+|<\S+[|>][^>]*>?|\S+@\S+\.\S+|\[[^\]]*\]\(\S+\)")
"""Links, Slack's ``<url|label>``, Markdown's ``[label](url)`` and mail addresses."""

_RUN_TOGETHER = re.compile(r"[a-z][a-z)]([A-Z][a-z]+(?: [a-z]+){0,5}:)")
"""A lowercase word ending straight into a capitalised heading (``updateWorkaround:``)."""
_NO_SPACE_AFTER_STOP = re.compile(r"[a-z]{2}[.!?]([A-Z][a-z]+)")
_HEADING_AT_END = re.compile(r"^\s*(?:[-•*]\s*)?([A-Z][\w ,()'/-]{0,60}):\s*$")
_EMPTY_HEADING = re.compile(r"([A-Z][\w ()'/-]{0,60}):\s*[.,;]")
_DOUBLED_WORD = re.compile(r"\b([A-Za-z]{2,})\s+\1\b", re.IGNORECASE)
_DOUBLED_STOP = re.compile(r"(?<![.])(?:[.,;!?…]\s?[.,;:]|:[.,;])(?![.\w])")
"""``expire.;`` or ``done..``; a colon, a space and a stop is an empty heading instead."""
_MARKUP = re.compile(r"\*+|(?<!\w)_+|_+(?!\w)")
"""Slack's and Teams' emphasis around a heading (``*What we know:*``)."""


@dataclass(frozen=True)
class Slip:
    """One slip: the line it is on (from 1), what is wrong, and the words around it."""

    line: int
    what: str
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}: {self.text!r}"


def _prose(line: str) -> str:
    return _MARKUP.sub("", _NOT_PROSE.sub("LINK", line.replace("...", "…")))


def _around(line: str, start: int, end: int) -> str:
    return line[max(0, start - 20) : end + 20].strip()


def _next_words(lines: list[str], index: int) -> str:
    """The next line with words on it after ``index``, or "" when a blank line or the end comes first."""
    return lines[index + 1].strip() if index + 1 < len(lines) else ""


def proofread(text: str) -> list[Slip]:
    """The slips in ``text``: sentences run together, a heading with nothing after it,
    a doubled word, doubled punctuation. Empty when it reads cleanly."""
    lines = [_prose(line) for line in text.splitlines()]
    slips: list[Slip] = []
    for index, line in enumerate(lines):
        number = index + 1
        for found in _RUN_TOGETHER.finditer(line):
            slips.append(Slip(number, "a sentence runs into the next heading", _around(line, *found.span())))
        for found in _NO_SPACE_AFTER_STOP.finditer(line):
            slips.append(Slip(number, "no space after a full stop", _around(line, *found.span())))
        heading = _HEADING_AT_END.match(line)
        if heading and not _next_words(lines, index):
            slips.append(Slip(number, "a heading with nothing after it", line.strip()))
        for found in _EMPTY_HEADING.finditer(line):
            slips.append(Slip(number, "a heading with nothing after it", _around(line, *found.span())))
        for found in _DOUBLED_WORD.finditer(line):
            slips.append(Slip(number, f"the word {found.group(1)!r} twice", _around(line, *found.span())))
        for found in _DOUBLED_STOP.finditer(line):
            slips.append(Slip(number, "doubled punctuation", _around(line, *found.span())))
    return slips

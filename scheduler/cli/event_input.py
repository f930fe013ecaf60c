"""Events read from a file or stdin for ``emit`` and ``preview``, validated, each problem printed."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler.core.events import (
    Event,
    check_not_ahead,
    decode_json,
    parse_event,
    parse_event_json,
    rejected_excerpt,
)
from scheduler.core.text import decode_utf8, scrub
from scheduler.errors import EventError

__all__ = ["Refused", "load_events", "validated"]


def _stdin_bytes() -> bytes:
    if hasattr(sys.stdin, "buffer"):
        return bytes(sys.stdin.buffer.read())
    # a text stream: lone surrogates come back as bytes that the strict decoding refuses
    return sys.stdin.read().encode("utf-8", "surrogatepass")


class _Unreadable(EventError):
    """Input that is not UTF-8 or not JSON; ``excerpt`` is the start of it, to keep."""

    def __init__(self, where: str, reason: str, raw: bytes) -> None:
        super().__init__("unreadable events", [(where, reason)])
        self.excerpt = rejected_excerpt(raw)


def _read_events(path: str) -> list[Any]:
    """The events in a file or stdin, read as bytes and decoded strictly: undecodable bytes
    are refused here, never carried on as lone surrogates. EventError holds one (where, why)."""
    where = "stdin" if path == "-" else path
    raw = _stdin_bytes() if path == "-" else Path(path).read_bytes()
    try:
        text = decode_utf8(raw)
    except ValueError as e:
        raise _Unreadable(where, str(e), raw) from None
    try:
        data = decode_json(text)
    except EventError as e:
        detail = e.errors[0][1].removeprefix("not valid JSON: ")
        raise _Unreadable(where, f"is not JSON: {detail}", raw) from None
    return data if isinstance(data, list) else [data]


Refused = list[tuple[Any, list[tuple[str, str]]]]
"""Each invalid document with its problems (place, reason), to keep for ``amends log --rejected``."""


def load_events(
    command: str, path: str, now: datetime | None = None, *, refused: Refused | None = None
) -> list[Event] | None:
    """Read and validate a file (or stdin) of events; on a problem print it and return None.

    Every event is checked before any is used, and each problem is named
    ``events[i].field`` when the file holds a list; each invalid document goes to
    ``refused``, and so does the start of input that is not UTF-8 or not JSON.
    """
    try:
        documents = _read_events(path)
    except OSError as e:
        print(f"amends {command}: cannot read {path}: {e.strerror}", file=sys.stderr)
        return None
    except EventError as e:
        where, reason = e.errors[0]
        if refused is not None and isinstance(e, _Unreadable):
            refused.append((e.excerpt, [("", f"{where} {reason}")]))
        print(f"amends {command}: {scrub(where)} {scrub(reason)}", file=sys.stderr)
        return None
    if not documents:
        print(f"amends {command}: {path if path != '-' else 'stdin'} holds no events", file=sys.stderr)
        return None
    return validated(command, documents, now, refused=refused)


def validated(
    command: str,
    documents: list[Any],
    now: datetime | None,
    *,
    flag_of: Callable[[str], str] | None = None,
    refused: Refused | None = None,
) -> list[Event] | None:
    """Every document as an event (not dated ahead of ``now``, when given), or None after
    printing each problem of each document (naming the flag that sets each field, with
    ``flag_of``); each invalid document and its problems are added to ``refused``."""
    events, problems = [], []
    for index, document in enumerate(documents):
        try:
            parse_event(document)  # first: a document too deep to serialise is refused here
            event = parse_event_json(json.dumps(document))
            events.append(check_not_ahead(event, now) if now is not None else event)
        except EventError as e:
            if refused is not None:
                refused.append((document, list(e.errors)))
            prefix = f"events[{index}]" if len(documents) > 1 else ""
            for place, why in e.errors:
                where = ".".join(p for p in (prefix, place) if p) or "event"
                flag = flag_of(place) if flag_of else ""
                problems.append(f"{where} ({flag}): {why}" if flag else f"{where}: {why}")
    if problems:
        lines = "".join(f"\n  {scrub(p)}" for p in problems)
        print(f"amends {command}: invalid event:{lines}", file=sys.stderr)
        return None
    return events

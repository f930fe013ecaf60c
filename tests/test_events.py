"""Event validation: schema 1 as DESIGN.md states it, and a corpus of bad events."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from scheduler import emit
from scheduler.cli.main import main
from scheduler.core.events import parse_event, parse_event_json
from scheduler.errors import EventError
from tests.conftest import event

GOOD = event()


def _without(field: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != field}


def _incident(**fields: Any) -> dict[str, Any]:
    return {**GOOD, "incident": {**GOOD["incident"], **fields}}


BAD_EVENTS: list[tuple[str, Any, str, str]] = [
    ("missing event_id", _without("event_id"), "event_id", "is required"),
    ("missing incident_id", _without("incident_id"), "incident_id", "is required"),
    ("missing occurred_at", _without("occurred_at"), "occurred_at", "is required"),
    ("missing schema", _without("schema"), "schema", "is required"),
    ("schema 2", {**GOOD, "schema": 2}, "schema", "unsupported schema 2"),
    ("unknown type", {**GOOD, "type": "incident.closed"}, "type", "incident.opened"),
    ("unknown severity", _incident(severity="sev9"), "incident.severity", "sev1"),
    ("severity as number", _incident(severity=1), "incident.severity", "sev1"),
    ("naive timestamp", {**GOOD, "occurred_at": "2026-11-26T14:03:00"}, "occurred_at", "no time zone"),
    ("malformed timestamp", {**GOOD, "occurred_at": "yesterday"}, "occurred_at", "not an ISO 8601"),
    ("timestamp as number", {**GOOD, "occurred_at": 1764165780}, "occurred_at", "ISO 8601 string"),
    ("services as string", _incident(services="payments"), "incident.services", "valid list"),
    ("title as number", _incident(title=42), "incident.title", "valid string"),
    ("oversized title", _incident(title="x" * 201), "incident.title", "at most 200 characters"),
    ("oversized summary", _incident(summary="x" * 4001), "incident.summary", "at most 4000 characters"),
    ("CRLF in title", _incident(title="Down\r\nBcc: x@evil.example"), "incident.title", "one line"),
    ("NUL in summary", _incident(summary="a\x00b"), "incident.summary", "control characters"),
    ("opened without severity", {**GOOD, "incident": {"title": "x"}}, "incident.severity", "is required"),
    ("opened without title", {**GOOD, "incident": {"severity": "sev2"}}, "incident.title", "is required"),
    ("unknown field", {**GOOD, "colour": "red"}, "colour", "not a known field"),
    ("bad incident id", {**GOOD, "incident_id": "INC 1/2"}, "incident_id", "is not an id"),
    ("empty source", {**GOOD, "source": ""}, "source", "at least 1"),
    ("not an object", ["an", "array"], "", "JSON object"),
    ("updated without changes", event("updated"), "incident", "at least one changed field"),
]


@pytest.mark.parametrize(("case", "document", "field", "reason"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_bad_events_name_the_field_and_reason(case: str, document: Any, field: str, reason: str) -> None:
    """Each invalid event is refused with the field that is wrong and why."""
    with pytest.raises(EventError) as caught:
        parse_event(document)
    assert any(f == field and reason in r for f, r in caught.value.errors), caught.value.errors


def test_a_good_event_is_normalised_to_utc() -> None:
    """occurred_at with an offset is kept as the same instant in UTC."""
    parsed = parse_event({**GOOD, "occurred_at": "2026-11-26T15:03:00+01:00"})
    assert parsed.occurred_at.isoformat() == "2026-11-26T14:03:00+00:00"


def test_updated_may_carry_only_what_changed() -> None:
    """incident.updated needs no title or severity: it carries only the changed fields."""
    parsed = parse_event(event("updated", status="identified"))
    assert parsed.incident.given() == {"status": "identified"}


def test_oversized_json_is_refused_before_parsing() -> None:
    """A document over 64 KiB is refused with its size and the limit."""
    with pytest.raises(EventError, match="the limit is 65536"):
        parse_event_json(json.dumps({**GOOD, "pad": "x" * 70_000}))


def test_emit_enqueues_a_valid_event_and_nothing_for_an_invalid_one() -> None:
    """emit() puts a valid event on the `events` queue and refuses a bad one without enqueueing."""
    broker = StubBroker()
    broker.declare_queue("events")
    emit(GOOD, broker=broker)
    with pytest.raises(EventError):
        emit(_incident(severity="sev9"), broker=broker)
    assert broker.queues["events"].qsize() == 1


def test_cli_emit_refuses_a_bad_event_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`amends emit --file` exits 2 and names the field when the event is invalid."""
    path = tmp_path / "event.json"
    path.write_text(json.dumps(_incident(severity="sev9")))
    assert main(["emit", "--file", str(path)]) == 2
    assert "incident.severity" in capsys.readouterr().err


def test_cli_emit_refuses_bad_flags_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`amends emit opened` with an unknown severity exits 2 naming incident.severity."""
    assert main(["emit", "opened", "--incident", "INC-1", "--title", "x", "--severity", "high"]) == 2
    assert "incident.severity" in capsys.readouterr().err


def test_cli_emit_refuses_non_json_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends emit -` with text that is not JSON exits 2 and says so."""
    monkeypatch.setattr("sys.stdin", io.StringIO("{not json"))
    assert main(["emit", "-"]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_events_dated_far_ahead_are_refused_at_the_edge() -> None:
    """emit() refuses an event more than a day ahead of its clock; a little skew is fine."""
    from datetime import UTC, datetime

    broker = StubBroker()
    broker.declare_queue("events")
    now = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    emit({**GOOD, "occurred_at": "2026-11-26T20:00:00Z"}, broker=broker, now=now)
    with pytest.raises(EventError, match="more than a day ahead"):
        emit({**GOOD, "occurred_at": "2030-01-01T00:00:00Z"}, broker=broker, now=now)
    assert broker.queues["events"].qsize() == 1

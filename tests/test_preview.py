"""`amends preview`: the timeline each stakeholder would receive, on a simulated clock."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from scheduler import emit
from scheduler.cli.main import main
from scheduler.cli.preview import simulate
from scheduler.core.config import parse_config
from scheduler.core.events import parse_event
from scheduler.mail.render import TemplateSet
from scheduler.service.settings import bundled_path
from tests.conftest import BASE_CONFIG, App, event
from tests.helpers import at

EVENTS = [
    event(at=at(14, 3, 5)),
    event("updated", status="identified", plan="Rotate the certificate.", at=at(14, 10)),
    event("updated", owner="Platform on-call", at=at(14, 12)),
    event("resolved", summary="Rotated.", at=at(14, 50)),
]


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.json"
    path.write_text(json.dumps(EVENTS))
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "amends.yaml"
    path.write_text(yaml.safe_dump(BASE_CONFIG))
    return path


def test_preview_prints_each_stakeholders_timeline_in_their_zone(
    events_file: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text timeline lists every message per stakeholder with local times and subjects."""
    assert main(["preview", str(events_file), "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    finance = out.split("acme-finance")[1].split("\n\n")[0]
    assert "Thu 26 Nov 15:03:05 CET     acknowledgment" in finance
    assert "Thu 26 Nov 15:10:00 CET     update" in finance
    assert "Thu 26 Nov 15:25:00 CET     update" in finance
    assert "Thu 26 Nov 15:50:00 CET     resolution" in finance
    assert "Thu 26 Nov 17:50:00 CET     feedback_request" in finance
    assert "Thu 26 Nov 09:03:05 EST" in out and "Thu 26 Nov 23:03:05 JST" in out
    assert "search-team" not in out


def test_preview_json_lines(events_file: Path, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object per message with stakeholder, kind, UTC time, local time with offset, subject."""
    assert main(["preview", str(events_file), "--config", str(config_file), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = rows[0]
    assert set(first) == {"stakeholder", "kind", "at", "local", "subject", "channel"}
    ack = next(r for r in rows if r["stakeholder"] == "payments-eng")
    assert ack["at"] == "2026-11-26T14:03:05Z" and ack["local"] == "2026-11-26T23:03:05+09:00"
    assert [r["kind"] for r in rows if r["stakeholder"] == "globex"] == [
        "acknowledgment",
        "update",  # 14:10, the material change
        "update",  # 14:40, one 30m cadence later
        "resolution",
        "feedback_request",
    ]


def test_preview_writes_html_for_a_person_to_look_at(
    events_file: Path, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--html DIR writes every message's HTML part and an index that links them."""
    out_dir = tmp_path / "html"
    assert main(["preview", str(events_file), "--config", str(config_file), "--html", str(out_dir)]) == 0
    pages = sorted(out_dir.glob("*/*.html"))
    index = (out_dir / "index.html").read_text()
    assert len(pages) == index.count("<a href=") > 10
    assert all(page.read_text().lstrip().lower().startswith("<!doctype html") for page in pages)


def test_preview_refuses_invalid_events_naming_them(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid event in the file exits 2 and names its index and field."""
    bad = [EVENTS[0], {**EVENTS[1], "type": "incident.closed"}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["preview", str(path), "--config", str(config_file)]) == 2
    assert "events[1].type:" in capsys.readouterr().err


@pytest.mark.real
def test_preview_shows_what_the_live_scheduler_does(app: App) -> None:
    """For the same events and config, the preview's timeline equals what the worker and scheduler send."""
    for document in EVENTS:
        app.advance_to(parse_event(document).occurred_at)
        emit(document, broker=app.broker)
        app.drain()
    app.advance_to(at(17, 0))
    live = sorted(
        (c.stakeholder_id, c.kind, c.sent_at, c.subject) for c in app.runtime.store.communications()
    )
    timeline = simulate(
        [parse_event(e) for e in EVENTS],
        parse_config(BASE_CONFIG),
        TemplateSet(bundled_path("templates")),
        timedelta(hours=2, minutes=10),
    )
    preview = sorted((m.stakeholder_id, m.kind, m.at, m.subject) for m in timeline.messages)
    assert preview == live
    assert len(live) > 12

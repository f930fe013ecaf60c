"""Events that wait for their incident's opened: answered as waiting, visible while they wait, rejected after."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from fastapi.testclient import TestClient

from scheduler import emit
from scheduler.cli.main import main
from scheduler.service.waiting import hold_words, waiting_events
from scheduler.storage import keys
from scheduler.web.app import create_app
from tests.conftest import App, event

pytestmark = pytest.mark.real

TOKEN = "test-api-token"


@pytest.fixture
def live(app: App) -> Iterator[TestClient]:
    """The API in front of a running worker, on the worker's clock."""
    with TestClient(create_app(app.settings.with_(api_token=TOKEN), clock=app.clock)) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield client


@pytest.fixture
def cli_env(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    monkeypatch.setenv("AMENDS_CONFIG", str(app.config_path))
    monkeypatch.setenv("COLUMNS", "200")
    return app


class _Lines(logging.Handler):
    """The log lines of the worker's loggers, and a flag raised at the first line that says an event waits."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.waits = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        if "waits for its opened" in line:
            self.waits.set()


@pytest.fixture
def worker_log() -> Iterator[_Lines]:
    handler = _Lines()
    names = ("scheduler.service.waiting", "workers.events", "dramatiq.middleware.retries.Retries")
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def test_an_event_whose_incident_never_opens_is_said_once_to_wait_then_rejected_with_the_reason(
    app: App, worker_log: _Lines, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker logs "INC-999: resolved waits for its opened" once, no retry lines, and rejects it at the end of the hold."""
    emit(event("resolved", incident_id="INC-999", summary="Card payments work again."), broker=app.broker)
    app.drain()  # the hold is 2 s here; the retries are drained with it
    waits = [line for line in worker_log.lines if "waits for its opened" in line]
    assert waits == ["INC-999: resolved waits for its opened (up to 2 s)"]
    assert not [line for line in worker_log.lines if line.startswith("Retrying message")]
    (record,) = app.runtime.store.rejected()
    assert record["errors"][0]["reason"] == "INC-999: resolved waited 2 s for its opened, and none came"
    assert waiting_events(app.runtime.client) == []
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["log", "--rejected", "--incident", "INC-999"]) == 0
    out = capsys.readouterr().out
    assert "waited 2 s for its opened, and none came" in out and "worker" in out


def test_a_waiting_event_shows_in_the_log_the_review_page_and_metrics_until_its_opened_comes(
    cli_env: App, live: TestClient, worker_log: _Lines, capsys: pytest.CaptureFixture[str]
) -> None:
    """While a resolved waits, `amends log --waiting`, the review page and /metrics show it; once opened, it is applied and gone."""
    app = cli_env
    emit(event("resolved", incident_id="INC-7", summary="Card payments work again."), broker=app.broker)
    assert worker_log.waits.wait(10), "the worker did not say the event waits"
    assert main(["log", "--waiting"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["waiting", "since", "event_id"]
    assert any("INC-7" in line and "resolved" in line for line in table[1:])
    assert main(["log", "--waiting", "--json"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["incident_id"] == "INC-7" and record["type"] == "incident.resolved"
    page = live.get("/").text
    assert 'id="waiting"' in page and "INC-7" in page and "incident.resolved" in page
    assert "amends_waiting_events 1" in live.get("/metrics").text
    assert main(["log", "--incident", "INC-7"]) == 0
    out = capsys.readouterr().out
    assert "no communications match" in out
    assert "1 event(s) of INC-7 wait for their incident's opened: amends log --waiting" in out
    emit(event("opened", incident_id="INC-7"), broker=app.broker)
    app.drain()
    assert waiting_events(app.runtime.client) == []
    assert main(["log", "--waiting"]) == 0
    assert "no events are waiting" in capsys.readouterr().out
    assert "amends_waiting_events 0" in live.get("/metrics").text
    assert 'id="waiting"' not in live.get("/").text
    kinds = [m.message["Subject"] for m in app.sink.to("finance@acme.example")]
    assert any(subject.startswith("[Resolved]") for subject in kinds)
    assert app.runtime.store.rejected() == []


def test_the_doors_answer_waiting_for_an_incident_not_opened_yet(
    cli_env: App, live: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends emit` prints waiting and exits 0, the API answers 202 "waiting"; an opened in the same batch is not waiting."""
    assert main(["emit", "resolved", "--incident", "INC-999", "--summary", "Card payments work again."]) == 0
    out = capsys.readouterr().out
    assert out.startswith("waiting ") and "(incident.resolved INC-999)" in out
    assert "incident INC-999 is not opened yet; it waits up to 10 min for its opened" in out
    answer = live.post("/v1/events", json=event("updated", incident_id="INC-998", status="identified"))
    assert answer.status_code == 202
    assert answer.json()["status"] == "waiting" and "INC-998 is not opened yet" in answer.json()["detail"]
    batch = [event("updated", incident_id="INC-5", status="identified"), event("opened", incident_id="INC-5")]
    answer = live.post("/v1/events", json=batch)
    assert [a["status"] for a in answer.json()["events"]] == ["enqueued", "enqueued"]
    cli_env.drain()
    answer = live.post("/v1/events", json=event("updated", incident_id="INC-5", status="monitoring"))
    assert answer.status_code == 202 and answer.json()["status"] == "enqueued"


def test_a_cli_refusal_is_kept_with_the_rejected_events_as_an_api_one_is(
    cli_env: App, live: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event `amends emit` refuses is kept in `amends log --rejected`, marked as come through the CLI."""
    assert main(["emit", "opened", "--incident", "INC-3", "--severity", "sev1"]) == 2
    assert "incident.title (--title)" in capsys.readouterr().err
    live.post("/v1/events", json=event("opened", incident_id="INC-4", severity="sev9"))
    assert main(["log", "--rejected"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "via" in table[0].split()
    cli = next(line for line in table if "INC-3" in line)
    api = next(line for line in table if "INC-4" in line)
    assert " cli " in cli and "incident.title" in cli
    assert " api " in api and "incident.severity" in api
    assert cli_env.runtime.client.llen(keys.REJECTED) == 2


def test_a_cli_input_that_is_not_json_is_kept_with_the_rejected_events(
    cli_env: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file `amends emit --file` cannot read as JSON is refused and its start kept in `amends log --rejected`."""
    bad = tmp_path / "event.json"
    bad.write_bytes(b'{"schema": 1, "type": "incident.opened", "incident_id": "INC-7",')
    assert main(["emit", "--file", str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    (record,) = cli_env.runtime.store.rejected()
    assert record["event"].startswith('{"schema": 1') and "INC-7" in record["event"]
    assert "is not JSON" in record["errors"][0]["reason"]
    assert main(["log", "--rejected"]) == 0
    assert " cli " in capsys.readouterr().out


def test_a_waiting_event_is_retried_without_dramatiq_retry_lines(app: App, worker_log: _Lines) -> None:
    """Handling a waiting event raises Dramatiq's Retry (the event is not lost) and keeps it as waiting."""
    import workers.actors

    with pytest.raises(dramatiq.Retry):
        workers.actors.handle_event(event("reopened", incident_id="INC-8"))
    (waiting,) = waiting_events(app.runtime.client, "INC-8")
    assert waiting.type == "incident.reopened" and "INC-8" in waiting.reason
    assert waiting.until > waiting.since


@pytest.mark.parametrize(
    ("hold_ms", "words"),
    [(600_000, "10 min"), (120_000, "2 min"), (90_000, "90 s"), (2_000, "2 s"), (1_500, "1.5 s")],
)
def test_the_hold_is_said_in_minutes_or_seconds(hold_ms: int, words: str) -> None:
    """The hold a waiting event is told and rejected with reads as people say it, never rounded away."""
    assert hold_words(hold_ms) == words

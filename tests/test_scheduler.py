"""The cadence scheduler end to end: real Redis timers, a real worker, a real SMTP server.

Time is a FakeClock the engine and the loop read; ``advance_to`` steps it from timer to
timer, ticking the loop and draining the queues, so no test sleeps.
"""

from __future__ import annotations

import copy
import itertools
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler import emit
from scheduler.core.model import ms_of
from scheduler.service.loop import SchedulerLoop
from scheduler.service.processes import remove_expired
from scheduler.service.queues import TIMERS_QUEUE, enqueue
from scheduler.storage.timers import RedisTimerStore
from tests.conftest import BASE_CONFIG, App, event
from tests.helpers import at

pytestmark = pytest.mark.real

T0 = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)


@pytest.fixture
def loop(app: App) -> SchedulerLoop:
    return app.loop  # type: ignore[no-any-return]


def sent(app: App, stakeholder: str, kind: str | None = None) -> list[Any]:
    return [
        c
        for c in app.runtime.store.communications()
        if c.stakeholder_id == stakeholder and (kind is None or c.kind == kind) and c.status == "sent"
    ]


def open_incident(app: App, **fields: Any) -> None:
    emit(event(at=app.clock(), **fields), broker=app.broker)
    app.drain()


def test_regular_updates_follow_each_stakeholders_own_cadence(app: App, loop: SchedulerLoop) -> None:
    """With no news, finance (15m) gets four updates in an hour and globex (30m) two, each on time."""
    open_incident(app)
    app.advance_to(at(15, 5))
    finance = [c.sent_at for c in sent(app, "acme-finance", "update")]
    globex = [c.sent_at for c in sent(app, "globex", "update")]
    assert finance == [at(14, 19), at(14, 34), at(14, 49), at(15, 4)]
    assert globex == [at(14, 34), at(15, 4)]
    for comm in sent(app, "acme-finance", "update"):
        assert comm.sent_at == comm.promised_at  # the promise and the schedule are one value


def test_the_promise_in_each_message_is_the_next_messages_due_time(app: App, loop: SchedulerLoop) -> None:
    """Each acknowledgment and update states the time the next update is then sent at."""
    open_incident(app)
    app.advance_to(at(14, 40))
    thread = sent(app, "acme-finance")
    for message, following in itertools.pairwise(thread):
        assert message.next_update_at == following.promised_at == following.sent_at
    mails = app.sink.to("finance@acme.example")
    assert "Next update by 15:19 CET" in mails[0].part("plain")
    assert "Next update by 15:34 CET" in mails[1].part("plain")


def test_an_update_without_news_says_so(app: App, loop: SchedulerLoop) -> None:
    """A regular update with nothing new says there is no new information since the last message."""
    open_incident(app)
    app.advance_to(at(14, 20))
    update = app.sink.to("finance@acme.example")[1]
    text = update.part("plain")
    assert "no new information since our last message at 15:03 CET" in text
    assert "Fail over to the backup processor" in text
    assert update.message["Subject"].startswith("Still working on it")


def test_material_change_is_sent_at_once_and_restarts_the_cadence(app: App, loop: SchedulerLoop) -> None:
    """A status change goes out at once to everyone; the next regular update is one cadence after it."""
    open_incident(app)
    app.clock.set(at(14, 10))
    emit(
        event("updated", status="identified", plan="Rotate the certificate.", at=app.clock()),
        broker=app.broker,
    )
    app.drain()
    assert len(app.sink.received) == 6
    change = app.sink.to("finance@acme.example")[1].part("plain")
    assert "Status: identified" in change and "Plan: Rotate the certificate." in change
    app.advance_to(at(14, 30))
    finance = [c.sent_at for c in sent(app, "acme-finance", "update")]
    assert finance == [at(14, 10), at(14, 25)]  # nothing at the old 14:19 promise


def test_non_material_change_waits_for_the_next_regular_update(app: App, loop: SchedulerLoop) -> None:
    """A new owner sends nothing at once and appears in the next regular update as a change."""
    open_incident(app)
    app.clock.set(at(14, 10))
    emit(event("updated", owner="Platform on-call", at=app.clock()), broker=app.broker)
    app.drain()
    assert len(app.sink.received) == 3
    app.advance_to(at(14, 19))
    text = app.sink.to("finance@acme.example")[1].part("plain")
    assert "Owner: Platform on-call" in text


def test_severity_change_replans_the_cadence(app: App, loop: SchedulerLoop) -> None:
    """sev1 -> sev2 is sent at once; finance's next update then follows its sev2 cadence (1h default)."""
    open_incident(app)
    app.clock.set(at(14, 10))
    emit(event("updated", severity="sev2", at=app.clock()), broker=app.broker)
    app.drain()
    app.advance_to(at(15, 20))
    assert [c.sent_at for c in sent(app, "acme-finance", "update")] == [at(14, 10), at(15, 10)]


def test_resolution_stops_updates_and_feedback_follows(app: App, loop: SchedulerLoop) -> None:
    """Resolved: a resolution at once, no update after it, a signed feedback request after feedback_after."""
    open_incident(app)
    app.advance_to(at(14, 25))
    app.clock.set(at(14, 30))
    emit(event("resolved", summary="Fixed.", at=app.clock()), broker=app.broker)
    app.drain()
    assert {c.stakeholder_id for c in app.runtime.store.communications() if c.kind == "resolution"} == {
        "acme-finance",
        "globex",
        "payments-eng",
    }
    app.advance_to(at(17, 0))
    updates_after = [
        c for c in app.runtime.store.communications() if c.kind == "update" and c.created_at > at(14, 30)
    ]
    assert updates_after == []
    feedback = sent(app, "acme-finance", "feedback_request")
    assert [c.sent_at for c in feedback] == [at(16, 30)]  # resolved 14:30 + feedback_after 2h
    text = app.sink.to("finance@acme.example")[-1].part("plain")
    assert "https://status.acme.example/feedback/INC-1/acme-finance?rating=5&sig=" in text


def test_reopening_cancels_feedback_and_restarts_updates(app: App, loop: SchedulerLoop) -> None:
    """Reopened: the pending feedback request is dropped and regular updates start again."""
    open_incident(app)
    app.clock.set(at(14, 30))
    emit(event("resolved", at=app.clock()), broker=app.broker)
    app.drain()
    app.clock.set(at(15, 0))
    emit(event("reopened", status="investigating", at=app.clock()), broker=app.broker)
    app.drain()
    app.advance_to(at(17, 0))
    assert sent(app, "acme-finance", "feedback_request") == []
    updates = [c.sent_at for c in sent(app, "acme-finance", "update")]
    assert updates[:3] == [at(15, 0), at(15, 15), at(15, 30)]


@pytest.fixture
def quiet_config() -> dict[str, Any]:
    config = copy.deepcopy(BASE_CONFIG)
    config["stakeholders"][0]["quiet_hours"] = "15:30-18:00"  # CET: 14:30-17:00 UTC
    config["defaults"]["quiet_hours_override"] = []
    return config


def test_quiet_hours_defer_updates_to_their_end(
    app: App, loop: SchedulerLoop, quiet_config: dict[str, Any]
) -> None:
    """An update falling into the stakeholder's quiet hours waits until they end (18:00 CET)."""
    app.write_config(quiet_config)
    open_incident(app)
    app.advance_to(at(17, 5))
    finance = [c.sent_at for c in sent(app, "acme-finance", "update")]
    assert finance == [at(14, 19), at(17, 0)]
    assert "Next update by 18:00 CET" in app.sink.to("finance@acme.example")[1].part("plain")


def test_config_changes_apply_without_restart(app: App, loop: SchedulerLoop) -> None:
    """A new cadence applies after the promise already made; a new stakeholder is acknowledged; a removed one hears nothing."""
    open_incident(app)
    config = copy.deepcopy(BASE_CONFIG)
    config["stakeholders"][0]["cadence"] = {"sev1": "5m"}
    config["stakeholders"] = [s for s in config["stakeholders"] if s["id"] != "globex"]
    config["stakeholders"].append({"id": "ops", "name": "Ops", "email": "ops@acme.example"})
    app.clock.set(at(14, 5))
    app.write_config(config)
    enqueue(app.broker, TIMERS_QUEUE, "reconcile")
    app.drain()
    assert [m.rcpt_tos[0] for m in app.sink.received][-1] == "ops@acme.example"
    app.advance_to(at(14, 40))
    assert [c.sent_at for c in sent(app, "acme-finance", "update")] == [
        at(14, 19),
        at(14, 24),
        at(14, 29),
        at(14, 34),
        at(14, 39),
    ]
    assert sent(app, "globex", "update") == []


def test_a_claim_lost_before_enqueue_comes_back_after_its_lease(app: App, loop: SchedulerLoop) -> None:
    """A scheduler that claimed timers and died before enqueueing loses nothing: they return after the lease."""
    open_incident(app)
    crashed = loop.timers.claim(ms_of(at(14, 19)), 30_000, 100)  # claimed, never enqueued nor acked
    assert [m for m, _ in crashed] == ["u|INC-1|acme-finance"]
    app.clock.set(at(14, 19))
    assert loop.tick(at(14, 19)) == 0
    app.clock.set(at(14, 19, 31))
    assert loop.tick(app.clock()) == 1
    app.drain()
    (update,) = sent(app, "acme-finance", "update")
    assert update.promised_at == at(14, 19)


def test_concurrent_schedulers_enqueue_each_timer_once(app: App) -> None:
    """Four schedulers ticking at once enqueue each due timer exactly once."""
    timers = RedisTimerStore(app.runtime.client)
    timers.arm_many((f"u|INC-{n}|x", ms_of(T0)) for n in range(2000))
    seen: list[str] = []
    lock = threading.Lock()

    def send(timers: list[tuple[str, int]]) -> None:
        with lock:
            seen.extend(member for member, _ in timers)

    loops = [SchedulerLoop(RedisTimerStore(app.runtime.client), send, batch=50) for _ in range(4)]
    threads = [threading.Thread(target=lp.tick, args=(T0 + timedelta(seconds=1),)) for lp in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 2000 and len(set(seen)) == 2000


def _cli_clock_at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """Make `amends log` read ``moment`` as the time: its report window ends at the clock it reads,
    and the tests' incidents happen on a fixed day."""

    class _Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return moment.astimezone(tz) if tz else moment.replace(tzinfo=None)

    monkeypatch.setattr("scheduler.cli.log.datetime", _Clock)


def test_log_promises_reports_kept_promises(
    app: App, loop: SchedulerLoop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends log --promises` counts promises kept and gives lateness percentiles."""
    from scheduler.cli.main import main

    open_incident(app)
    app.advance_to(at(14, 40))
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    _cli_clock_at(monkeypatch, at(14, 41))
    capsys.readouterr()
    assert main(["log", "--promises", "--status", "sent"]) == 0  # only what was sent
    out = capsys.readouterr().out
    assert "promises kept on time (within 60s): 7 of 7;" in out
    assert "lateness of the 7 sent: p50 0.00s" in out  # updates to the millisecond; acks within ms


def test_promises_overdue_while_nothing_runs_are_reported(
    app: App, loop: SchedulerLoop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A promised update whose time passed while no scheduler ran shows as overdue, before anything is sent."""
    from scheduler.cli.main import main
    from scheduler.core.promises import open_promises, promise_report

    open_incident(app)
    late = at(14, 19) + timedelta(seconds=61)  # finance's 14:19 update, past the 60 s grace; nothing ticked
    report = promise_report(app.runtime.store.communications(), late, open_promises(app.runtime.store))
    assert report.overdue_unsent == 1 and report.promises == 4
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    _cli_clock_at(monkeypatch, at(15, 0))  # long past globex's 14:34 promise
    capsys.readouterr()
    assert main(["log", "--promises", "--stakeholder", "globex"]) == 0
    assert "overdue and unsent: 1" in capsys.readouterr().out


def test_retention_removes_an_incident_resolved_longer_ago_than_configured(app: App) -> None:
    """With ``retention: 1d``, a day after its resolution the incident and its messages go;
    an incident still open stays, however old."""
    app.write_config({**BASE_CONFIG, "retention": "1d"})
    emit(event(), broker=app.broker)
    emit(event(incident_id="INC-2", at=at(14, 3)), broker=app.broker)
    app.drain()
    app.advance_to(at(14, 30))
    emit(event("resolved", at=at(14, 30)), broker=app.broker)
    app.drain()
    store = app.runtime.store
    config = app.runtime.config()
    assert remove_expired(store, config.retention, at(23, 0)) == 0
    assert remove_expired(store, config.retention, at(14, 31) + timedelta(days=1)) == 1
    assert store.incident("INC-1") is None and store.incident_comms("INC-1") == []
    assert store.incident("INC-2") is not None and store.incident_comms("INC-2")
    assert {c.incident_id for c in store.communications()} == {"INC-2"}
    assert store.removed().incidents == 1

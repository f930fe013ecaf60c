"""The simulation behind ``amends preview``: what each stakeholder would receive, on a simulated clock.

The preview runs the product's own engine, cadence policy, timer loop and templates over
an in-memory store and timer store; only the clock and the SMTP server are simulated.
So the timeline it prints is what the live worker and scheduler would do with the same
events and configuration.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pendulum

from scheduler.core.config import Config
from scheduler.core.delivery import as_received, cancel_reason
from scheduler.core.engine import Engine
from scheduler.core.events import Event
from scheduler.core.model import Status, iso_z, ms_of, utc_of
from scheduler.core.promises import OpenPromise, open_promises
from scheduler.mail.channels import compose_channel
from scheduler.mail.messages import compose_email
from scheduler.mail.render import TemplateSet
from scheduler.service.loop import SchedulerLoop
from scheduler.storage.memory_store import MemoryStore
from scheduler.storage.timers import MemoryTimerStore

__all__ = [
    "PreviewMessage",
    "Timeline",
    "simulate",
    "timeline_json",
    "timeline_text",
    "write_html",
]

_SECRET = "preview"
_WEBHOOK_SECRET = "whsec_" + "cHJldmlldy1vbmx5LW5vdC1hLXJlYWwta2V5"  # signs nothing that is sent
_MAX_MESSAGES = 10_000


@dataclass(frozen=True)
class PreviewMessage:
    """One message as the stakeholder would receive it."""

    stakeholder_id: str
    timezone: str
    kind: str
    at: datetime
    subject: str
    text: str
    html: str
    comm_id: str
    channel: str = "email"
    body: str = ""
    """For a slack, teams or webhook stakeholder: the JSON body as it would be posted."""

    @property
    def local(self) -> pendulum.DateTime:
        return pendulum.instance(self.at).in_tz(self.timezone)


@dataclass(frozen=True)
class Timeline:
    messages: list[PreviewMessage]
    pending: list[OpenPromise]
    """What was still due when the preview stopped."""


class _Outbox:
    def __init__(self) -> None:
        self.pending: list[str] = []

    def deliver(self, comm_id: str) -> None:
        self.pending.append(comm_id)

    def flush(self) -> None:
        pass


@dataclass
class _Simulation:
    config: Config
    templates: TemplateSet
    store: MemoryStore
    timers: MemoryTimerStore
    outbox: _Outbox
    engine: Engine
    messages: list[PreviewMessage]

    def send_pending(self, now: datetime) -> None:
        while self.outbox.pending:
            comm_id = self.outbox.pending.pop(0)
            claim = self.store.begin_send(comm_id, ms_of(now), 60_000, "preview")
            if claim.following:
                self.outbox.pending.append(claim.following)
            if claim.state != "ok":
                continue
            comm = claim.comm
            if comm is None:  # pragma: no cover - "ok" comes with the communication
                continue
            stakeholder = self.config.stakeholder(comm.stakeholder_id)
            incident = self.store.incident(comm.incident_id)
            opted_out = self.store.is_opted_out(comm.stakeholder_id, comm.incident_id)
            reason = cancel_reason(comm, stakeholder, incident, opted_out)
            if reason is not None or stakeholder is None:
                _, following = self.store.finish_send(
                    comm_id, "preview", Status.CANCELLED, ms_of(now), last_error=reason or ""
                )
                self.outbox.pending += [following] if following else []
                continue
            comm = as_received(
                self.store,
                comm,
                now,
                prev_status=claim.prev_status,
                prev_sent_at=claim.prev_sent_at,
                thread=functools.partial(self.store.thread, comm.incident_id, comm.stakeholder_id),
            )
            _, rendered = compose_email(comm, stakeholder, self.config, self.templates, now, _SECRET)
            text, body = rendered.text, ""
            if stakeholder.channel != "email":
                delivery = compose_channel(
                    comm,
                    stakeholder,
                    self.config,
                    self.templates,
                    now,
                    _SECRET,
                    webhook_secret=_WEBHOOK_SECRET,
                )
                text, body = delivery.text, delivery.message
            _, following = self.store.finish_send(
                comm_id, "preview", Status.SENT, ms_of(now), sent_ms=ms_of(now), subject=rendered.subject
            )
            self.outbox.pending += [following] if following else []
            self.messages.append(
                PreviewMessage(
                    stakeholder.id,
                    self.config.timezone_of(stakeholder),
                    comm.kind,
                    now,
                    rendered.subject,
                    text,
                    rendered.html,
                    comm_id,
                    stakeholder.channel,
                    body,
                )
            )
            if len(self.messages) > _MAX_MESSAGES:
                raise RuntimeError(
                    f"the preview stopped after {_MAX_MESSAGES} messages; give a shorter --until"
                )

    def run_timers_until(self, moment: datetime) -> None:
        def fire(due: list[tuple[str, int]]) -> None:
            for member, due_ms in due:
                self.engine.fire_timer(member, due_ms, utc_of(due_ms))  # type: ignore[arg-type]

        loop = SchedulerLoop(self.timers, fire)
        while (wakeup := self.timers.next_wakeup_ms()) is not None and wakeup <= ms_of(moment):
            now = utc_of(wakeup)
            assert now is not None
            loop.tick(now)
            self.send_pending(now)


def simulate(
    events: Iterable[Event], config: Config, templates: TemplateSet, after_last: timedelta
) -> Timeline:
    """Every message the events cause, in time order, until ``after_last`` past the last event.

    The simulation stops early once no timer is left (every incident resolved and every
    feedback request sent); what is still due after the end is listed as pending.
    """
    store, timers, outbox = MemoryStore(), MemoryTimerStore(), _Outbox()
    engine = Engine(store, timers, lambda: config, outbox)
    sim = _Simulation(config, templates, store, timers, outbox, engine, [])
    ordered = sorted(events, key=lambda e: e.occurred_at)
    for event in ordered:
        # An event wins a tie with a timer: a resolution at 17:10 is not preceded by a
        # "still working on it" update at 17:10.
        sim.run_timers_until(event.occurred_at - timedelta(milliseconds=1))
        outcome = engine.handle_event(event, event.occurred_at)
        if outcome.waiting:
            raise ValueError(
                f"event {event.event_id}: incident {event.incident_id!r} has no incident.opened before it"
            )
        if outcome.rejected:
            raise ValueError(f"event {event.event_id}: {outcome.rejected}")
        sim.send_pending(event.occurred_at)
    if ordered:
        sim.run_timers_until(ordered[-1].occurred_at + after_last)
    pending = sorted(open_promises(store), key=lambda p: p.due)
    return Timeline(sorted(sim.messages, key=lambda m: m.at), pending)


def timeline_text(timeline: Timeline, config: Config) -> str:
    """The timeline grouped by stakeholder (incident owners last), each time in the stakeholder's own zone."""
    lines: list[str] = []
    configured = {s.id for s in config.stakeholders}
    owners = sorted({m.stakeholder_id for m in timeline.messages} - configured)
    found = [config.stakeholder(sid) for sid in owners]  # incident owners: feedback and review mail
    for stakeholder in [*config.stakeholders, *(s for s in found if s is not None)]:
        own = [m for m in timeline.messages if m.stakeholder_id == stakeholder.id]
        if not own:
            continue
        tz = config.timezone_of(stakeholder)
        lines.append(
            f"{stakeholder.id}  {stakeholder.name} <{stakeholder.recipient}>  {tz}, audience {stakeholder.audience}"
        )
        for message in own:
            local = message.local.format("ddd D MMM HH:mm:ss zz")
            lines.append(f"  {local:<26}  {message.kind:<16}  {message.subject}")
        for later in (p for p in timeline.pending if p.stakeholder_id == stakeholder.id):
            local = pendulum.instance(later.due).in_tz(tz).format("ddd D MMM HH:mm:ss zz")
            lines.append(f"  {local:<26}  {later.kind:<16}  (due after the end of this preview)")
        lines.append("")
    if not lines:
        return "no stakeholder is concerned by these events"
    return "\n".join(lines).rstrip()


def timeline_json(messages: list[PreviewMessage]) -> Iterable[str]:
    """One JSON object per message: stakeholder, kind, at (UTC), local (with offset), subject, channel."""
    for message in messages:
        yield json.dumps(
            {
                "stakeholder": message.stakeholder_id,
                "kind": message.kind,
                "at": iso_z(message.at),
                "local": message.local.isoformat(),
                "subject": message.subject,
                "channel": message.channel,
            },
            ensure_ascii=False,
        )


def write_html(messages: list[PreviewMessage], folder: Path) -> Path:
    """Write each message's HTML part under ``folder/<stakeholder>/`` and an index page."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, message in enumerate(messages, start=1):
        own = folder / message.stakeholder_id
        own.mkdir(exist_ok=True)
        name = f"{n:03d}-{message.kind}.html"
        (own / name).write_text(message.html, encoding="utf-8")
        rows.append(
            f"<tr><td>{html.escape(message.local.format('ddd D MMM HH:mm:ss zz'))}</td>"
            f"<td>{html.escape(message.stakeholder_id)}</td><td>{html.escape(message.kind)}</td>"
            f'<td><a href="{html.escape(message.stakeholder_id)}/{name}">{html.escape(message.subject)}</a></td></tr>'
        )
    index = folder / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>amends preview</title></head>"
        "<body style='font-family:Arial,sans-serif'><h1>amends preview</h1>"
        "<table cellpadding='4'><tr><th>when (stakeholder's zone)</th><th>stakeholder</th><th>kind</th>"
        f"<th>subject</th></tr>{''.join(rows)}</table></body></html>",
        encoding="utf-8",
    )
    return index

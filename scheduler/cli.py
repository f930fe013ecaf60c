"""The ``amends`` command line. Exit status: 0 done, 1 failed, 2 bad input or usage."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from scheduler.errors import AmendsError, ConfigError, EventError, SettingsError
from scheduler.events import EVENT_TYPES, Event, parse_event_json
from scheduler.settings import Settings

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _settings(*, needs_config: bool = False) -> Settings:
    settings = Settings.from_env()
    if needs_config and settings.uses_example_config and not Path("config/amends.yaml").is_file():
        print(
            f"amends: no config/amends.yaml here and AMENDS_CONFIG is not set; using the shipped example "
            f"{settings.config_path}",
            file=sys.stderr,
        )
    return settings


def _store(settings: Settings) -> Any:
    import redis

    from scheduler.store import RedisStore

    return RedisStore(redis.Redis.from_url(settings.resolved_redis_url()))


# -- emit ------------------------------------------------------------------------------


def _event_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    incident: dict[str, Any] = {}
    for name in ("title", "severity", "status", "summary", "impact", "plan", "owner"):
        value = getattr(args, name, None)
        if value is not None:
            incident[name] = value
    if args.service:
        incident["services"] = args.service
    return {
        "schema": 1,
        "event_id": args.event_id or str(uuid.uuid4()),
        "type": f"incident.{args.type}",
        "incident_id": args.incident,
        "occurred_at": args.occurred_at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": args.source,
        "incident": incident,
    }


def _read_events(path: str) -> list[Any]:
    raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise EventError(f"{'stdin' if path == '-' else path} is not JSON", [("", str(e))]) from None
    return data if isinstance(data, list) else [data]


def _load_events(command: str, path: str) -> list[Event] | None:
    """Read and validate a file (or stdin) of events; on a problem print it and return None.

    Every event is checked before any is used, and each problem is named
    ``events[i].field`` when the file holds a list.
    """
    try:
        documents = _read_events(path)
    except OSError as e:
        print(f"amends {command}: cannot read {path}: {e.strerror}", file=sys.stderr)
        return None
    except EventError as e:
        print(f"amends {command}: {e}", file=sys.stderr)
        return None
    if not documents:
        print(f"amends {command}: {path if path != '-' else 'stdin'} holds no events", file=sys.stderr)
        return None
    events, problems = [], []
    for index, document in enumerate(documents):
        try:
            events.append(parse_event_json(json.dumps(document)))
        except EventError as e:
            prefix = f"events[{index}]" if len(documents) > 1 else ""
            problems += [
                f"{'.'.join(p for p in (prefix, place) if p) or 'event'}: {why}" for place, why in e.errors
            ]
    if problems:
        print(f"amends {command}: invalid event" + "".join(f"\n  {p}" for p in problems), file=sys.stderr)
        return None
    return events


def cmd_emit(args: argparse.Namespace) -> int:
    from scheduler.emitting import emit

    from_flags = args.type is not None and args.type != "-"
    if from_flags and args.file:
        print(f"amends emit: give either '{args.type}' with flags or --file, not both", file=sys.stderr)
        return EXIT_USAGE
    if from_flags:
        if not args.incident:
            print("amends emit: --incident is required", file=sys.stderr)
            return EXIT_USAGE
        events = _load_events_from([_event_from_flags(args)])
    elif args.file or args.type == "-":
        events = _load_events("emit", args.file or "-")
    else:
        print("amends emit: give --file FILE, - for stdin, or a type such as 'opened'", file=sys.stderr)
        return EXIT_USAGE
    if events is None:
        return EXIT_USAGE
    settings = Settings.from_env()
    if settings.redis_url is None:
        print(
            f"amends emit: AMENDS_REDIS_URL is not set; enqueueing on the embedded Redis under "
            f"{settings.data_dir / 'redis'}, which only a worker started here without AMENDS_REDIS_URL reads",
            file=sys.stderr,
        )
    for event in events:
        emit(event.model_dump(mode="json", by_alias=True, exclude_none=True))
        print(f"enqueued {event.event_id} ({event.type} {event.incident_id})")
    return EXIT_OK


def _load_events_from(documents: list[dict[str, Any]]) -> list[Event] | None:
    try:
        return [parse_event_json(json.dumps(d)) for d in documents]
    except EventError as e:
        print(f"amends emit: {e}", file=sys.stderr)
        return None


# -- config ----------------------------------------------------------------------------


def _config_path(settings: Settings, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    return settings.config_path


def cmd_config_check(args: argparse.Namespace) -> int:
    from scheduler.config import load_config
    from scheduler.preflight import audience_warnings, check_templates

    settings = _settings(needs_config=True)
    path = _config_path(settings, args.file)
    problems = 0
    try:
        config = load_config(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_FAILED
    for warning in audience_warnings(config, settings.templates_dir):
        print(f"  warning: {warning}", file=sys.stderr)
    template_errors = check_templates(config, settings.templates_dir)
    for error in template_errors:
        print(f"  {error}", file=sys.stderr)
    problems += len(template_errors)
    if problems:
        print(f"{path}: {problems} problem(s)", file=sys.stderr)
        return EXIT_FAILED
    print(f"{path}: OK ({len(config.stakeholders)} stakeholders, templates in {settings.templates_dir})")
    return EXIT_OK


# -- log -------------------------------------------------------------------------------


def cmd_log(args: argparse.Namespace) -> int:
    from scheduler.durations import parse_duration
    from scheduler.logview import (
        REJECTED_COLUMNS,
        LogFilter,
        format_table,
        promise_report,
        rejected_records,
        rejected_row,
        row_json,
        table_row,
    )

    settings = _settings()
    store = _store(settings)
    if args.target:
        if args.target[0] != "show" or len(args.target) != 2:
            print("amends log: use 'amends log show COMM_ID'", file=sys.stderr)
            return EXIT_USAGE
        comm = store.comm(args.target[1])
        if comm is None:
            print(f"amends log: no communication {args.target[1]!r}", file=sys.stderr)
            return EXIT_FAILED
        if args.json:
            print(json.dumps({**comm.as_json(), "message": comm.message}, ensure_ascii=False))
        elif comm.message:
            print(comm.message)
        else:
            not_sent = {
                "failed": "it was not sent and will not be",
                "cancelled": "it was cancelled and will not be sent",
            }.get(comm.status, "nothing has been sent yet")
            print(f"{comm.id} is {comm.status}: {not_sent}. Last error: {comm.last_error or '-'}")
        return EXIT_OK
    since = None
    if args.since:
        try:
            since = datetime.now(UTC) - timedelta(seconds=parse_duration(args.since))
        except ValueError as e:
            print(f"amends log: --since: {e}", file=sys.stderr)
            return EXIT_USAGE
    if args.rejected:
        if args.stakeholder or args.kind or args.status or args.promises:
            print(
                "amends log: --rejected takes only --incident, --since, --limit and --json", file=sys.stderr
            )
            return EXIT_USAGE
        records = rejected_records(store.rejected(args.limit), args.incident, since)
        if args.json:
            for record in records:
                print(json.dumps(record, ensure_ascii=False))
        elif records:
            print(format_table((rejected_row(r) for r in records), REJECTED_COLUMNS))
        else:
            print("no rejected events")
        return EXIT_OK
    keep = LogFilter(args.incident, args.stakeholder, args.kind, args.status)
    comms = [c for c in store.communications(since) if keep.keeps(c)]
    if args.promises:
        report = promise_report(comms, datetime.now(UTC))
        if args.json:
            print(json.dumps(report.as_json()))
        else:
            print("\n".join(report.lines()))
        return EXIT_OK
    if args.json:
        for comm in comms:
            print(row_json(comm))
    elif comms:
        print(format_table(table_row(c) for c in comms))
    else:
        print("no communications match")
    return EXIT_OK


# -- processes -------------------------------------------------------------------------


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_worker(args: argparse.Namespace) -> int:
    from scheduler.processes import start_worker

    settings = _settings(needs_config=True)
    settings.require_worker()
    worker = start_worker(settings, threads=args.threads)
    print(
        f"amends worker: consuming from {worker.broker_url_redacted} with {args.threads} threads; "
        f"sending through {settings.smtp.redacted() if settings.smtp else '-'}",
        flush=True,
    )
    _stop_on_signals().wait()
    worker.stop()
    return EXIT_OK


def cmd_scheduler(args: argparse.Namespace) -> int:
    from scheduler.processes import start_scheduler

    settings = _settings(needs_config=True)
    stop = _stop_on_signals()
    loop = start_scheduler(settings, stop)
    print("amends scheduler: waiting for due timers", flush=True)
    stop.wait()
    loop.join(timeout=10)
    return EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    from scheduler.config import load_config
    from scheduler.durations import parse_duration
    from scheduler.preview import simulate, timeline_json, timeline_text, write_html
    from scheduler.render import TemplateSet

    settings = _settings(needs_config=True)
    try:
        after_last = timedelta(seconds=parse_duration(args.until))
    except ValueError as e:
        print(f"amends preview: --until: {e}", file=sys.stderr)
        return EXIT_USAGE
    events = _load_events("preview", args.file)
    if events is None:
        return EXIT_USAGE
    config = load_config(_config_path(settings, args.config))
    try:
        timeline = simulate(events, config, TemplateSet(settings.templates_dir), after_last)
    except ValueError as e:
        print(f"amends preview: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        for line in timeline_json(timeline.messages):
            print(line)
    else:
        print(timeline_text(timeline, config))
    if args.html:
        index_page = write_html(timeline.messages, Path(args.html))
        print(
            f"HTML of {len(timeline.messages)} messages: {index_page}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from scheduler.demo import run_demo

    return run_demo()


def cmd_serve(args: argparse.Namespace) -> int:
    print(
        "amends serve: the HTTP API is not part of this version yet; use 'amends emit' and 'amends log'",
        file=sys.stderr,
    )
    return EXIT_FAILED


# -- parser ----------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amends")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amends",
        description="Keep every stakeholder of an incident informed: acknowledgment, updates on "
        "their cadence, resolution, feedback request.",
        epilog="Environment: AMENDS_REDIS_URL, AMENDS_SMTP_URL, AMENDS_CONFIG, AMENDS_TEMPLATES, "
        "AMENDS_SECRET_KEY, AMENDS_API_TOKEN, AMENDS_HOME (see README.md). "
        "Exit status: 0 done, 1 failed, 2 bad input or usage.",
    )
    parser.add_argument("--version", action="version", version=f"amends {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    emit = sub.add_parser(
        "emit",
        help="validate and enqueue an incident event",
        description="Emit an event from a JSON file (an object or a list of them), from stdin "
        "('-'), or built from flags: amends emit opened --incident INC-1 --title ... --severity sev1 "
        "--service payments. Exit 2 when an event is invalid; nothing is enqueued then.",
    )
    emit.add_argument(
        "type",
        nargs="?",
        choices=[t.split(".")[1] for t in EVENT_TYPES] + ["-"],
        help="build the event from flags (or '-' to read JSON from stdin)",
    )
    emit.add_argument("--file", "-f", help="JSON file with the event; '-' reads stdin")
    emit.add_argument("--incident", help="incident id, e.g. INC-2041")
    emit.add_argument("--title")
    emit.add_argument("--severity", help="sev1 .. sev4")
    emit.add_argument("--service", action="append", help="affected service (repeat for several)")
    emit.add_argument("--status")
    emit.add_argument("--summary")
    emit.add_argument("--impact")
    emit.add_argument("--plan")
    emit.add_argument("--owner")
    emit.add_argument("--source", default="cli", help="who emits the event (default: cli)")
    emit.add_argument("--event-id", help="idempotency key (default: a new UUID)")
    emit.add_argument("--occurred-at", help="ISO 8601 with a zone (default: now)")
    emit.set_defaults(func=cmd_emit)

    config = sub.add_parser("config", help="work with the configuration file")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser(
        "check",
        help="validate the configuration and every template",
        description="Print each problem with its place and exit 1 if there is one.",
    )
    check.add_argument(
        "--file", "-f", help="configuration file (default: $AMENDS_CONFIG or config/amends.yaml)"
    )
    check.set_defaults(func=cmd_config_check)

    log = sub.add_parser(
        "log",
        help="review the communications log",
        usage="amends log [filters] [--json | --promises | --rejected]\n       amends log show COMM_ID [--json]",
        description="A table of communications: time, incident, stakeholder, kind, status, recipient, "
        "subject, promised vs actual send time, attempts and last error, with times in each stakeholder's "
        "zone. 'amends log show COMM_ID' prints one message in full as sent, headers included.",
    )
    log.add_argument("target", nargs="*", metavar="show COMM_ID", help=argparse.SUPPRESS)
    log.add_argument("--incident")
    log.add_argument("--stakeholder")
    log.add_argument("--kind", choices=["acknowledgment", "update", "resolution", "feedback_request"])
    log.add_argument("--status", choices=["scheduled", "sending", "retrying", "sent", "failed", "cancelled"])
    log.add_argument("--since", help="only the last DURATION, e.g. 2h or 30m")
    log.add_argument("--json", action="store_true", help="one JSON object per line")
    log.add_argument("--rejected", action="store_true", help="show rejected events and why")
    log.add_argument("--promises", action="store_true", help="how many promised times were kept; lateness")
    log.add_argument("--limit", type=int, default=100, help="with --rejected: how many (default 100)")
    log.set_defaults(func=cmd_log)

    worker = sub.add_parser(
        "worker",
        help="run a Dramatiq worker (events, timers, delivery)",
        description="Consume the events, timers and deliver queues on AMENDS_REDIS_URL and send mail "
        "through AMENDS_SMTP_URL. Needs AMENDS_SECRET_KEY and a configuration. Run as many as you like; "
        "stop with Ctrl-C or SIGTERM (work in progress is finished first).",
    )
    worker.add_argument("--threads", type=_positive, default=8, help="worker threads (default 8)")
    worker.set_defaults(func=cmd_worker)

    sched = sub.add_parser(
        "scheduler",
        help="run the timer loop that enqueues due updates and feedback requests",
        description="Claim due timers from Redis (atomically, under a lease) and enqueue them for the "
        "workers; wake when an earlier timer is armed. Several schedulers may run at once. When the "
        "configuration file changes it asks the workers to acknowledge newly concerned stakeholders.",
    )
    sched.set_defaults(func=cmd_scheduler)

    serve = sub.add_parser(
        "serve", help="the HTTP API (not in this version)", description="Not in this version: exits 1."
    )
    serve.set_defaults(func=cmd_serve)

    preview = sub.add_parser(
        "preview",
        help="show what each stakeholder would receive for a list of timed events",
        description="Run a JSON list of events (each at its occurred_at) on a simulated clock, "
        "with no Redis and no SMTP, through the same cadence, quiet-hours and business-hours code "
        "as the live scheduler, and print every message each stakeholder would receive, in their "
        "own time zone. Exit 2 when an event is invalid.",
    )
    preview.add_argument("file", help="JSON file: one event or a list of events ('-' for stdin)")
    preview.add_argument("--json", action="store_true", help="one JSON object per message")
    preview.add_argument("--html", metavar="DIR", help="also write each message's HTML into DIR")
    preview.add_argument(
        "--config", help="configuration file (default: $AMENDS_CONFIG or config/amends.yaml)"
    )
    preview.add_argument(
        "--until",
        default="3d",
        help="how long to follow the timeline after the last event (default 3d); "
        "it stops earlier once nothing more is due",
    )
    preview.set_defaults(func=cmd_preview)

    demo = sub.add_parser(
        "demo",
        help="run everything on embedded services and show an incident's life",
        description="Start an embedded Redis, a local SMTP server, a worker and a scheduler; emit a sev1 "
        "incident concerning three stakeholders of config/demo.yaml; print the log as messages are sent "
        "(acknowledgments, updates with and without news, a change, resolution, feedback requests); exit 0. "
        "Takes about 45 seconds. Data is kept under $AMENDS_HOME/demo (default .amends/demo).",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.command in ("demo", "emit", "log", "config", "preview")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("log", "preview", "emit", "config"):
        # `amends log | head` should stop quietly, like other command-line tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return int(args.func(args))
    except SettingsError as e:
        print(f"amends: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AmendsError as e:
        print(f"amends: {e}", file=sys.stderr)
        return EXIT_FAILED
    except redis.RedisError as e:
        where = os.environ.get("AMENDS_REDIS_URL") or "the embedded Redis"
        print(f"amends: cannot reach Redis ({where}): {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

"""The ``amends`` command line: its parser, and running the chosen command.

Exit status: 0 done, 1 failed, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import signal
import sys
from typing import Any, TypeAlias

import redis

from scheduler.cli._common import EXIT_FAILED, EXIT_USAGE
from scheduler.core.events import EVENT_TYPES
from scheduler.errors import AmendsError, SettingsError

__all__ = ["main"]


# -- parser ----------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amends")
    except PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value


_Subcommands: TypeAlias = (
    "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers() returns
)


def _command(sub: _Subcommands, name: str, run: str, **kwargs: Any) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, done by ``run`` (``module:function``), imported when it runs."""
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    parser.set_defaults(run=run)
    return parser


def _add_emit(sub: _Subcommands) -> None:
    emit = _command(
        sub,
        "emit",
        "scheduler.cli.emit:cmd_emit",
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
    emit.add_argument("--workaround", help="what readers can do meanwhile")
    emit.add_argument("--prevention", help="what will stop it happening again (shown when resolved)")
    emit.add_argument("--review-by", help="date of the promised post-incident review, e.g. 2026-12-01")
    emit.add_argument(
        "--review-url", help="where the published review is (review_published; --summary says what it found)"
    )
    emit.add_argument("--source", default="cli", help="who emits the event (default: cli)")
    emit.add_argument("--event-id", help="idempotency key (default: a new UUID)")
    emit.add_argument("--occurred-at", help="ISO 8601 with a zone (default: now)")


def _add_config(sub: _Subcommands) -> None:
    config = sub.add_parser("config", help="work with the configuration file")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = _command(
        config_sub,
        "check",
        "scheduler.cli.config_cmd:cmd_config_check",
        help="validate the configuration and every template",
        description="Print each problem with its place and exit 1 if there is one.",
    )
    check.add_argument(
        "--file", "-f", help="configuration file (default: $AMENDS_CONFIG or config/amends.yaml)"
    )


def _add_log(sub: _Subcommands) -> None:
    # imported here, not at the top: the model's dataclasses take longer to import than the rest of main
    from scheduler.core.model import Kind, Status

    log = _command(
        sub,
        "log",
        "scheduler.cli.log:cmd_log",
        help="review the communications log",
        usage="amends log [filters] [--json | --wide | --promises | --rejected | --waiting]\n"
        "       amends log show COMM_ID [--json]",
        description="A table of communications, fitting the terminal (100 columns without one): time, "
        "incident, stakeholder, kind, status with the lateness, recipient and subject. --wide adds the "
        "promised and sent times in each stakeholder's zone, attempts and last error, nothing cut. "
        "'amends log show COMM_ID' prints one message in full as sent, headers included.",
    )
    log.add_argument("target", nargs="*", metavar="show COMM_ID", help=argparse.SUPPRESS)
    log.add_argument("--incident")
    log.add_argument("--stakeholder")
    log.add_argument("--kind", choices=[k.value for k in Kind])
    log.add_argument("--status", choices=[s.value for s in Status])
    log.add_argument("--since", help="only the last DURATION, e.g. 2h or 30m")
    log.add_argument("--json", action="store_true", help="one JSON object per line")
    log.add_argument(
        "--wide",
        action="store_true",
        help="every column in full (promised and sent times, attempts, last error); "
        "without it the table fits the terminal, 100 columns when there is none",
    )
    log.add_argument(
        "--rejected", action="store_true", help="show rejected events, where they came from and why"
    )
    log.add_argument(
        "--waiting",
        action="store_true",
        help="show events waiting for their incident's opened, and until when",
    )
    log.add_argument(
        "--promises",
        action="store_true",
        help="how many promised times were kept, lateness (last 7d unless --since)",
    )
    log.add_argument("--limit", type=_positive, help="rows per page, newest first (default 100)")
    log.add_argument("--cursor", help="the next page: what the previous page printed after --cursor")


def _list_command(sub: _Subcommands, name: str, run: str, removes: str, **kwargs: Any) -> None:
    """A command that lists (``--json`` for lines) or, given ``remove ITEM``, removes one."""
    listing = _command(sub, name, run, **kwargs)
    listing.add_argument("action", nargs="*", metavar=f"remove {removes}", help=argparse.SUPPRESS)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")


def _add_follow_up(sub: _Subcommands) -> None:
    follow_up = _command(
        sub,
        "follow-up",
        "scheduler.cli.follow_up:cmd_follow_up",
        help="tell a stakeholder what was done about their feedback",
        usage='amends follow-up INCIDENT STAKEHOLDER "TEXT"',
        description="Sends the stakeholder a follow-up in the incident's thread that quotes "
        "their comment and says what changed; it is logged like every message.",
    )
    follow_up.add_argument("incident", metavar="INCIDENT", help="the incident id, e.g. INC-1")
    follow_up.add_argument("stakeholder", metavar="STAKEHOLDER", help="the stakeholder id")
    follow_up.add_argument("text", metavar="TEXT", help="what was done about their feedback")


def _add_opt_outs(sub: _Subcommands) -> None:
    _list_command(
        sub,
        "opt-outs",
        "scheduler.cli.opt_outs:cmd_opt_outs",
        "ID",
        help="list stakeholders' opt-outs, or undo one",
        usage="amends opt-outs [--json]\n       amends opt-outs remove ID",
        description="Opt-outs come from unsubscribe links: from one incident's mail (id "
        "STAKEHOLDER:INCIDENT) or from all incident mail (id STAKEHOLDER). 'amends opt-outs remove ID' "
        "undoes one: that mail is sent again.",
    )


def _add_bounces(sub: _Subcommands) -> None:
    _list_command(
        sub,
        "bounces",
        "scheduler.cli.bounces:cmd_bounces",
        "ADDRESS",
        help="list addresses marked undeliverable, or lift a mark",
        usage="amends bounces [--json]\n       amends bounces remove ADDRESS",
        description="An address is marked undeliverable when the SMTP server refuses it for good "
        "(a 5xx reply to RCPT or DATA) or a bounce report posted to POST /v1/bounces says it failed; "
        "later messages to it are logged 'suppressed'. 'amends bounces remove ADDRESS' sends to it again.",
    )


def _add_worker_and_scheduler(sub: _Subcommands) -> None:
    worker = _command(
        sub,
        "worker",
        "scheduler.cli.worker:cmd_worker",
        help="run a Dramatiq worker (events, timers, delivery)",
        description="Consume the events, timers and deliver queues on AMENDS_REDIS_URL and send mail "
        "through AMENDS_SMTP_URL. Needs AMENDS_SECRET_KEY and a configuration. Run as many as you like; "
        "stop with Ctrl-C or SIGTERM (work in progress is finished first).",
    )
    worker.add_argument(
        "--processes",
        type=_positive,
        default=os.cpu_count() or 1,
        help=f"worker processes, each with its own threads and SMTP connections (default: one per core, {os.cpu_count() or 1} here)",
    )
    worker.add_argument("--threads", type=_positive, default=8, help="worker threads per process (default 8)")

    _command(
        sub,
        "scheduler",
        "scheduler.cli.worker:cmd_scheduler",
        help="run the timer loop that enqueues due updates and feedback requests",
        description="Claim due timers from Redis (atomically, under a lease) and enqueue them for the "
        "workers; wake when an earlier timer is armed. Several schedulers may run at once. When the "
        "configuration file changes it asks the workers to acknowledge newly concerned stakeholders.",
    )


def _add_serve(sub: _Subcommands) -> None:
    serve = _command(
        sub,
        "serve",
        "scheduler.cli.serve:cmd_serve",
        help="the HTTP API: events, the log, incidents, feedback links, the review page, /metrics",
        description="POST /v1/events, GET /v1/communications, /v1/incidents, the review page at /, "
        "/v1/opt-outs, /metrics and /healthz, and the feedback and unsubscribe links sent in emails. "
        "Needs AMENDS_API_TOKEN (bearer token for /v1/*, /metrics and the review page's sign-in form) "
        "and AMENDS_SECRET_KEY (verifies the links); AMENDS_READ_TOKEN, when set, reads but cannot post.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")


def _add_preview(sub: _Subcommands) -> None:
    preview = _command(
        sub,
        "preview",
        "scheduler.cli.preview_cmd:cmd_preview",
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


def _add_mailsink(sub: _Subcommands) -> None:
    mailsink = _command(
        sub,
        "mailsink",
        "scheduler.cli.mailsink:cmd_mailsink",
        help="a local SMTP server that keeps what it receives in a Maildir, for trying amends",
        description="Listen for SMTP (no TLS, no authentication) and write every message into DIR, "
        "a Maildir it creates; print one line per message. Point amends at it with "
        "AMENDS_SMTP_URL='smtp://127.0.0.1:1025?tls=none'. Stop with Ctrl-C.",
    )
    mailsink.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    mailsink.add_argument("--port", type=_port, default=1025, help="port (default 1025)")
    mailsink.add_argument("--maildir", required=True, metavar="DIR", help="the Maildir to keep messages in")


def _add_demo(sub: _Subcommands) -> None:
    demo = _command(
        sub,
        "demo",
        "scheduler.cli.demo:cmd_demo",
        help="run everything on embedded services and show an incident's life",
        description="Start an embedded Redis, a local SMTP server, a worker and a scheduler; emit a sev1 "
        "incident concerning three stakeholders of config/demo.yaml; print the log as messages are sent "
        "(acknowledgments, updates with and without news, a change, resolution, feedback requests); exit 0. "
        "Takes about 40 seconds. Data is kept under $AMENDS_HOME/demo (default .amends/demo). "
        "The review page of the HTTP API is served on 127.0.0.1 while it runs.",
    )
    demo.add_argument("--keep", action="store_true", help="keep the review page up afterwards, until Ctrl-C")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amends",
        description="Keep every stakeholder of an incident informed: acknowledgment, updates on "
        "their cadence, resolution, feedback request.",
        epilog="Environment: AMENDS_REDIS_URL, AMENDS_SMTP_URL, AMENDS_CONFIG, AMENDS_TEMPLATES, "
        "AMENDS_SECRET_KEY, AMENDS_API_TOKEN, AMENDS_READ_TOKEN, AMENDS_PAGERDUTY_SECRET, "
        "AMENDS_WEBHOOK_SECRET, AMENDS_RETRY_WINDOW, AMENDS_SMTP_RATE, AMENDS_SMTP_CONNECTIONS, "
        "AMENDS_SLACK_RATE, AMENDS_TEAMS_RATE, AMENDS_WEBHOOK_RATE, AMENDS_DKIM_KEY, AMENDS_DKIM_SELECTOR, "
        "AMENDS_HOME (see README.md). "
        "Exit status: 0 done, 1 failed, 2 bad input or usage.",
    )
    parser.add_argument("--version", action="version", version=f"amends {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_emit(sub)
    _add_config(sub)
    _add_log(sub)
    _add_opt_outs(sub)
    _add_bounces(sub)
    _add_follow_up(sub)
    _add_worker_and_scheduler(sub)
    _add_serve(sub)
    _add_preview(sub)
    _add_mailsink(sub)
    _add_demo(sub)
    return parser


def _tolerant_output() -> None:
    """Whatever text is stored, printing it never raises: what cannot be encoded is escaped."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _run(spec: str, args: argparse.Namespace) -> int:
    """Run the command's function; its module (and what it needs) is imported only now."""
    module, function = spec.split(":")
    return int(getattr(importlib.import_module(module), function)(args))


def main(argv: list[str] | None = None) -> int:
    _tolerant_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.command in ("demo", "emit", "log", "config", "preview", "opt-outs", "bounces")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("log", "preview", "emit", "config", "opt-outs", "bounces"):
        # `amends log | head` should stop quietly, like other command-line tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return _run(args.run, args)
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

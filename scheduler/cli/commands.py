"""What each ``amends`` command does; :mod:`scheduler.cli.main` parses the command line."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import timedelta
from pathlib import Path

from scheduler.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    config_path,
    load_settings,
    redis_warning,
    require_own_config,
    stop_on_signals,
)
from scheduler.cli.config_cmd import cmd_config_check
from scheduler.cli.emit import cmd_emit
from scheduler.cli.event_input import load_events
from scheduler.cli.log import cmd_log
from scheduler.core._validation import bounded_duration_s
from scheduler.core.text import scrub

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "cmd_config_check",
    "cmd_demo",
    "cmd_emit",
    "cmd_log",
    "cmd_mailsink",
    "cmd_opt_outs",
    "cmd_preview",
    "cmd_scheduler",
    "cmd_serve",
    "cmd_worker",
]

MAX_PREVIEW_S = 366 * 86_400
"""How far past the last event a preview may follow the timeline (--until)."""


# -- opt-outs --------------------------------------------------------------------------


def cmd_opt_outs(args: argparse.Namespace) -> int:
    import redis

    from scheduler.cli.logview import format_table
    from scheduler.storage.redis_store import RedisStore

    store = RedisStore(redis.Redis.from_url(load_settings().resolved_redis_url()))
    if args.action:
        if args.action[0] != "remove" or len(args.action) != 2:
            print("amends opt-outs: use 'amends opt-outs' or 'amends opt-outs remove ID'", file=sys.stderr)
            return EXIT_USAGE
        opt_out = args.action[1]
        if not store.remove_opt_out(opt_out):
            print(f"amends opt-outs: no opt-out {opt_out!r}; 'amends opt-outs' lists them", file=sys.stderr)
            return EXIT_FAILED
        print(f"removed {opt_out}: that mail will be sent again")
        return EXIT_OK
    found = store.opt_outs()
    if args.json:
        for opt in found:
            print(scrub(json.dumps(opt.as_json(), ensure_ascii=False)))
    elif found:
        rows = (
            (o.id, o.stakeholder_id, o.incident_id or "all incident mail", o.as_json()["since"])
            for o in found
        )
        print(scrub(format_table(rows, ("id", "stakeholder", "stops", "since"))))
    else:
        print("no opt-outs")
    return EXIT_OK


# -- processes -------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from scheduler.service.processes import run_worker_processes, start_worker

    settings = load_settings()
    require_own_config(settings, "worker")
    settings.require_worker()
    redis_warning(settings, "worker")
    if args.processes > 1:
        return run_worker_processes(args.processes, args.threads, stop_on_signals())
    worker = start_worker(settings, threads=args.threads)
    print(
        f"amends worker: consuming from {worker.broker_url_redacted} with {args.threads} threads; "
        f"sending through {settings.smtp.redacted() if settings.smtp else '-'}",
        flush=True,
    )
    stop_on_signals().wait()
    worker.stop()
    return EXIT_OK


def cmd_scheduler(args: argparse.Namespace) -> int:
    from scheduler.service.processes import start_scheduler

    settings = load_settings()
    require_own_config(settings, "scheduler")
    redis_warning(settings, "scheduler")
    stop = stop_on_signals()
    loop = start_scheduler(settings, stop)
    print("amends scheduler: waiting for due timers", flush=True)
    stop.wait()
    loop.join(timeout=10)
    if loop.failure is not None:
        # A live process with a dead loop would send nothing and say nothing: exit, so
        # that a supervisor starts a fresh one.
        print(f"amends scheduler: the loop stopped: {loop.failure!r}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_preview(args: argparse.Namespace) -> int:
    from scheduler.cli.preview import simulate, timeline_json, timeline_text, write_html
    from scheduler.core.config import load_config
    from scheduler.mail.preflight import thin_event_warnings
    from scheduler.mail.render import TemplateSet

    settings = load_settings(needs_config=True)
    try:
        after_last = timedelta(seconds=bounded_duration_s(args.until, MAX_PREVIEW_S))
    except (ValueError, OverflowError) as e:
        print(f"amends preview: --until: {e}", file=sys.stderr)
        return EXIT_USAGE
    events = load_events("preview", args.file)
    if events is None:
        return EXIT_USAGE
    config = load_config(config_path(settings, args.config))
    for warning in thin_event_warnings(events):
        print(f"amends preview: warning: {warning}", file=sys.stderr)
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
        try:
            index_page = write_html(timeline.messages, Path(args.html))
        except OSError as e:
            print(f"amends preview: cannot write HTML into {args.html}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"HTML of {len(timeline.messages)} messages: {index_page}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return EXIT_OK


def cmd_mailsink(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Run a local SMTP server into a Maildir until Ctrl-C (or ``stop``)."""
    from email import message_from_bytes

    from scheduler.dev.mailsink import MailSink, ReceivedMail

    def announce(mail: ReceivedMail) -> None:
        subject = str(message_from_bytes(mail.raw).get("Subject", "")).replace("\n", " ")
        print(f"received for {', '.join(mail.rcpt_tos)}: {scrub(subject)}", flush=True)

    maildir = Path(args.maildir)
    try:
        sink = MailSink(args.host, args.port, maildir, remember=False, on_receive=announce).start()
    except OSError as e:
        print(
            f"amends mailsink: cannot use {args.maildir} or listen on {args.host}:{args.port}: {e}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(
        f"amends mailsink: listening on {args.host}:{args.port}, keeping mail in {maildir.resolve()} (a Maildir); "
        f"use AMENDS_SMTP_URL='smtp://{args.host}:{args.port}?tls=none'",
        flush=True,
    )
    (stop or stop_on_signals()).wait()
    sink.stop()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from scheduler.dev.demo import run_demo

    return run_demo(keep=args.keep)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from scheduler.web.app import create_app, server_config

    app = create_app(load_settings())  # refuses to start without its settings
    print(
        f"amends serve: http://{args.host}:{args.port}/ (the review page; sign in with a token)", flush=True
    )
    try:
        uvicorn.Server(server_config(app, args.host, args.port)).run()
    except SystemExit as e:  # uvicorn exits when it cannot bind; its log line says why
        if e.code not in (0, None):
            print(f"amends serve: could not listen on {args.host}:{args.port}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK

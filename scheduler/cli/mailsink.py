"""``amends mailsink``: a local SMTP server (:mod:`scheduler.dev.mailsink`) filing mail in a Maildir."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, refuse, stop_on_signals
from scheduler.core.text import scrub

__all__ = ["cmd_mailsink"]


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
        return refuse(
            "mailsink", f"cannot use {args.maildir} or listen on {args.host}:{args.port}: {e}", EXIT_FAILED
        )
    print(
        f"amends mailsink: listening on {args.host}:{args.port}, keeping mail in {maildir.resolve()} (a Maildir); "
        f"use AMENDS_SMTP_URL='smtp://{args.host}:{args.port}?tls=none'",
        flush=True,
    )
    (stop or stop_on_signals()).wait()
    sink.stop()
    return EXIT_OK

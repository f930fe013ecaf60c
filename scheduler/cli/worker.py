"""``amends worker`` and ``amends scheduler``: the long-running processes that send and that wake timers."""

from __future__ import annotations

import argparse
import sys

from scheduler.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    load_settings,
    redis_warning,
    require_own_config,
    stop_on_signals,
)

__all__ = ["cmd_scheduler", "cmd_worker"]


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

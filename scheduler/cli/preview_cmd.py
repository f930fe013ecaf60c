"""``amends preview``: read events and configuration, run :mod:`scheduler.cli.preview`, print the timeline."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from scheduler.cli._common import EXIT_OK, EXIT_USAGE, config_path, load_settings, refuse
from scheduler.cli.event_input import load_events
from scheduler.core._validation import bounded_duration_s

__all__ = ["MAX_PREVIEW_S", "cmd_preview"]

MAX_PREVIEW_S = 366 * 86_400
"""How far past the last event a preview may follow the timeline (--until)."""


def cmd_preview(args: argparse.Namespace) -> int:
    # the simulation imports the engine, the stores and the templates: only when previewing
    from scheduler.cli.preview import simulate, timeline_json, timeline_text, write_html
    from scheduler.core.config import load_config
    from scheduler.mail.preflight import thin_event_warnings
    from scheduler.mail.render import TemplateSet

    settings = load_settings(needs_config=True)
    try:
        after_last = timedelta(seconds=bounded_duration_s(args.until, MAX_PREVIEW_S))
    except (ValueError, OverflowError) as e:
        return refuse("preview", f"--until: {e}")
    events = load_events("preview", args.file)
    if events is None:
        return EXIT_USAGE
    config = load_config(config_path(settings, args.config))
    for warning in thin_event_warnings(events):
        print(f"amends preview: warning: {warning}", file=sys.stderr)
    try:
        timeline = simulate(events, config, TemplateSet(settings.templates_dir), after_last)
    except ValueError as e:
        return refuse("preview", str(e))
    if args.json:
        for line in timeline_json(timeline.messages):
            print(line)
    else:
        print(timeline_text(timeline, config))
    if args.html:
        try:
            index_page = write_html(timeline.messages, Path(args.html))
        except OSError as e:
            return refuse("preview", f"cannot write HTML into {args.html}: {e.strerror}")
        print(
            f"HTML of {len(timeline.messages)} messages: {index_page}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return EXIT_OK

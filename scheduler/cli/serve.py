"""``amends serve``: the HTTP API and the review page (:mod:`scheduler.web.app`) under uvicorn."""

from __future__ import annotations

import argparse
import sys

from scheduler.cli._common import EXIT_FAILED, EXIT_OK, load_settings

__all__ = ["cmd_serve"]


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

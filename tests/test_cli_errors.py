"""Command-line failure paths: each refuses with a clear message and the right exit status."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from scheduler.cli.main import main
from tests.conftest import event


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with no config/amends.yaml and no AMENDS_* settings."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "AMENDS_CONFIG",
        "AMENDS_REDIS_URL",
        "AMENDS_SMTP_URL",
        "AMENDS_SECRET_KEY",
        "AMENDS_TEMPLATES",
    ):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_long_running_processes_refuse_the_shipped_example(
    elsewhere: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a configuration of the user's, worker and scheduler exit 2 and say where the example is."""
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert f"{command} needs a configuration: set AMENDS_CONFIG" in err and "amends.yaml" in err


def test_config_check_says_it_uses_the_shipped_example(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`config check` with no configuration checks the shipped example and says so."""
    assert main(["config", "check"]) == 0
    captured = capsys.readouterr()
    assert "using the shipped example" in captured.err and "OK (" in captured.out


def test_emit_refuses_flags_and_a_file_together(capsys: pytest.CaptureFixture[str]) -> None:
    """`amends emit opened --file x` is ambiguous: exit 2, nothing enqueued."""
    assert main(["emit", "opened", "--file", "x.json", "--incident", "INC-1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_emit_refuses_an_empty_list(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty list on stdin is refused, not silently accepted."""
    monkeypatch.setattr("sys.stdin", io.StringIO("[]"))
    assert main(["emit", "-"]) == 2
    assert "stdin holds no events" in capsys.readouterr().err


def test_a_list_names_the_index_of_each_bad_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Problems in a list of events are named events[i].field, and none of the events is enqueued."""
    path = tmp_path / "events.json"
    bad = event(incident_id="INC-2")
    bad["incident"]["severity"] = "sev9"
    path.write_text(json.dumps([event(), bad]))
    assert main(["emit", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "events[1].incident.severity" in err and "events[0]" not in err


def test_unreachable_redis_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With AMENDS_REDIS_URL pointing at nothing, `amends log` exits 1 naming the URL, no traceback."""
    monkeypatch.setenv("AMENDS_REDIS_URL", "redis://127.0.0.1:9/0")
    assert main(["log"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis (redis://127.0.0.1:9/0)" in err and "Traceback" not in err


def test_log_show_takes_no_filters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends log show ID --since 2h` is refused rather than silently ignoring the filter."""
    monkeypatch.setenv("AMENDS_REDIS_URL", "redis://127.0.0.1:9/0")
    assert main(["log", "show", "INC-1:a:update:1", "--since", "2h"]) == 2
    assert "takes a communication id and --json only" in capsys.readouterr().err


@pytest.mark.parametrize(("port", "message"), [("99999", "1 to 65535"), ("abc", "not a whole number")])
def test_serve_checks_its_port(port: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A port out of range or not a number is refused by the parser with exit 2."""
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--port", port])
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_preview_refuses_a_folder_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--html into a path that is a file exits 2 with one line naming it, not a traceback."""
    events = tmp_path / "events.json"
    events.write_text(json.dumps([event()]))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["preview", str(events), "--html", str(blocker)]) == 2
    assert f"cannot write HTML into {blocker}" in capsys.readouterr().err

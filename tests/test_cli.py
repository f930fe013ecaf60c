"""The command line against a running amends: emit, then review the log."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from scheduler.cli.main import main
from tests.conftest import App, event

pytestmark = pytest.mark.real


@pytest.fixture
def cli_env(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("AMENDS_REDIS_URL", app.settings.redis_url or "")
    monkeypatch.setenv("AMENDS_CONFIG", str(app.config_path))
    return app


def test_emit_from_flags_file_and_stdin(
    cli_env: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends emit opened ...`, `--file` and `-` each enqueue an event the worker acts on."""
    assert (
        main(
            [
                "emit",
                "opened",
                "--incident",
                "INC-7",
                "--title",
                "Search is slow",
                "--severity",
                "sev2",
                "--service",
                "search",
            ]
        )
        == 0
    )
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event(incident_id="INC-8")))
    assert main(["emit", "--file", str(path)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(event(incident_id="INC-9"))))
    assert main(["emit", "-"]) == 0
    assert "enqueued" in capsys.readouterr().out
    cli_env.drain()
    assert [m.rcpt_tos[0] for m in cli_env.sink.received].count("search@acme.example") == 1
    assert len(cli_env.sink.received) == 1 + 3 + 3


def test_log_table_filters_and_json(cli_env: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`amends log` prints a row per message, filters narrow it, and --json gives one object per line."""
    from scheduler import emit

    emit(event(), broker=cli_env.broker)
    emit(event(incident_id="INC-2", services=["search"], severity="sev3"), broker=cli_env.broker)
    cli_env.drain()
    capsys.readouterr()
    assert main(["log", "--wide"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["time", "incident", "stakeholder", "kind"]
    assert len(table) == 1 + 4
    assert any("15:03:05 CET" in line and "acme-finance" in line for line in table)
    assert main(["log", "--stakeholder", "globex", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["stakeholder_id"] for r in rows] == ["globex"]
    assert rows[0]["status"] == "sent" and rows[0]["attempts"] == 1 and rows[0]["sent_at"].endswith("Z")
    assert main(["log", "--incident", "INC-2", "--kind", "acknowledgment", "--status", "sent", "--json"]) == 0
    assert [json.loads(x)["recipient"] for x in capsys.readouterr().out.splitlines()] == [
        "search@acme.example"
    ]
    assert main(["log", "--since", "2h", "--status", "failed"]) == 0
    assert "no communications match" in capsys.readouterr().out


def test_log_pages_newest_first_with_a_cursor(cli_env: App, capsys: pytest.CaptureFixture[str]) -> None:
    """--limit rows a page, newest first; stderr names the command for the next page, which
    repeats the filters; the last page names none."""
    from scheduler import emit

    emit(event(), broker=cli_env.broker)
    cli_env.drain()
    capsys.readouterr()
    seen: list[str] = []
    args = ["log", "--json", "--limit", "2"]
    for _ in range(3):
        assert main(args) == 0
        out, err = capsys.readouterr()
        seen += [json.loads(line)["stakeholder_id"] for line in out.splitlines()]
        if not err:
            break
        assert err.startswith("older: amends log --limit 2 --json --cursor ")
        args = ["log", *err.split()[3:]]
    assert sorted(seen) == ["acme-finance", "globex", "payments-eng"] and not err
    assert main(["log", "--cursor", "nonsense"]) == 2
    assert "--cursor" in capsys.readouterr().err


def test_log_show_prints_the_message_as_sent(cli_env: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`amends log show COMM_ID` prints the full message with its headers."""
    from scheduler import emit

    emit(event(), broker=cli_env.broker)
    cli_env.drain()
    capsys.readouterr()
    assert main(["log", "show", "INC-1:acme-finance:acknowledgment:1"]) == 0
    shown = capsys.readouterr().out
    assert "Subject: We are working on it: Card payments failing" in shown
    assert "To: ACME Finance <finance@acme.example>" in shown
    assert "Content-Type: multipart/alternative" in shown
    assert main(["log", "show", "INC-1:nobody:acknowledgment:1"]) == 1


def test_log_rejected_lists_reasons(cli_env: App, capsys: pytest.CaptureFixture[str]) -> None:
    """`amends log --rejected` shows each rejected event with its field and reason."""
    from scheduler.service.queues import EVENTS_QUEUE, enqueue

    bad = event(event_id="bad-1")
    bad["occurred_at"] = "2026-11-26T14:03:00"
    enqueue(cli_env.broker, EVENTS_QUEUE, "handle_event", bad)
    cli_env.drain()
    capsys.readouterr()
    assert main(["log", "--rejected"]) == 0
    out = capsys.readouterr().out
    assert "bad-1" in out and "occurred_at: '2026-11-26T14:03:00' has no time zone" in out


def test_log_fits_100_columns_and_wide_shows_everything(
    cli_env: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`amends log` fits 100 columns (or COLUMNS) with the subject cut to what is left; --wide shows it whole."""
    from scheduler import emit

    title = "Card payments failing for some customers in every region we serve, since the certificate expired"
    emit(event(title=title), broker=cli_env.broker)
    cli_env.drain()
    capsys.readouterr()
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["log"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["time", "UTC", "incident", "stakeholder", "kind", "status", "to", "subject"]
    assert len(table) == 1 + 3 and max(len(line) for line in table) <= 100
    finance = next(line for line in table if "acme-finance" in line)
    assert " ack " in finance and "sent +" in finance and "We are working on it: Card" in finance
    assert finance.endswith("…") and max(len(line) for line in table) >= 95
    monkeypatch.setenv("COLUMNS", "140")
    assert main(["log"]) == 0
    assert 120 < max(len(line) for line in capsys.readouterr().out.splitlines()) <= 140
    assert main(["log", "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert any(title in line and "attempts" not in line for line in wide) and "last error" in wide[0]

"""Odd input gets a 4xx with a reason, or exit 2 with one line; never a 500 or a traceback."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.cli.main import main
from scheduler.service.settings import Settings
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from scheduler.web.app import create_app, server_config
from tests.conftest import event

TOKEN = "odd-input-token"
T0 = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)


@pytest.fixture
def api(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="s")
    with TestClient(create_app(settings, clock=lambda: T0), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield client


def _post_event(api: TestClient, body: bytes) -> object:
    return api.post("/v1/events", content=body, headers={"Content-Type": "application/json"})


# -- HTTP ---------------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("path", ["/feedback/x/y", "/unsubscribe/x", "/signin"])
@pytest.mark.parametrize(
    "body", [b"&&&&&&&&&&&", b"&" * 500, b"sig=%ff%fe&comment=%", b"\xff\xfe\x00", b"=" * 70_000]
)
def test_malformed_forms_get_a_4xx(
    api: TestClient, redis_client: redis.Redis, path: str, body: bytes
) -> None:
    """Forms that cannot be read, are too large or carry no valid signature are 4xx, and change nothing."""
    response = api.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert 400 <= response.status_code < 500
    assert redis_client.keys(keys.feedback("*")) == [] and redis_client.hlen(keys.UNSUBSCRIBED) == 0


@pytest.mark.real
@pytest.mark.parametrize(
    ("case", "body", "reason"),
    [
        ("1,000 levels of arrays", b"[" * 1000 + b"]" * 1000, "nested too deeply"),
        ("an event nesting 500 levels", None, "nested more than 16 levels deep"),
        ("a 1 MB body", b'{"schema": 1, "x": "' + b"a" * 1_000_000 + b'"}', "larger than"),
        ("UTF-16", json.dumps(event()).encode("utf-16"), "UTF-16"),
        ("binary", bytes(range(256)), "not UTF-8"),
        ("a 5,000-digit number", b'{"schema": 1' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_events_that_cannot_be_read_get_422_and_are_kept(
    api: TestClient, redis_client: redis.Redis, case: str, body: bytes | None, reason: str
) -> None:
    """Deep, huge, wrongly encoded or unparsable bodies get 422 with the reason and are kept in --rejected."""
    if body is None:
        deep = event()
        deep["incident"]["services"] = json.loads("[" * 500 + "]" * 500)
        body = json.dumps(deep).encode()
    response = _post_event(api, body)
    assert response.status_code == 422, case
    assert reason in json.dumps(response.json()), case
    (kept,) = RedisStore(redis_client).rejected()
    assert kept["via"] == "api" and reason in json.dumps(kept["errors"])


@pytest.mark.real
@pytest.mark.parametrize(
    "query",
    [
        "since=3000000d",
        "since=99999999999999999999999d",
        "since=-1d",
        "limit=0",
        "limit=10001",
        "limit=99999999999999999999999",
        "limit=ten",
        "kind=%ff",
    ],
)
def test_out_of_range_filters_and_paging_get_422(api: TestClient, query: str) -> None:
    """Durations and page sizes out of range are 422 naming the parameter."""
    response = api.get(f"/v1/communications?{query}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == query.split("=")[0]


def test_the_access_log_hides_secrets_however_the_name_is_encoded(api: TestClient) -> None:
    """`?%74oken=…`, `?T%4fKEN=…`, `?%2573ig=…` and `;sig=…` are all redacted in uvicorn's access line."""
    server_config(api.app, "127.0.0.1", 0)  # type: ignore[arg-type]
    target = "/?%74oken=s3cret-1&T%4fKEN=s3cret-2&x=1&%2573ig=s3cret-3;sig=s3cret-4&to+ken=ok"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", target, "1.1", 200), None,
    )  # fmt: skip
    for log_filter in logging.getLogger("uvicorn.access").filters:
        assert not isinstance(log_filter, logging.Filter) or log_filter.filter(record)
    line = record.getMessage()
    assert "s3cret" not in line and "x=1" in line and line.count("[redacted]") == 4


# -- the command line -----------------------------------------------------------------------


def _one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (bytes(range(256)) * 4, "not UTF-8 text"),
        (json.dumps(event()).encode("utf-16"), "UTF-16"),
        (json.dumps(event()).encode("utf-32"), "UTF-16 or UTF-32"),
        (b"[" * 2000, "nested too deeply"),
        (b'{"a":' * 2000, "nested too deeply"),
        (b"[" + b"9" * 6000 + b"]", "is not JSON"),
    ],
)
def test_emit_refuses_unreadable_files_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    """Binary, UTF-16/32, deeply nested or unparsable files exit 2 with one line saying why."""
    path = tmp_path / "event.json"
    path.write_bytes(content)
    assert main(["emit", "--file", str(path)]) == 2
    assert says in _one_line(capsys.readouterr().err)


def test_emit_refuses_deep_json_on_stdin_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[` 2,000 times on stdin: exit 2, one line."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"[" * 2000)))
    assert main(["emit", "-"]) == 2
    assert _one_line(capsys.readouterr().err) == "amends emit: stdin is not JSON: nested too deeply\n"


def test_emit_names_a_deep_value_inside_an_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An event that parses but nests 900 levels is refused on its field, not by a crash while re-encoding it."""
    deep = event()
    deep["incident"]["services"] = json.loads("[" * 900 + "]" * 900)
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(deep))
    assert main(["emit", "--file", str(path)]) == 2
    assert "incident.services" in capsys.readouterr().err


@pytest.mark.real
@pytest.mark.parametrize("since", ["3000000d", "99999999999999999999999d"])
def test_log_refuses_an_endless_since_in_one_line(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    """`amends log --since 3000000d` exits 2 with one line."""
    monkeypatch.setenv("AMENDS_REDIS_URL", redis_url)
    assert main(["log", "--since", since]) == 2
    assert "--since" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("until", ["99999999999d", "3000000d", "400d"])
def test_preview_refuses_an_endless_until_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], until: str
) -> None:
    """`amends preview --until 99999999999d` exits 2 with one line naming the limit."""
    path = tmp_path / "events.json"
    path.write_text(json.dumps([event()]))
    assert main(["preview", str(path), "--until", until]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("amends preview: --until:") and "at most 366d" in err

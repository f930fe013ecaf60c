"""Links do only what the reader meant: a GET never records; opt-outs are scoped, named and undoable;
the read-only token reads and cannot post."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from scheduler.cli.main import main
from scheduler.mail.signing import feedback_links, sign, unsubscribe_link
from scheduler.service.settings import Settings
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from scheduler.web.app import create_app
from tests.conftest import BASE_CONFIG, event
from tests.helpers import sign_in, stored_incident

pytestmark = pytest.mark.real

TOKEN = "write-token"
READ = "read-token"
SECRET = "link-secret"
T0 = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)


@pytest.fixture
def api(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    """The API with both tokens and the test configuration (for stakeholders' names); no token sent."""
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    settings = Settings(
        redis_url=redis_url, api_token=TOKEN, read_token=READ, secret_key=SECRET, config_path=config
    )
    with TestClient(create_app(settings, clock=lambda: T0), base_url="https://testserver") as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- feedback ---------------------------------------------------------------------------


def test_opening_every_rating_link_records_nothing(api: TestClient, redis_client: redis.Redis) -> None:
    """A mail scanner that opens all five rating links leaves no rating behind."""
    stored_incident(redis_client, "INC-1", ["globex"])
    for link in feedback_links("", SECRET, "INC-1", "globex").values():
        response = api.get(link)
        assert response.status_code == 200 and 'method="post"' in response.text
    assert redis_client.keys(keys.feedback("*")) == []


def test_the_rating_is_recorded_by_the_forms_post(api: TestClient, redis_client: redis.Redis) -> None:
    """The form's POST records the rating alone (no comment needed); an out-of-range one gets 422."""
    stored_incident(redis_client, "INC-1", ["globex"])
    action = "/feedback/INC-1/globex"
    sig = sign(SECRET, "feedback-comment", "INC-1", "globex")
    assert api.post(action, data={"sig": sig, "rating": "7"}).status_code == 422
    assert api.post(action, data={"sig": sig}).status_code == 422
    sent = api.post(action, data={"sig": sig, "rating": "5"})
    assert sent.status_code == 200 and "You rated our messages 5 of 5." in sent.text
    assert RedisStore(redis_client).feedback_for("INC-1")["globex"].rating == 5


# -- the read-only token ------------------------------------------------------------------


def test_the_read_token_reads_the_log_and_the_review_page_but_cannot_post(api: TestClient) -> None:
    """AMENDS_READ_TOKEN opens every read endpoint and the review page; posting events or undoing opt-outs is 401."""
    for path in ("/v1/communications", "/v1/incidents", "/v1/opt-outs", "/metrics"):
        assert api.get(path, headers=_bearer(READ)).status_code == 200, path
    assert api.post("/v1/events", json=event(), headers=_bearer(READ)).status_code == 401
    assert api.delete("/v1/opt-outs/globex", headers=_bearer(READ)).status_code == 401
    assert api.post("/v1/events", json=event(), headers=_bearer(TOKEN)).status_code == 202
    signed_in = sign_in(api, READ)
    assert signed_in.status_code == 303 and READ not in str(signed_in.headers.get_list("set-cookie"))
    assert api.get("/").status_code == 200
    assert api.post("/v1/events", json=event()).status_code == 401  # the cookie is for the page only


# -- unsubscribe and opt-outs -------------------------------------------------------------


def test_the_unsubscribe_page_names_the_stakeholder_and_offers_this_incident_or_all(
    api: TestClient, redis_client: redis.Redis
) -> None:
    """The page shows the stakeholder's configured name (not its id) and both choices; it records nothing."""
    stored_incident(redis_client, "INC-1", ["globex"])
    page = api.get(unsubscribe_link("", SECRET, "globex", "INC-1"))
    assert page.status_code == 200
    assert "Which messages should Globex Support stop receiving?" in page.text
    assert "Only the messages about INC-1" in page.text and "All incident messages" in page.text
    assert 'name="scope" value="incident"' in page.text and 'name="scope" value="all"' in page.text
    assert api.get("/v1/opt-outs", headers=_bearer(TOKEN)).json() == {"opt_outs": []}


def test_an_opt_out_from_one_incident_stops_only_that_incidents_mail_and_can_be_undone(
    api: TestClient, redis_client: redis.Redis
) -> None:
    """Choosing "this incident" opts out of INC-1 only; the confirmation's undo button takes it back."""
    stored_incident(redis_client, "INC-1", ["globex"])
    link = unsubscribe_link("", SECRET, "globex", "INC-1")
    done = api.post(link, data={"scope": "incident"})
    assert done.status_code == 200 and "Globex Support will receive no more messages about INC-1" in done.text
    assert RedisStore(redis_client).is_opted_out("globex", incident_id="INC-1")
    assert not RedisStore(redis_client).is_opted_out("globex", incident_id="INC-2")
    assert not RedisStore(redis_client).is_opted_out("globex")
    undone = api.post(link, data={"scope": "incident", "undo": "1"})
    assert undone.status_code == 200 and "will receive messages about INC-1 again" in undone.text
    assert not RedisStore(redis_client).is_opted_out("globex", incident_id="INC-1")


def test_an_opt_out_from_all_mail_covers_every_incident(api: TestClient, redis_client: redis.Redis) -> None:
    """Choosing "all incident mail" opts out of every incident; the old link form (no incident) does the same."""
    api.post(unsubscribe_link("", SECRET, "globex", "INC-1"), data={"scope": "all"})
    assert RedisStore(redis_client).is_opted_out("globex")
    assert RedisStore(redis_client).is_opted_out("globex", incident_id="INC-9")
    assert api.post(unsubscribe_link("", SECRET, "acme-finance")).status_code == 200
    assert RedisStore(redis_client).is_opted_out("acme-finance")


def test_a_link_moved_to_another_incident_gets_403(api: TestClient, redis_client: redis.Redis) -> None:
    """The signature covers the incident: changing it opts out of nothing."""
    moved = unsubscribe_link("", SECRET, "globex", "INC-1").replace("incident=INC-1", "incident=INC-2")
    assert api.get(moved).status_code == 403
    assert api.post(moved, data={"scope": "incident"}).status_code == 403
    assert redis_client.hlen(keys.UNSUBSCRIBED) == 0


def test_opt_outs_are_listed_and_undone_over_the_api(api: TestClient, redis_client: redis.Redis) -> None:
    """GET /v1/opt-outs lists them with their ids; DELETE /v1/opt-outs/ID undoes one (404 when there is none)."""
    RedisStore(redis_client).record_opt_out("globex", T0, "INC-1")
    RedisStore(redis_client).record_opt_out("acme-finance", T0)
    listed = api.get("/v1/opt-outs", headers=_bearer(READ)).json()["opt_outs"]
    assert [(o["id"], o["scope"], o["since"]) for o in listed] == [
        ("acme-finance", "all", "2026-11-26T14:03:05Z"),
        ("globex:INC-1", "incident", "2026-11-26T14:03:05Z"),
    ]
    assert api.delete("/v1/opt-outs/globex:INC-1", headers=_bearer(TOKEN)).json() == {
        "removed": "globex:INC-1"
    }
    assert api.delete("/v1/opt-outs/globex:INC-1", headers=_bearer(TOKEN)).status_code == 404
    assert not RedisStore(redis_client).is_opted_out("globex", incident_id="INC-1")


def test_opt_outs_are_listed_and_undone_from_the_command_line(
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`amends opt-outs` lists them (table or --json); `amends opt-outs remove ID` undoes one, exit 1 for an unknown id."""
    monkeypatch.setenv("AMENDS_REDIS_URL", redis_url)
    RedisStore(redis_client).record_opt_out("globex", T0, "INC-1")
    assert main(["opt-outs"]) == 0
    table = capsys.readouterr().out
    assert "globex:INC-1" in table and "INC-1" in table
    assert main(["opt-outs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "globex:INC-1"
    assert main(["opt-outs", "remove", "globex:INC-1"]) == 0
    assert not RedisStore(redis_client).is_opted_out("globex", incident_id="INC-1")
    assert main(["opt-outs", "remove", "globex:INC-1"]) == 1
    assert "no opt-out 'globex:INC-1'" in capsys.readouterr().err
    assert main(["opt-outs"]) == 0 and capsys.readouterr().out == "no opt-outs\n"

"""Alertmanager, Grafana and PagerDuty webhooks as incident events: the mapping on the
documented payloads, the routes' authentication and rejects, and PagerDuty end to end."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from scheduler.core.config import Integrations, parse_config
from scheduler.core.events import parse_event
from scheduler.core.integrations import from_alertmanager, from_grafana, from_pagerduty, group_incident_id
from scheduler.errors import EventError
from scheduler.mail.signing import pagerduty_signature_valid
from scheduler.service.settings import Settings
from scheduler.storage.redis_store import RedisStore
from scheduler.web.app import create_app
from tests.conftest import BASE_CONFIG, App

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC)
TOKEN = "test-api-token"
SIGNATURES = json.loads((FIXTURES / "pagerduty_signatures.json").read_text())
PD_SECRET = SIGNATURES["secret"]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def alert_group(status: str = "firing", **labels: str) -> dict[str, Any]:
    """An Alertmanager version 4 notification of one alert."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="CardPayments"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "amends",
        "groupLabels": {"alertname": "CardPayments"},
        "commonLabels": {"alertname": "CardPayments", **labels},
        "commonAnnotations": {
            "summary": "Card payments failing",
            "description": "5xx above 5% for 5 minutes",
        },
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "CardPayments", **labels},
                "annotations": {
                    "summary": "Card payments failing",
                    "description": "5xx above 5% for 5 minutes",
                },
                "startsAt": "2026-11-26T14:00:00Z",
                "endsAt": "2026-11-26T14:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": "1c5c5c2bd8d2d1a4",
            }
        ],
    }


# -- the mapping ---------------------------------------------------------------------------


def test_a_firing_alert_group_opens_an_incident_with_its_title_summary_services_and_severity() -> None:
    """summary, description, the service label and the severity label become the incident's fields."""
    [event] = from_alertmanager(
        alert_group(severity="critical", service="payments"), Integrations(), NOW
    ).events
    assert parse_event(event).type == "incident.opened"
    assert event["incident_id"] == group_incident_id("am-", '{}:{alertname="CardPayments"}')
    assert event["incident_id"].startswith("am-") and len(event["incident_id"]) == 15
    assert event["incident"] == {
        "title": "Card payments failing",
        "summary": "5xx above 5% for 5 minutes",
        "services": ["payments"],
        "severity": "sev1",
        "status": "investigating",
    }
    assert event["occurred_at"] == "2026-11-26T14:03:05Z"


@pytest.mark.parametrize(
    ("label", "severity"),
    [
        ("critical", "sev1"),
        ("error", "sev2"),
        ("HIGH", "sev2"),
        ("warning", "sev3"),
        ("info", "sev4"),
        ("low", "sev4"),
        ("weird", "sev3"),
        (None, "sev3"),
    ],
)
def test_the_severity_label_maps_to_a_severity_by_default(label: str | None, severity: str) -> None:
    """critical→sev1, error/high→sev2, warning→sev3, info/low→sev4, anything else sev3."""
    labels = {"severity": label} if label else {}
    [event] = from_alertmanager(alert_group(**labels), Integrations(), NOW).events
    assert event["incident"]["severity"] == severity


def test_the_mapping_is_configurable_under_integrations() -> None:
    """Label names, the severity map and the id prefix come from the ``integrations:`` section."""
    config = parse_config(
        {
            "sender": "Acme <status@acme.example>",
            "integrations": {
                "service_label": "team",
                "severity_label": "priority",
                "severity_map": {"page": "sev1", "critical": "sev2"},
                "id_prefix": {"alertmanager": "prom-"},
            },
        }
    )
    [event] = from_alertmanager(
        alert_group(team="checkout", priority="page"), config.integrations, NOW
    ).events
    assert event["incident"]["services"] == ["checkout"] and event["incident"]["severity"] == "sev1"
    assert event["incident_id"].startswith("prom-")
    assert config.integrations.severity_of("critical") == "sev2"
    assert config.integrations.severity_of("warning") == "sev3"


def test_a_repeated_notification_is_the_same_event_and_a_changed_one_is_not() -> None:
    """Alertmanager's repeats and retries keep the event id; new annotations or alerts change it."""
    first = from_alertmanager(alert_group(), Integrations(), NOW).events[0]
    repeat = from_alertmanager(alert_group(), Integrations(), NOW.replace(hour=18)).events[0]
    assert repeat["event_id"] == first["event_id"]
    changed = alert_group()
    changed["alerts"][0]["annotations"]["description"] = "5xx above 20%"
    assert from_alertmanager(changed, Integrations(), NOW).events[0]["event_id"] != first["event_id"]
    refired = alert_group()
    refired["alerts"][0]["startsAt"] = "2026-11-26T15:00:00Z"
    assert from_alertmanager(refired, Integrations(), NOW).events[0]["event_id"] != first["event_id"]


def test_a_resolved_alert_group_resolves_the_same_incident() -> None:
    """``resolved`` becomes incident.resolved of the group's incident."""
    [opened] = from_alertmanager(alert_group(), Integrations(), NOW).events
    [resolved] = from_alertmanager(alert_group("resolved"), Integrations(), NOW).events
    assert parse_event(resolved).type == "incident.resolved"
    assert resolved["incident_id"] == opened["incident_id"]


def test_the_documented_grafana_payload_opens_one_incident_listing_its_alerts() -> None:
    """Grafana's example (two alerts, no common summary) opens grafana-… titled by its alert names."""
    mapping = Integrations(service_label="team")
    [event] = from_grafana(fixture("grafana_firing.json"), mapping, NOW).events
    parse_event(event)
    assert event["incident_id"] == group_incident_id("grafana-", "{}:{}")
    assert event["incident"]["title"] == "High memory usage, High CPU usage"
    assert event["incident"]["services"] == ["blue"]
    assert event["incident"]["severity"] == "sev3"
    assert event["incident"]["summary"] == (
        "2 alerts firing:\n- This alert was triggered for zone us-1\n- This alert was triggered for zone eu-1"
    )
    [resolved] = from_grafana(fixture("grafana_resolved.json"), mapping, NOW).events
    assert resolved["type"] == "incident.resolved" and resolved["incident_id"] == event["incident_id"]


def test_grafana_query_values_changing_between_repeats_change_nothing() -> None:
    """Grafana sends the latest query values with every repeat; they are not part of the event id."""
    payload = fixture("grafana_firing.json")
    again = copy.deepcopy(payload)
    again["alerts"][0]["values"] = {"B": 51.5, "C": 1}
    first = from_grafana(payload, Integrations(), NOW).events[0]
    assert from_grafana(again, Integrations(), NOW).events[0]["event_id"] == first["event_id"]


def test_a_payload_that_does_not_parse_names_each_wrong_field() -> None:
    """A broken alert group is refused with the place of every problem."""
    broken = alert_group()
    del broken["groupKey"]
    broken["alerts"][0]["status"] = "burning"
    with pytest.raises(EventError) as caught:
        from_alertmanager(broken, Integrations(), NOW)
    assert [place for place, _ in caught.value.errors] == ["groupKey", "alerts[0].status"]
    with pytest.raises(EventError, match="version 4"):
        from_alertmanager({**alert_group(), "version": "3"}, Integrations(), NOW)


def test_pagerduty_events_become_opened_updated_resolved_with_the_incident_id_as_key() -> None:
    """triggered opens (priority P1 → sev1), a note updates the plan, resolved resolves, a ping is ignored."""
    [opened] = from_pagerduty(fixture("pagerduty_triggered.json"), Integrations(), NOW).events
    assert (opened["type"], opened["incident_id"], opened["event_id"]) == (
        "incident.opened",
        "PGR0VU2",
        "pd-01BZ9ZV0N6W2CJ5AMYYVMWVCCJ",
    )
    assert opened["incident"] == {
        "title": "A little bump in the road",
        "severity": "sev1",
        "services": ["payments"],
        "status": "investigating",
    }
    assert opened["occurred_at"] == "2020-10-02T18:45:22.169000Z"
    [note] = from_pagerduty(fixture("pagerduty_annotated.json"), Integrations(), NOW).events
    assert (note["type"], note["incident_id"]) == ("incident.updated", "PGR0VU2")
    assert note["incident"] == {"plan": "Rolled back the 14:30 deploy; error rate is falling."}
    [resolved] = from_pagerduty(fixture("pagerduty_resolved.json"), Integrations(), NOW).events
    assert (resolved["type"], resolved["incident_id"]) == ("incident.resolved", "PGR0VU2")
    ping = from_pagerduty(fixture("pagerduty_ping.json"), Integrations(), NOW)
    assert ping.events == [] and "pagey.ping" in ping.ignored
    for event in (opened, note, resolved):
        parse_event(event)


# -- the routes ----------------------------------------------------------------------------


@pytest.fixture
def api(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    """The API with no worker behind it, a PagerDuty secret and a configuration."""
    config = tmp_path / "amends.yaml"
    config.write_text(yaml.safe_dump(BASE_CONFIG))
    settings = Settings(
        redis_url=redis_url, api_token=TOKEN, secret_key="s", pagerduty_secret=PD_SECRET, config_path=config
    )
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        yield client


def pd_signature(body: bytes) -> str:
    """``X-PagerDuty-Signature`` for ``body`` under the tests' secret, as PagerDuty computes it."""
    return "v1=" + hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()


def delivered(client: TestClient, name: str) -> bytes:
    """The documented payload as PagerDuty delivers it now: ``occurred_at`` is the app's clock."""
    now = client.app.state.web.clock().isoformat().replace("+00:00", "Z")  # type: ignore[attr-defined]
    raw = (FIXTURES / name).read_bytes()
    return re.sub(rb'"occurred_at": "[^"]*"', f'"occurred_at": "{now}"'.encode(), raw)


def _pd_post(client: TestClient, name: str, signature: str | None = None, body: bytes | None = None) -> Any:
    fresh = delivered(client, name)
    raw = body if body is not None else fresh
    headers = {"Content-Type": "application/json", "X-PagerDuty-Signature": signature or pd_signature(fresh)}
    return client.post("/v1/integrations/pagerduty", content=raw, headers=headers)


@pytest.mark.real
def test_alert_routes_need_the_api_token(api: TestClient) -> None:
    """Alertmanager and Grafana must send the API token as a bearer token."""
    for route in ("alertmanager", "grafana"):
        assert api.post(f"/v1/integrations/{route}", json=alert_group()).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert api.post(f"/v1/integrations/{route}", json=alert_group(), headers=wrong).status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    answer = api.post("/v1/integrations/alertmanager", json=alert_group(), headers=good)
    assert answer.status_code == 202
    assert answer.json()["events"][0]["type"] == "incident.opened"


@pytest.mark.real
def test_pagerduty_needs_a_signature_of_the_exact_body(api: TestClient) -> None:
    """The documented payload with its signature is accepted; a tampered body or a wrong signature gets 401."""
    for name, documented in SIGNATURES.items():
        if name.endswith(".json"):  # PagerDuty's own signature of each documented payload
            assert pagerduty_signature_valid(PD_SECRET, (FIXTURES / name).read_bytes(), documented), name
    tampered = delivered(api, "pagerduty_triggered.json").replace(b'"P1"', b'"P5"')
    assert _pd_post(api, "pagerduty_triggered.json", body=tampered).status_code == 401
    assert _pd_post(api, "pagerduty_triggered.json", signature="v1=" + "0" * 64).status_code == 401
    rotated = f"v1={'0' * 64},{pd_signature(delivered(api, 'pagerduty_triggered.json'))}"
    assert _pd_post(api, "pagerduty_triggered.json", signature=rotated).status_code == 202
    ping = _pd_post(api, "pagerduty_ping.json")
    assert ping.status_code == 200 and ping.json()["status"] == "ignored"


@pytest.mark.real
def test_pagerduty_is_refused_while_no_secret_is_set(redis_url: str, redis_client: redis.Redis) -> None:
    """Without AMENDS_PAGERDUTY_SECRET nothing can be verified, so everything gets 401."""
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="s")
    with TestClient(create_app(settings, clock=lambda: NOW)) as client:
        answer = _pd_post(client, "pagerduty_triggered.json")
    assert answer.status_code == 401 and "AMENDS_PAGERDUTY_SECRET" in answer.json()["detail"]


@pytest.mark.real
def test_a_payload_that_does_not_parse_gets_422_naming_the_field_and_is_kept(
    api: TestClient, redis_client: redis.Redis
) -> None:
    """A broken Grafana payload is answered 422 with the field and shows in ``amends log --rejected``."""
    broken = fixture("grafana_firing.json")
    broken["alerts"][1]["labels"] = {"zone": 7}
    answer = api.post("/v1/integrations/grafana", json=broken, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "alerts[1].labels.zone"
    [kept] = RedisStore(redis_client).rejected()
    assert kept["via"] == "grafana" and kept["event"]["groupKey"] == "{}:{}"
    not_json = api.post(
        "/v1/integrations/alertmanager", content=b"{oops", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["errors"][0]["reason"]


# -- PagerDuty end to end ------------------------------------------------------------------


@pytest.fixture
def live(app: App) -> Iterator[TestClient]:
    """The API in front of the running worker and SMTP server, with a PagerDuty secret."""
    settings = app.settings.with_(api_token=TOKEN, pagerduty_secret=PD_SECRET)
    with TestClient(create_app(settings, clock=app.clock)) as client:
        yield client


@pytest.mark.real
def test_a_pagerduty_incident_is_acknowledged_updated_and_resolved_by_email(
    live: TestClient, app: App
) -> None:
    """Stakeholders of the incident's service get the acknowledgment, the note as an update, then the resolution; a redelivery sends nothing."""
    assert _pd_post(live, "pagerduty_triggered.json").status_code == 202
    app.drain()
    acks = {m.message["To"] for m in app.sink.received}
    assert acks == {
        "ACME Finance <finance@acme.example>",
        "Globex Support <support@globex.example>",
        "Payments Engineering <eng@acme.example>",
    }
    repeat = _pd_post(live, "pagerduty_triggered.json")  # PagerDuty retried it
    assert repeat.status_code == 200 and repeat.json()["status"] == "duplicate"
    app.clock.advance(minutes=5)
    assert _pd_post(live, "pagerduty_annotated.json").status_code == 202
    app.drain()
    app.clock.advance(minutes=5)
    assert _pd_post(live, "pagerduty_resolved.json").status_code == 202
    app.settle()
    subjects = [m.message["Subject"] for m in app.sink.to("eng@acme.example")]
    assert len(subjects) == 3
    assert "Rolled back the 14:30 deploy" in app.sink.to("eng@acme.example")[1].part("plain")
    assert "resolved" in app.sink.to("eng@acme.example")[2].part("plain").lower()

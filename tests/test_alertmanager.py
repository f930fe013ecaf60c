"""A real Prometheus Alertmanager posting to a real ``amends serve`` in front of a real
worker and SMTP server: an alert fired and resolved with ``amtool`` reaches stakeholders
as an acknowledgment and then a resolution by email."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from scheduler.web.app import create_app
from tests.conftest import App
from tests.realservers import free_port, wait_until

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not (shutil.which("prometheus-alertmanager") and shutil.which("amtool")),
        reason="needs Debian's prometheus-alertmanager (alertmanager and amtool)",
    ),
]

TOKEN = "alertmanager-test-token"
LABELS = ["alertname=CardPayments", "severity=critical", "service=payments"]
ANNOTATIONS = [
    "--annotation=summary=Card payments failing",
    "--annotation=description=5xx above 5% for 5 minutes",
]
STAKEHOLDERS = {"finance@acme.example", "support@globex.example", "eng@acme.example"}


@pytest.fixture
def amends_serve(app: App) -> Iterator[str]:
    """``amends serve`` (the real uvicorn server) on a free loopback port, on the worker's Redis and clock."""
    port = free_port()
    application = create_app(app.settings.with_(api_token=TOKEN), clock=app.clock)
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30.0, "amends serve did not start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def alertmanager(amends_serve: str, tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager whose only receiver is amends' webhook, with a bearer token."""
    config = {
        "route": {
            "receiver": "amends",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "4h",
        },
        "receivers": [
            {
                "name": "amends",
                "webhook_configs": [
                    {
                        "url": f"{amends_serve}/v1/integrations/alertmanager",
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
                    }
                ],
            }
        ],
    }
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    wait_until(ready, 30.0, "Alertmanager did not become ready")
    assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
    yield url
    process.terminate()
    process.wait(10)
    log.close()


def _amtool(url: str, *args: str) -> None:
    subprocess.run(["amtool", f"--alertmanager.url={url}", "alert", "add", *args], check=True, timeout=30)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _subjects(app: App) -> dict[str, list[str]]:
    return {address: [str(m.message["Subject"]) for m in app.sink.to(address)] for address in STAKEHOLDERS}


def test_an_alert_fired_and_resolved_in_alertmanager_reaches_stakeholders_as_acknowledgment_then_resolution(
    app: App, alertmanager: str
) -> None:
    """amtool fires an alert and later ends it; each stakeholder of the service gets the acknowledgment, then the resolution."""
    started = datetime.now(UTC) - timedelta(minutes=2)
    _amtool(alertmanager, *LABELS, *ANNOTATIONS, f"--start={_rfc3339(started)}")
    wait_until(
        lambda: all(len(s) == 1 for s in _subjects(app).values()), 30.0, "the acknowledgments did not arrive"
    )
    [ack] = app.sink.to("eng@acme.example")
    assert (
        "[SEV1]" in ack.message["Subject"] and "Acknowledged: Card payments failing" in ack.message["Subject"]
    )
    assert "5xx above 5% for 5 minutes" in ack.part("plain")

    app.clock.advance(minutes=10)
    ended = datetime.now(UTC) - timedelta(minutes=1)
    _amtool(alertmanager, *LABELS, *ANNOTATIONS, f"--start={_rfc3339(started)}", f"--end={_rfc3339(ended)}")
    wait_until(
        lambda: all(len(s) == 2 for s in _subjects(app).values()), 30.0, "the resolutions did not arrive"
    )
    app.drain()
    for subjects in _subjects(app).values():
        assert len(subjects) == 2, subjects
        assert "[Resolved]" not in subjects[0] and subjects[1].startswith("[Resolved]")
        assert "Card payments failing" in subjects[1]


def test_an_alert_that_fires_again_after_resolving_reopens_the_incident(app: App, alertmanager: str) -> None:
    """The same alert firing again after its resolution reopens the incident: everyone hears of it again."""
    started = datetime.now(UTC) - timedelta(minutes=3)
    _amtool(alertmanager, *LABELS, *ANNOTATIONS, f"--start={_rfc3339(started)}")
    wait_until(
        lambda: all(len(s) == 1 for s in _subjects(app).values()), 30.0, "the acknowledgments did not arrive"
    )
    app.clock.advance(minutes=10)
    ended = datetime.now(UTC) - timedelta(minutes=2)
    _amtool(alertmanager, *LABELS, *ANNOTATIONS, f"--start={_rfc3339(started)}", f"--end={_rfc3339(ended)}")
    wait_until(
        lambda: all(len(s) == 2 for s in _subjects(app).values()), 30.0, "the resolutions did not arrive"
    )
    app.clock.advance(minutes=10)
    _amtool(alertmanager, *LABELS, *ANNOTATIONS)
    wait_until(
        lambda: all(len(s) == 3 for s in _subjects(app).values()), 30.0, "the reopening did not arrive"
    )
    [incident_id] = app.runtime.store.incident_ids()
    assert incident_id.startswith("am-")
    assert app.runtime.store.incident(incident_id).state == "open"
    for subjects in _subjects(app).values():
        assert not subjects[2].startswith("[Resolved]")

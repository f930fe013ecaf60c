"""Mail that filters accept: every audience and kind, as the SMTP server received it (text and HTML parts),
scores under 2.0 with SpamAssassin (Debian's, network tests off)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

from scheduler import emit
from scheduler.core.model import Kind
from scheduler.mail.dkim_signing import DkimKey
from tests.conftest import BASE_CONFIG, App, event
from tests.realservers import HOST, free_port, wait_until

pytestmark = pytest.mark.real

AUDIENCES = ("customer", "engineering", "executive", "partners")
"""The shipped template sets; ``partners`` has none of its own and uses ``templates/default/``."""

MAX_SCORE = 2.0


_LIFECYCLE = (Kind.ACKNOWLEDGMENT, Kind.UPDATE, Kind.RESOLUTION, Kind.FEEDBACK_REQUEST)
"""The kinds every reader of an incident's whole life receives."""


@pytest.fixture
def app_config() -> dict[str, Any]:
    """One stakeholder per audience, each concerned by payments incidents, feedback an hour after resolution."""
    stakeholders = [
        {
            "id": f"{audience}-reader",
            "name": f"Jordan Lee ({audience})",
            "email": f"jordan.{audience}@globex.example",
            "audience": audience,
            "timezone": "Europe/Berlin",
            "services": ["payments"],
        }
        for audience in AUDIENCES
    ]
    return {
        **BASE_CONFIG,
        "stakeholders": stakeholders,
        "defaults": {**BASE_CONFIG["defaults"], "feedback_after": "1h"},
    }


@dataclass(frozen=True)
class SpamScorer:
    """A real spamd on a free loopback port; each message is scored alone through spamc, as a
    receiving server would (one ``spamassassin --mbox`` run carries HTML state from one message
    to the next, so it is not used)."""

    port: int

    def score(self, raw: bytes) -> tuple[float, list[str]]:
        run = subprocess.run(
            ["spamc", "-d", HOST, "-p", str(self.port), "-R", "-x"],
            input=raw,
            capture_output=True,
            timeout=60,
            check=False,
        )
        head, _, report = run.stdout.decode(errors="replace").partition("\n")
        assert re.fullmatch(r"-?[\d.]+/[\d.]+", head.strip()), (run.returncode, run.stdout, run.stderr)
        rules = re.findall(r"^\s*-?[\d.]+ ([A-Z0-9_]+)\s", report, re.M)
        return float(head.split("/")[0]), rules


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpamScorer]:
    """Debian's spamd, local tests only (no DNS blocklists, no DKIM key lookups), no user state."""
    if shutil.which("spamd") is None or shutil.which("spamc") is None:
        pytest.skip("spamd and spamc are not installed (Debian: apt-get install spamassassin spamc)")
    home = tmp_path_factory.mktemp("spamd")
    port = free_port()
    root = ["--username=nobody"] if os.geteuid() == 0 else []  # spamd will not score as root
    server = subprocess.Popen(
        [
            *("spamd", "--local", f"--listen={HOST}:{port}", "--max-children=1", "--nouser-config"),
            *root,
            f"--pidfile={home / 'spamd.pid'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(home / "spamd.log").open("wb"),
        env={"HOME": str(home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    try:
        wait_until(
            lambda: (
                subprocess.run(["spamc", "-d", HOST, "-p", str(port), "-K"], capture_output=True).returncode
                == 0
                or server.poll() is not None
            ),
            60,
            "spamd answering",
        )
        assert server.poll() is None, (home / "spamd.log").read_text()
        yield SpamScorer(port)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "dkim-signed"])
def test_every_audience_and_kind_scores_under_two(app: App, spamd: SpamScorer, signed: bool) -> None:
    """Acknowledgment, update, resolution and feedback request of each audience, as received (text and HTML parts, signed or not), each score under 2.0."""
    if signed:
        key = DkimKey.from_env(
            str(Path(__file__).parent / "fixtures" / "dkim" / "test-key.pem"), "amends2026"
        )
        app.runtime.settings = app.runtime.settings.with_(dkim=key)
    emit(event(at=app.clock()), broker=app.broker)
    app.drain()
    app.advance_to(app.clock() + timedelta(minutes=31))
    emit(event("resolved", at=app.clock()), broker=app.broker)
    app.drain()
    app.advance_to(app.clock() + timedelta(hours=2))
    comms = {(c.stakeholder_id, c.kind): c for c in app.runtime.store.communications() if c.status == "sent"}
    wanted = [(f"{a}-reader", k) for a in AUDIENCES for k in _LIFECYCLE]
    assert sorted(comms) == sorted(wanted) or set(wanted) <= set(comms)
    received = {m.message["Message-ID"]: m.raw for m in app.sink.received}
    messages = [received[comms[w].message_id] for w in wanted]
    for raw in messages:
        parts = [p.get_content_type() for p in message_from_bytes(raw, policy=default).walk()]
        assert parts == ["multipart/alternative", "text/plain", "text/html"]
        assert raw.startswith(b"DKIM-Signature:") is signed
    scores = [spamd.score(raw) for raw in messages]
    report = "\n".join(
        f"{score:5.1f}  {a} {k}: {' '.join(rules)}"
        for (a, k), (score, rules) in zip(wanted, scores, strict=True)
    )
    print(report)
    assert all(score < MAX_SCORE for score, _ in scores), report


def test_the_scorer_tells_spam_apart(spamd: SpamScorer) -> None:
    """SpamAssassin's own test pattern (GTUBE) scores 1000 or more through the same spamd: the scores above are real."""
    gtube = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    message = b"From: a@acme.example\r\nTo: b@globex.example\r\nSubject: test\r\n\r\n" + gtube + b"\r\n"
    score, rules = spamd.score(message)
    assert score >= 1000 and "GTUBE" in rules

"""Signatures are bound to a structure, not a joined string; a link for a stakeholder or an
incident amends does not know changes nothing; links sent before keep working; a signature
is withheld wherever a soft line break falls in it."""

from __future__ import annotations

import hashlib
import hmac
import quopri
from urllib.parse import quote

import pytest
import redis
from fastapi.testclient import TestClient

from scheduler.mail.signing import (
    feedback_links,
    sign,
    unsubscribe_link,
    verify,
    verify_link,
    withhold_signatures,
)
from scheduler.storage import keys
from scheduler.storage.redis_store import RedisStore
from tests.conftest import App
from tests.helpers import stored_incident

SECRET = "signing-secret"
RESPLIT = "acme-finance\x1fINC-1"


def _joined(secret: str, *parts: str) -> str:
    """A signature as links sent before carried it: the parts joined by U+001F."""
    return hmac.new(secret.encode(), "\x1f".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("unsubscribe", "acme-finance", "INC-1"), ("unsubscribe", "acme-finance\x1fINC-1")),
        (("feedback", "INC-1", "globex", "5"), ("feedback", "INC-1", "globex\x1f5")),
        (("feedback", "ab", "c"), ("feedback", "a", "bc")),
        (("feedback-page", "INC-1", "globex"), ("feedback", "page", "INC-1", "globex")),
        (("unsubscribe", ""), ("unsubscribe",)),
    ],
)
def test_no_two_part_lists_share_a_signature(one: tuple[str, ...], other: tuple[str, ...]) -> None:
    """Re-splitting or re-joining the parts (or moving the purpose) gives another signature."""
    assert sign(SECRET, *one) != sign(SECRET, *other)
    assert not verify(SECRET, sign(SECRET, *one), *other)
    assert not verify_link(SECRET, _joined(SECRET, *one), *other)


def test_a_signature_from_before_still_verifies_for_the_same_parts() -> None:
    """A link signed as links were before (parts joined) verifies for exactly its parts."""
    old = _joined(SECRET, "unsubscribe", "globex", "INC-1")
    assert verify_link(SECRET, old, "unsubscribe", "globex", "INC-1")
    assert not verify(SECRET, old, "unsubscribe", "globex", "INC-1")  # only links accept the old form
    assert not verify_link(SECRET, old, "unsubscribe", "globex", "INC-2")


def test_a_signature_is_withheld_wherever_a_soft_line_break_falls() -> None:
    """In quoted-printable text, wherever the encoder breaks the line (in ``sig=`` or the value),
    the signature is replaced by a marker of the same length and no digit of it survives."""
    signature = sign(SECRET, "unsubscribe", "globex")
    for pad in range(0, 80):
        text = "x" * pad + f" https://s.example/unsubscribe/globex?sig={signature} end\n"
        encoded = quopri.encodestring(text.encode()).decode()
        shown = withhold_signatures(encoded)
        decoded = quopri.decodestring(shown.encode()).decode()
        assert signature not in decoded.replace("\n", ""), pad
        assert len(shown) == len(encoded) and "sig=WITHHELD" in decoded, pad
    plain = f"<https://s.example/unsubscribe/globex?sig={signature}>"
    assert (
        withhold_signatures(plain)
        == "<https://s.example/unsubscribe/globex?sig=WITHHELDWITHHELDWITHHELDWITHHELD>"
    )


# -- the routes ---------------------------------------------------------------------------


@pytest.fixture
def links(web: TestClient, app: App) -> TestClient:
    """The API in front of the worker; its links are signed with the worker's secret key."""
    return web


@pytest.mark.real
def test_a_re_split_unsubscribe_link_is_refused_and_stores_nothing(
    links: TestClient, app: App, redis_client: redis.Redis
) -> None:
    """The signature of (acme-finance, INC-1), moved into the path as ``acme-finance%1FINC-1``
    (new or old form), does not verify, and no opt-out is kept."""
    stored_incident(redis_client, "INC-1", ["acme-finance"])
    secret = app.settings.secret_key or ""
    for signature in (
        sign(secret, "unsubscribe", "acme-finance", "INC-1"),
        _joined(secret, "unsubscribe", "acme-finance", "INC-1"),
    ):
        moved = f"/unsubscribe/{quote(RESPLIT, safe='')}?sig={signature}"
        assert links.get(moved).status_code == 403
        assert links.post(moved, data={"List-Unsubscribe": "One-Click"}).status_code == 403
    assert redis_client.hlen(keys.UNSUBSCRIBED) == 0


@pytest.mark.real
def test_a_signed_link_for_an_unknown_stakeholder_or_incident_gets_404_and_stores_nothing(
    links: TestClient, app: App, redis_client: redis.Redis
) -> None:
    """A validly signed link naming a stakeholder not configured, or an incident not known,
    is 404 for the page and the POST, and no opt-out or feedback is kept."""
    secret = app.settings.secret_key or ""
    stored_incident(redis_client, "INC-1", ["globex"])
    nobody = unsubscribe_link("", secret, "not-configured")
    assert links.get(nobody).status_code == 404
    assert links.post(nobody, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    for incident, stakeholder in (("INC-404", "globex"), ("INC-1", "not-configured")):
        rating = feedback_links("", secret, incident, stakeholder)[1]
        assert links.get(rating).status_code == 404, (incident, stakeholder)
        action = f"/feedback/{incident}/{stakeholder}"
        comment_sig = sign(secret, "feedback-comment", incident, stakeholder)
        assert links.post(action, data={"sig": comment_sig, "rating": "1"}).status_code == 404
    assert redis_client.hlen(keys.UNSUBSCRIBED) == 0
    assert RedisStore(redis_client).feedback_for("INC-1") == {}
    assert RedisStore(redis_client).feedback_for("INC-404") == {}


@pytest.mark.real
def test_links_sent_before_keep_working(links: TestClient, app: App, redis_client: redis.Redis) -> None:
    """An unsubscribe link and a rating link signed the old way still open and still record."""
    secret = app.settings.secret_key or ""
    stored_incident(redis_client, "INC-1", ["globex"])
    old = f"/unsubscribe/globex?incident=INC-1&sig={_joined(secret, 'unsubscribe', 'globex', 'INC-1')}"
    assert links.get(old).status_code == 200
    assert links.post(old, data={"scope": "incident"}).status_code == 200
    assert RedisStore(redis_client).is_opted_out("globex", incident_id="INC-1")
    rating = f"/feedback/INC-1/globex?rating=4&sig={_joined(secret, 'feedback', 'INC-1', 'globex', '4')}"
    assert links.get(rating).status_code == 200
    comment_sig = _joined(secret, "feedback-comment", "INC-1", "globex")
    assert links.post("/feedback/INC-1/globex", data={"sig": comment_sig, "rating": "4"}).status_code == 200
    assert RedisStore(redis_client).feedback_for("INC-1")["globex"].rating == 4


@pytest.mark.real
def test_an_unsubscribe_link_whose_incident_was_removed_still_stops_all_mail(
    links: TestClient, app: App, redis_client: redis.Redis
) -> None:
    """Once retention removed the incident, the link offers (and records) all incident mail only."""
    link = unsubscribe_link("", app.settings.secret_key or "", "globex", "INC-GONE")
    page = links.get(link)
    assert page.status_code == 200 and "Only the messages about" not in page.text
    assert links.post(link, data={"scope": "incident"}).status_code == 422
    assert links.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert [o.id for o in RedisStore(redis_client).opt_outs()] == ["globex"]


@pytest.mark.real
@pytest.mark.parametrize("case", ["swapped stakeholder", "swapped incident", "forged", "another key"])
def test_forged_or_swapped_signatures_get_403(
    links: TestClient, app: App, redis_client: redis.Redis, case: str
) -> None:
    """Another stakeholder's or incident's signature, a made-up one or another key's gets 403 and stores nothing."""
    secret = app.settings.secret_key or ""
    stored_incident(redis_client, "INC-1", ["globex", "acme-finance"])
    stored_incident(redis_client, "INC-2", ["globex"])
    link = {
        "swapped stakeholder": unsubscribe_link("", secret, "acme-finance", "INC-1").replace(
            "/acme-finance?", "/globex?"
        ),
        "swapped incident": unsubscribe_link("", secret, "globex", "INC-1").replace("INC-1", "INC-2"),
        "forged": "/unsubscribe/globex?incident=INC-1&sig=" + "0" * 32,
        "another key": unsubscribe_link("", "another-key", "globex", "INC-1"),
    }[case]
    assert links.get(link).status_code == 403
    assert links.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 403
    assert redis_client.hlen(keys.UNSUBSCRIBED) == 0

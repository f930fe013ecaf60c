"""Property-based fuzzing of every route: whatever the path, query, headers and body, no 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.mail.signing import feedback_links, unsubscribe_link
from scheduler.service.settings import Settings
from scheduler.web.app import create_app
from tests.conftest import event

pytestmark = pytest.mark.real

TOKEN = "fuzz-token"
SECRET = "fuzz-secret"

ROUTES = [
    ("GET", "/"),
    ("POST", "/signin"),
    ("POST", "/signout"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("POST", "/v1/events"),
    ("GET", "/v1/communications"),
    ("GET", "/v1/communications/{a}"),
    ("GET", "/v1/incidents"),
    ("GET", "/v1/incidents/{a}"),
    ("GET", "/v1/opt-outs"),
    ("DELETE", "/v1/opt-outs/{a}"),
    ("GET", "/feedback/{a}/{b}"),
    ("POST", "/feedback/{a}/{b}"),
    ("GET", "/unsubscribe/{a}"),
    ("POST", "/unsubscribe/{a}"),
]
NAMES = ["since", "limit", "kind", "status", "incident", "stakeholder", "rating", "sig", "token", "scope"]

segments = st.one_of(st.sampled_from(["INC-1", "globex", "x", ""]), st.text(max_size=40))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event with one field (top level or incident) replaced by any JSON value."""
    document: dict[str, Any] = event()
    where = draw(st.sampled_from([document, document["incident"]]))
    where[draw(st.sampled_from([*where, *draw(st.lists(st.text(max_size=8), max_size=1))]))] = draw(
        json_values
    )
    return json.dumps(document).encode()


forms = st.lists(
    st.tuples(st.sampled_from([*NAMES, "comment", "undo"]), st.text(max_size=50)), max_size=6
).map(lambda pairs: urlencode(pairs).encode())
bodies = st.one_of(
    st.binary(max_size=300),
    forms,
    mutated_events(),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n),
)
queries = st.lists(
    st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), st.text(max_size=30)), max_size=4
)


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[TestClient]:
    settings_ = Settings(redis_url=redis_url, api_token=TOKEN, read_token="fuzz-read", secret_key=SECRET)
    app = create_app(settings_, clock=lambda: datetime(2026, 11, 26, 14, 3, 5, tzinfo=UTC))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    a=segments,
    b=segments,
    query=queries,
    body=bodies,
    auth=st.sampled_from([None, f"Bearer {TOKEN}", "Bearer fuzz-read", "Bearer wrong", "Basic x"]),
    content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", ""]),
)
def test_no_input_gets_a_5xx(
    client: TestClient,
    route: tuple[str, str],
    a: str,
    b: str,
    query: list[tuple[str, str]],
    body: bytes,
    auth: str | None,
    content_type: str,
) -> None:
    """Any path segment, query, token, content type and body is answered below 500."""
    method, template = route
    path = template.format(a=quote(a, safe=""), b=quote(b, safe=""))
    headers = {"Content-Type": content_type} if content_type else {}
    if auth:
        headers["Authorization"] = auth
    url = f"{path}?{urlencode(query)}" if query else path
    response = client.request(method, url, content=body if method == "POST" else None, headers=headers)
    assert response.status_code < 500, (method, url, body[:200], response.text[:500])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, rating=st.integers(1, 5))
def test_signed_links_take_any_body_without_a_5xx(client: TestClient, body: bytes, rating: int) -> None:
    """Correctly signed feedback and unsubscribe links, posted any body, are answered below 500."""
    for link in (
        feedback_links("", SECRET, "INC-1", "globex")[rating],
        unsubscribe_link("", SECRET, "globex", "INC-1"),
    ):
        response = client.post(
            link, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert response.status_code < 500, (link, body[:200], response.text[:500])

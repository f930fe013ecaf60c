"""build_email's directly written message is byte for byte what the email package makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from scheduler.core.config import parse_config
from scheduler.core.model import Kind
from scheduler.mail.messages import compose_email
from scheduler.mail.mime import ComposedEmail, build_email, reference_email
from scheduler.mail.preflight import sample_communication
from scheduler.mail.render import RenderedMessage, TemplateSet
from scheduler.mail.smtp import _envelope, _wire_bytes
from scheduler.service.settings import bundled_path

# Characters that exercise quoting, quoted-printable escapes, encoded words and folding
_TRICKY = " \t=?\"\\,;:<>()@[]._-'!#%&*+/`{|}~\x7f\x0b\x0c\xa0éüß中😀\u2028\ufffd\ud800"
_HEADER_TEXT = st.one_of(
    st.sampled_from(["Card payments failing", "Resolved: payments = OK ", "Über alles", "=?utf-8?q?x?="]),
    st.lists(
        st.text(st.sampled_from("abcdefghijklmnop=:;,.<>()[]\"'!"), min_size=1, max_size=30), max_size=20
    ).map(" ".join),
    st.lists(st.from_regex(r"[A-Za-z0-9:\[\]-]{1,79}", fullmatch=True), max_size=8).map(" ".join),
    st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=90),
    st.text(st.sampled_from("abcdefghij ABC0123" + _TRICKY), max_size=90),
    st.text(max_size=40),
)
_BODY_TEXT = st.one_of(
    st.text(st.sampled_from("ab cd=\t\n\r.-\xe9\u4e2d"), max_size=400),
    st.lists(
        st.text(st.sampled_from("abcdefgh =.\t" + _TRICKY), min_size=0, max_size=200),
        max_size=12,
    ).map("\n".join),
    st.text(max_size=300),
)
_ADDRESS = st.one_of(
    st.sampled_from(["status@acme.example", "c@customer.example", "x.y+z@sub.example.org", ""]),
    st.from_regex(r"[a-z0-9.+_-]{1,64}@[a-z0-9-]{1,40}\.example", fullmatch=True),
    st.text(st.characters(codec="ascii"), max_size=40),
)
_NAME = st.one_of(
    st.sampled_from(["Acme Status", "Customer Co", "Doe, Jane", "O'Brien (Ops)", "Zürich Customer", ""]),
    _HEADER_TEXT,
)


def _formataddr(pair: tuple[str, str]) -> str:
    try:
        return formataddr(pair)
    except UnicodeError:  # a lone surrogate in the name; configured names never have one
        return f"{pair[0]} <{pair[1]}>"


_MAILBOX = st.one_of(st.tuples(_NAME, _ADDRESS).map(_formataddr), _HEADER_TEXT)
_MESSAGE_ID = st.one_of(
    st.from_regex(r"<amends\.[A-Za-z0-9._-]{1,120}@[a-z0-9.-]{1,60}>", fullmatch=True),
    st.from_regex(r"<amends\.[A-Za-z0-9._-]{1,30}@acme\.example>", fullmatch=True),
    st.from_regex(r"<[!-~]{1,200}>", fullmatch=True),
    st.text(st.characters(codec="ascii"), max_size=30),
    st.text(min_size=1, max_size=5).map(lambda s: f"<{s}@x>"),
    st.just("<" + "i" * 990 + "@x>"),
)
_OFFSETS = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-23 * 3600 - 59 * 60, 23 * 3600 + 59 * 60).map(lambda s: timezone(timedelta(seconds=s))),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
_SENT_AT = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone),
    st.one_of(
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    ),
    _OFFSETS,
)
_EXTRA_NAMES = st.sampled_from(
    [
        "Reply-To",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "list-unsubscribe",
        "X-Amends-Incident",
        "X-A-Rather-Long-Header-Name-That-Takes-Up-Most-Of-The-Line-By-Itself",
        "Content-Language",
        "MIME-Version",
        "Subject",
        "reply-to",
        "Bcc",
        "Sender",
        "Resent-Date",
        "Message-ID",
        "In-Reply-To",
        "X Space",
        "X-Ünicode",
    ]
)
_EXTRA_VALUES = st.one_of(
    _HEADER_TEXT,
    _MAILBOX,
    st.from_regex(r"<https://status\.acme\.example/u/[A-Za-z0-9_=-]{0,900}>", fullmatch=True),
    st.just("List-Unsubscribe=One-Click"),
)


def _outcome(build: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", build(**kwargs)
    except Exception as e:  # both builders must fail alike
        return "raised", f"{type(e).__name__}: {e}"


def _reading(read: Any, *args: Any) -> Any:
    try:
        value = read(*args)
    except Exception as e:  # the email package's parser can fail on odd headers; alike, then
        return f"{type(e).__name__}: {e}"
    return (type(value).__name__, str(value)) if isinstance(value, str) else value


def _readings(message: EmailMessage) -> list[Any]:
    """What callers read off a message: headers as parsed, bodies, envelope, wire bytes."""
    headers = [(name, _reading(message.get, name)) for name in message]
    bodies = [part.get_content() for part in message.iter_parts()]
    return [headers, bodies, _reading(_envelope, message), _wire_bytes(message), message.as_bytes()]


def _assert_same(**kwargs: Any) -> None:
    status, built = _outcome(build_email, **kwargs)
    reference = _outcome(reference_email, **kwargs)
    event(f"{status}: {type(built).__name__ if status == 'ok' else 'error'}")
    if status == "raised":
        assert (status, built) == reference
        return
    assert reference[0] == "ok", reference
    # the email package's own folder fails on a few odd address lines: then both fail alike
    assert _reading(built.as_string) == _reading(reference[1].as_string)
    if isinstance(_reading(built.as_string), str):
        return
    assert EmailMessage.as_string(built) == reference[1].as_string()  # flattened afresh, too
    assert _readings(built) == _readings(reference[1])


_THREAD = st.sampled_from(["none", "same", "other"])


def _thread_id(thread: str, message_id: str) -> str | None:
    return {"none": None, "same": message_id, "other": "<amends.thread@acme.example>"}[thread]


@settings(max_examples=500, deadline=None)
@given(
    subject=_HEADER_TEXT,
    text=_BODY_TEXT,
    html=_BODY_TEXT,
    sender=_MAILBOX,
    recipient=_MAILBOX,
    message_id=_MESSAGE_ID,
    thread=_THREAD,
    sent_at=_SENT_AT,
    extra=st.dictionaries(_EXTRA_NAMES, _EXTRA_VALUES, max_size=4),
)
def test_any_message_has_the_email_packages_bytes(
    subject: str,
    text: str,
    html: str,
    sender: str,
    recipient: str,
    message_id: str,
    thread: str,
    sent_at: datetime,
    extra: dict[str, str],
) -> None:
    """Whatever the headers and bodies, build_email gives reference_email's bytes, or its error."""
    _assert_same(
        rendered=RenderedMessage(subject, text, html),
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        thread_id=_thread_id(thread, message_id),
        sent_at=sent_at,
        extra_headers=extra,
    )


_WORDS = st.lists(
    st.one_of(
        st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True),
        st.sampled_from(["[SEV1][INC-42]", "Resolved:", "=", "a=b", "(ops)", "Zürich", "x" * 70]),
    ),
    min_size=1,
    max_size=25,
).map(" ".join)
_PLAIN_NAME = st.one_of(
    st.lists(st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True), max_size=4).map(" ".join),
    _WORDS,
    st.sampled_from(["Doe, Jane", 'Dana "DJ" Whit', "O'Brien", "a.b", "Ünal"]),
)
_PLAIN_ADDRESS = st.from_regex(r"[a-z0-9.+_-]{1,20}@[a-z0-9-]{1,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)
_PLAIN_MAILBOX = st.tuples(_PLAIN_NAME, _PLAIN_ADDRESS).map(formataddr)


@settings(max_examples=500, deadline=None)
@given(
    subject=_WORDS,
    text=_BODY_TEXT,
    html=_BODY_TEXT,
    sender=_PLAIN_MAILBOX,
    recipient=_PLAIN_MAILBOX,
    message_id=st.from_regex(r"<amends\.[A-Za-z0-9._-]{1,80}@[a-z0-9.-]{1,40}>", fullmatch=True),
    thread=_THREAD,
    sent_at=_SENT_AT,
    reply_to=st.one_of(st.none(), _PLAIN_MAILBOX),
    unsubscribe=st.one_of(
        st.none(), st.from_regex(r"<https://status\.acme\.example/u/[A-Za-z0-9_=.-]{0,300}>", fullmatch=True)
    ),
    other=st.dictionaries(st.sampled_from(["X-Amends-Incident", "X-Amends-Kind", "Organization"]), _WORDS),
)
def test_plausible_messages_have_the_email_packages_bytes(
    subject: str,
    text: str,
    html: str,
    sender: str,
    recipient: str,
    message_id: str,
    thread: str,
    sent_at: datetime,
    reply_to: str | None,
    unsubscribe: str | None,
    other: dict[str, str],
) -> None:
    """Messages like amends' own (long subjects, quoted names, one-click unsubscribe) too."""
    extra = dict(other)
    if reply_to is not None:
        extra["Reply-To"] = reply_to
    if unsubscribe is not None:
        extra["List-Unsubscribe"] = unsubscribe
        extra["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    _assert_same(
        rendered=RenderedMessage(subject, text, html),
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        thread_id=_thread_id(thread, message_id),
        sent_at=sent_at,
        extra_headers=extra,
    )


CONFIG = parse_config(
    {
        "sender": "Acme Status <status@acme.example>",
        "contact": {"name": "Acme Support", "email": "support@acme.example"},
        "stakeholders": [
            {"id": "cust", "name": "Customer Co", "email": "c@customer.example", "audience": "customer"},
            {"id": "exec", "name": "Board", "email": "b@acme.example", "audience": "executive"},
            {"id": "eng", "name": "Engineers", "email": "e@acme.example", "audience": "engineering"},
            {"id": "plain", "name": "Someone", "email": "s@acme.example"},
        ],
    }
)
TEMPLATES = TemplateSet(bundled_path("templates"))
NOW = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("stakeholder_id", ["cust", "exec", "eng", "plain"])
@pytest.mark.parametrize("kind", list(Kind))
def test_bundled_templates_take_the_direct_path(kind: str, stakeholder_id: str) -> None:
    """Every bundled kind and audience is written directly, and reads back as the reference's."""
    stakeholder = CONFIG.stakeholder(stakeholder_id)
    assert stakeholder is not None
    comm = sample_communication(kind, stakeholder_id, CONFIG.timezone_of(stakeholder), NOW)
    message, _ = compose_email(comm, stakeholder, CONFIG, TEMPLATES, NOW, "k")
    assert isinstance(message, ComposedEmail)
    assert EmailMessage.as_string(message) == message.as_string()


def test_a_changed_message_flattens_again() -> None:
    """Once a directly written message is changed, as_string() and its envelope show the change."""
    message = build_email(
        RenderedMessage("Subject", "text", "<p>html</p>"),
        sender="Acme <status@acme.example>",
        recipient="Someone <s@acme.example>",
        message_id="<a@acme.example>",
        thread_id=None,
        sent_at=NOW,
    )
    assert isinstance(message, ComposedEmail)
    assert _envelope(message) == ("status@acme.example", ["s@acme.example"])
    message["X-Added"] = "yes"
    message.replace_header("To", "Other <o@acme.example>")
    message.get_body(("html",)).set_content("<p>other</p>", subtype="html", cte="quoted-printable")  # type: ignore[union-attr]
    parsed = message_from_bytes(message.as_string().encode(), policy=policy.default)
    assert parsed["X-Added"] == "yes" and parsed["To"] == "Other <o@acme.example>"
    assert _envelope(message) == ("status@acme.example", ["o@acme.example"])
    assert "other" in parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]

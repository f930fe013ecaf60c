"""The email as sent: a multipart/alternative message, all ASCII, the same bytes every time.

:func:`build_email` writes the common message directly; :func:`reference_email` builds
it with the ``email`` package (the reference a property test holds the direct writer to,
and the path for headers that need encoding or folding).
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import datetime
from email import quoprimime
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage, Message
from email.policy import EmailPolicy, Policy
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from scheduler.core.text import scrub
from scheduler.mail.render import RenderedMessage, clean_header

__all__ = [
    "MAX_VERBATIM_LINE",
    "VERBATIM_HEADERS",
    "ComposedEmail",
    "build_email",
    "message_id_for",
    "reference_email",
    "written_header",
]

VERBATIM_HEADERS = frozenset(
    {"message-id", "in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post"}
)
"""Headers written exactly as given: never RFC 2047-encoded, never folded.

RFC 2369 forbids encoded-words and whitespace inside ``<URL>``, and a msg-id has no place
where RFC 5322 allows folding; Python's header folding does both to a long value, which
breaks one-click unsubscribe and threading in real mail clients.
"""
MAX_VERBATIM_LINE = 998
"""RFC 5322's limit on a line, which a verbatim header must keep to on its own."""


class _MailPolicy(EmailPolicy):
    """``email.policy.SMTP`` (CRLF, 78-column folding, 7-bit only) except for VERBATIM_HEADERS."""

    def header_store_parse(self, name: str, value: str) -> tuple[str, str]:
        if name.lower() not in VERBATIM_HEADERS:
            return super().header_store_parse(name, value)
        line = f"{name}: {value}"
        if not value.isascii() or not value.isprintable() or len(line) > MAX_VERBATIM_LINE:
            raise ValueError(f"{name} must be printable ASCII of at most {MAX_VERBATIM_LINE} characters")
        return name, value

    def fold(self, name: str, value: str) -> str:
        if name.lower() in VERBATIM_HEADERS and type(value) is str:
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)  # type: ignore[no-any-return]

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in VERBATIM_HEADERS and type(value) is str:
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


# 7-bit: every body part is quoted-printable, so the message is plain ASCII, reads the
# same through any relay, and its string form is exactly the bytes on the wire.
_FOLD_AT = 78
_POLICY = _MailPolicy(linesep="\r\n", max_line_length=_FOLD_AT, cte_type="7bit")


def build_email(
    rendered: RenderedMessage,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    thread_id: str | None,
    sent_at: datetime,
    extra_headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A multipart/alternative message with a text and an HTML part.

    ``thread_id`` (the first message's Message-ID) goes into In-Reply-To and References so
    that every message of one incident to one stakeholder shows as one thread. The
    message is all ASCII and flattens the same way every time (the MIME boundary derives
    from the Message-ID), so ``message.as_string()`` is the exact form that is sent and
    logged. Headers in VERBATIM_HEADERS in ``extra_headers`` are kept exactly as given.

    When every header fits on one line as it is, the message is written directly (a
    :class:`ComposedEmail`); otherwise (a header to encode or fold, or one the ``email``
    package treats specially) it is :func:`reference_email`'s. Both give the same bytes.
    """
    headers = _plain_headers(
        rendered,
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        thread_id=thread_id,
        sent_at=sent_at,
        extra_headers=extra_headers or {},
    )
    if headers is None:
        return reference_email(
            rendered,
            sender=sender,
            recipient=recipient,
            message_id=message_id,
            thread_id=thread_id,
            sent_at=sent_at,
            extra_headers=extra_headers,
        )
    return _written(headers, _boundary_for(message_id), scrub(rendered.text), scrub(rendered.html))


def reference_email(
    rendered: RenderedMessage,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    thread_id: str | None,
    sent_at: datetime,
    extra_headers: dict[str, str] | None = None,
) -> EmailMessage:
    """:func:`build_email` made with the ``email`` package: the reference for its bytes.

    :func:`build_email` writes the common message directly and hands everything else to
    this function; a property test holds the two to the same bytes.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = clean_header(sender)
    message["To"] = clean_header(recipient)
    message["Subject"] = clean_header(rendered.subject)
    message["Date"] = format_datetime(sent_at)
    message["Message-ID"] = message_id
    if thread_id and thread_id != message_id:
        message["In-Reply-To"] = thread_id
        message["References"] = thread_id
    message["Auto-Submitted"] = "auto-generated"
    for name, value in (extra_headers or {}).items():
        message[name] = value if name.lower() in VERBATIM_HEADERS else clean_header(value, limit=900)
    message.set_content(scrub(rendered.text), cte="quoted-printable")
    message.add_alternative(scrub(rendered.html), subtype="html", cte="quoted-printable")
    # "=_" never occurs in quoted-printable text, so this boundary cannot collide with a body
    message.set_boundary(_boundary_for(message_id))
    return message


def _boundary_for(message_id: str) -> str:
    # "=_" never occurs in quoted-printable text, so this boundary cannot collide with a body
    return "=_amends_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


# -- writing the message directly ---------------------------------------------------------
#
# What follows reproduces, for the common message, what reference_email's EmailMessage
# flattens to under _POLICY; tests/test_direct_mime.py compares the two byte for byte.

_CRLF = "\r\n"
_FIELD_NAME = re.compile(r"[!-9;-~]+")
"""RFC 5322 ftext: printable ASCII except the colon."""
_REGISTERED = frozenset(HeaderRegistry().registry)
"""Headers the ``email`` package parses as addresses, dates, ids or MIME fields."""
_ADDRESS_HEADERS = frozenset({"from", "to", "reply-to"})
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_PLAIN_MAILBOX = re.compile(
    rf'(?:(?:{_ATOM}(?: {_ATOM})*|"(?:[ !#-\[\]-~]|\\[ -~])*") )?<{_DOT_ATOM}@{_DOT_ATOM}>|{_DOT_ATOM}@{_DOT_ATOM}'
)
"""One mailbox as ``formataddr`` writes an ASCII one: the shape the ``email`` package
writes back unchanged (it completes a group, for one, and reworks obsolete syntax)."""


def _verbatim_fits(value: str, name: str) -> bool:
    """Whether _MailPolicy accepts ``value`` for a VERBATIM_HEADERS header (otherwise it raises)."""
    return value.isascii() and value.isprintable() and len(name) + 2 + len(value) <= MAX_VERBATIM_LINE


def _fits_as_is(value: str, name: str) -> bool:
    """Whether the ``email`` package writes ``name: value`` unchanged.

    It does for printable ASCII on one line of at most 78 columns: the header's parse
    tree prints back as the value, and the whole of it fits, so nothing is folded. An
    empty value loses the space after the colon; ``=?`` may start an encoded word, which
    the package decodes and writes again encoded its own way.
    """
    return (
        bool(value)
        and len(name) + 2 + len(value) <= _FOLD_AT
        and value.isascii()
        and value.isprintable()
        and "=?" not in value
    )


def _folded(value: str, name: str) -> str | None:
    """``name: value`` as the ``email`` package folds an unstructured header, or None.

    For printable ASCII words between single spaces, each at most 77 characters, the
    package's folding (``_refold_parse_tree``) comes down to this: the whole value on the
    first line if it fits, else on a line of its own if it fits there, else word by word,
    a word that does not fit starting the next line with the space before it. Anything
    else (a longer word, which it would encode to split) is None.
    """
    if (
        not value
        or not (value.isascii() and value.isprintable())
        or "=?" in value
        or len(name) + 2 > _FOLD_AT
    ):
        return None
    words = value.split(" ")
    if not all(words) or max(map(len, words)) + 1 > _FOLD_AT:
        return None
    if len(name) + 2 + len(value) <= _FOLD_AT:
        return f"{name}: {value}"
    if len(value) + 1 <= _FOLD_AT:
        return f"{name}:{_CRLF} {value}"
    lines = (
        [f"{name}: {words[0]}"] if len(name) + 2 + len(words[0]) <= _FOLD_AT else [f"{name}:", f" {words[0]}"]
    )
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) <= _FOLD_AT:
            lines[-1] += f" {word}"
        else:
            lines.append(f" {word}")  # the space before the word starts the next line
    return _CRLF.join(lines)


def _header_line(name: str, value: str, key: str) -> str | None:
    """The header as reference_email writes it, without the line end; None if not found here."""
    if key in VERBATIM_HEADERS:
        return f"{name}: {value}" if _verbatim_fits(value, name) else None
    if key in _ADDRESS_HEADERS:
        return f"{name}: {value}" if _fits_as_is(value, name) and _PLAIN_MAILBOX.fullmatch(value) else None
    if key == "date":
        return f"{name}: {value}" if _fits_as_is(value, name) else None
    return _folded(value, name)


def _plain_headers(
    rendered: RenderedMessage,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    thread_id: str | None,
    sent_at: datetime,
    extra_headers: dict[str, str],
) -> list[tuple[str, str, str]] | None:
    """reference_email's headers before the MIME ones: name, value as stored, and as written.

    None when any header would be encoded or refused, or is one the ``email`` package
    gives a meaning of its own (a second From, a Content- header, a Bcc...).
    """
    try:
        # What a DateHeader keeps: the date parsed and formatted again
        date = format_datetime(parsedate_to_datetime(format_datetime(sent_at)))
    except ValueError:
        return None
    headers = [
        ("From", clean_header(sender)),
        ("To", clean_header(recipient)),
        ("Subject", clean_header(rendered.subject)),
        ("Date", date),
        ("Message-ID", message_id),
    ]
    if thread_id and thread_id != message_id:
        headers += [("In-Reply-To", thread_id), ("References", thread_id)]
    headers.append(("Auto-Submitted", "auto-generated"))
    for name, value in extra_headers.items():
        key = name.lower()
        if key.startswith("content-") or (key in _REGISTERED and key not in ("reply-to", "message-id")):
            return None
        headers.append((name, value if key in VERBATIM_HEADERS else clean_header(value, limit=900)))
    written: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for name, value in headers:
        key = name.lower()
        if key in seen or not _FIELD_NAME.fullmatch(name):
            return None
        seen.add(key)
        line = _header_line(name, value, key)
        if line is None:
            return None
        written.append((name, value, line))
    return written


def _address_of(mailbox: str) -> str:
    """The address of a mailbox in the ``_PLAIN_MAILBOX`` shape (its address has no ``<``)."""
    return mailbox[mailbox.rindex("<") + 1 : -1] if mailbox.endswith(">") else mailbox


def _quoted_printable(text: str) -> str:
    """``text`` as ``set_content(text, cte="quoted-printable")`` stores it (lines end in ``\\n``).

    That is ``quoprimime.body_encode`` of the lines joined by ``\\n``, which encodes each
    line on its own: so each line is encoded once, and the lines a fan-out's messages
    share (most of a template's) come from a cache.
    """
    lines = text.encode("utf-8").splitlines() or [b""]
    return "".join([_quoted_line(line.decode("latin-1")) for line in lines])


@functools.lru_cache(maxsize=8192)
def _quoted_line(line: str) -> str:
    """One line (no line break in it) as ``quoprimime.body_encode`` writes it, line break included."""
    return quoprimime.body_encode(line + "\n", _FOLD_AT)


_PLAIN_PART = (
    ("Content-Type", 'text/plain; charset="utf-8"'),
    ("Content-Transfer-Encoding", "quoted-printable"),
)
# add_alternative makes the HTML part an EmailMessage of its own, and set_content gives
# every EmailMessage a MIME-Version
_HTML_PART = (
    ("Content-Type", 'text/html; charset="utf-8"'),
    ("Content-Transfer-Encoding", "quoted-printable"),
    ("MIME-Version", "1.0"),
)


def _part(headers: tuple[tuple[str, str], ...], body: str) -> tuple[EmailMessage, str]:
    """A text part and its flattened form."""
    part = EmailMessage(policy=_POLICY)
    for name, value in headers:
        part.set_raw(name, value)
    part.set_payload(body)
    head = "".join(f"{name}: {value}{_CRLF}" for name, value in headers)
    return part, f"{head}{_CRLF}{body.replace(chr(10), _CRLF)}"


def _written(headers: list[tuple[str, str, str]], boundary: str, text: str, html: str) -> ComposedEmail:
    """The multipart/alternative message of ``headers`` and the two bodies, and its text.

    A folded header is stored unfolded: should the message be flattened again, the
    ``email`` package folds it itself, the same way.
    """
    text_part, text_wire = _part(_PLAIN_PART, _quoted_printable(text))
    html_part, html_wire = _part(_HTML_PART, _quoted_printable(html))
    # Stored folded, as a parser would store it; the generator writes it back unchanged
    content_type = f'multipart/alternative;{_CRLF} boundary="{boundary}"'
    headers = [
        *headers,
        ("MIME-Version", "1.0", "MIME-Version: 1.0"),
        ("Content-Type", content_type, f"Content-Type: {content_type}"),
    ]
    wire = (
        "".join(f"{line}{_CRLF}" for _, _, line in headers)
        + f"{_CRLF}--{boundary}{_CRLF}{text_wire}"
        + f"{_CRLF}--{boundary}{_CRLF}{html_wire}"
        + f"{_CRLF}--{boundary}--{_CRLF}"
    )
    values = {name: value for name, value, _ in headers}
    message = ComposedEmail(wire, _address_of(values["From"]), _address_of(values["To"]))
    for name, value, _ in headers:
        message.set_raw(name, value)
    message.set_payload([text_part, html_part])
    message.seal()
    return message


def _shape(message: Message) -> tuple[object, ...]:
    """Everything a message's flattened form depends on, to tell whether it has changed."""
    payload = vars(message)["_payload"]  # get_payload() would parse a header to read it
    parts = tuple(_shape(part) for part in payload) if isinstance(payload, list) else payload
    return (
        message.policy,
        message.get_unixfrom(),
        message.preamble,
        message.epilogue,
        tuple(message.raw_items()),
        parts,
    )


class ComposedEmail(EmailMessage):
    """An email written directly by :func:`build_email`, which keeps the text it was written as.

    Headers and parts are stored the way the ``email`` package stores a parsed message's
    (strings, parsed when read), so it reads like any EmailMessage and flattens to the
    same text. ``as_string()`` without arguments returns that text without flattening
    again for as long as the message is unchanged; once changed, it flattens.
    """

    def __init__(self, wire: str, sender: str, recipient: str) -> None:
        super().__init__(policy=_POLICY)
        self._wire = wire
        self._envelope = (sender, recipient)
        self._as_written: tuple[object, ...] | None = None

    def seal(self) -> None:
        """Take the message as it is now as the one its text was written for."""
        self._as_written = _shape(self)

    def as_string(
        self, unixfrom: bool = False, maxheaderlen: int | None = None, policy: Policy[Any] | None = None
    ) -> str:
        if not unixfrom and maxheaderlen is None and policy is None and _shape(self) == self._as_written:
            return self._wire
        return super().as_string(unixfrom, maxheaderlen, policy)

    def envelope(self) -> tuple[str, list[str]] | None:
        """The sender and recipients ``aiosmtplib`` reads off it, while it is unchanged; else None.

        From and To each hold one mailbox whose address is a plain dot-atom
        ``local@domain``, written as it is, and there is no Sender, Cc, Bcc or Resent-
        header: the envelope is those two addresses.
        """
        if _shape(self) != self._as_written:
            return None
        sender, recipient = self._envelope
        return sender, [recipient]


def written_header(message: Message, name: str) -> str | None:
    """The value of header ``name`` as the message holds it, without parsing it again
    (``message[name]`` parses it each time it is read); None if it has none."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def message_id_for(key: str, domain: str) -> str:
    """A deterministic Message-ID: the same key always gives the same id.

    Both halves are reduced to the characters a dot-atom allows, so that the id never
    needs encoding; an internationalised domain is written in its ASCII (IDNA) form.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", ".", key)
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_domain = domain
    ascii_domain = re.sub(r"[^A-Za-z0-9.-]", "-", ascii_domain).strip(".")[:253] or "amends.invalid"
    return f"<{safe}@{ascii_domain}>"

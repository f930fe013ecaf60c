"""Text at the edges: what may come in, and how anything stored is shown safely.

Python strings can hold lone surrogates (``"\\ud800"``: from a JSON escape, or from bytes
read with ``surrogateescape``) that no UTF-8 encoder accepts; such text is refused where
it enters (:func:`surrogate_at`) and replaced on the way out (:func:`scrub`), so that a
value already stored can never make a page, a response or a command fail. Bidirectional
control characters can make a header read differently than it is (``gnp.exe`` shown as
``exe.png``); :func:`bidi_control_in` finds them and :func:`strip_bidi` removes them.
"""

from __future__ import annotations

import codecs
import re

__all__ = [
    "BIDI_CONTROLS",
    "bidi_control_in",
    "decode_utf8",
    "scrub",
    "strip_bidi",
    "surrogate_at",
]

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""Arabic letter mark, LRM, RLM, the embeddings and overrides (U+202A-E), the isolates (U+2066-9)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def surrogate_at(text: str) -> int | None:
    """Where the first lone surrogate in ``text`` is, or None when it encodes as UTF-8.

    A well-formed pair never appears in a Python string (it is one code point), so any
    surrogate code point found is a lone one.
    """
    found = _SURROGATE.search(text)
    return found.start() if found else None


def scrub(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so that it always encodes."""
    return _SURROGATE.sub("\ufffd", text)


def bidi_control_in(text: str) -> str | None:
    """The first bidirectional control character in ``text`` as ``U+202E``, or None."""
    found = _BIDI.search(text)
    return f"U+{ord(found.group()):04X}" if found else None


def strip_bidi(text: str) -> str:
    return _BIDI.sub("", text)


def decode_utf8(data: bytes) -> str:
    """``data`` as text; ValueError with a one-line reason when it is not UTF-8.

    A UTF-8 byte order mark is allowed and dropped; UTF-16 and UTF-32 are named as such,
    since that is the usual cause (a file saved by an editor or PowerShell).
    """
    every_other_nul = data[1:4:2] == b"\0\0" or data[0:3:2] == b"\0\0"  # ASCII as UTF-16 without a BOM
    if data.startswith(_UTF16_BOMS) or every_other_nul:
        raise ValueError("is UTF-16 or UTF-32 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None

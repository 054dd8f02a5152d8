"""Stored text made safe to print on a terminal: pure.

Reasons, actors, check names and details come from operators and agents and
are stored as given; printed raw, an ESC sequence in one could rewrite the
operator's screen (or hide a line). Human output passes them through
``printable``; JSON output needs nothing more than JSON's own escaping.
"""

from __future__ import annotations


def _escape(ch: str) -> str:
    out = repr(ch)[1:-1]  # repr escapes exactly the characters str.isprintable() refuses
    return out if out != ch else f"\\u{ord(ch):04x}"


def printable(value: object, width: int | None = None) -> str:
    """``value`` as text with every non-printable character (C0/C1 controls, ESC, DEL, line breaks, bidi and
    other format characters) escaped as Python does (``\\x1b``, ``\\n``, ``\\u202e``); other text, accents
    and scripts included, unchanged. With ``width``, cut to that many characters (``…`` at the end)."""
    text = value if isinstance(value, str) else str(value)
    if width is not None and len(text) > width * 4:
        text = text[: width * 4]  # escaping can only lengthen: never escape a megabyte to print 80 characters
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
    if width is not None and len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return text

"""JSON in pieces: the same text and the same values as ``json``, but no single call into C for a big document.

``json.loads`` and ``json.dumps`` each handle a whole document in one C call, and a C call never lets
another thread have the interpreter. A routing table at 10,000 sites is 4 MB of JSON: 40-70 ms to parse and
80-100 ms to write here, during which a DNS server's UDP threads answer nothing (they wait for the
interpreter), at every table it receives and persists; a controller's event loop likewise. Here the
containers of the top ``depth`` levels are walked in Python, and each value below them goes through the
same C scanner or encoder on its own, so the interpreter can switch threads between values. The results
are those of ``json`` (tests/test_jsonchunks.py: a property over random documents, valid or not).
"""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Callable, Mapping
from json.decoder import JSONDecodeError
from typing import Any

# The top levels walked in Python: the table's keys (1), then each service and each site (2), each parsed or
# written by one C call (a service with 250 geos: ~200 KB, 3-4 ms); one level more would walk every site's
# fields in Python, four times the CPU of json.loads for no shorter hold worth having.
DEPTH = 2

_decoder = json.JSONDecoder()
# json's own C scanner and string parser, and its whitespace rule (typeshed names none of them)
_scan: Callable[[str, int], tuple[Any, int]] = getattr(_decoder, "scan_once")  # noqa: B009
scanstring: Callable[[str, int], tuple[str, int]] = getattr(json.decoder, "scanstring")  # noqa: B009
_WHITESPACE = re.compile(r"[ \t\n\r]*", re.VERBOSE | re.MULTILINE | re.DOTALL)  # json.decoder.WHITESPACE


def _skip(s: str, idx: int, _match: Any = _WHITESPACE.match) -> int:
    """The index after the whitespace at ``idx`` (the pattern matches the empty string: never None)."""
    return int(_match(s, idx).end())
# json.dumps(obj, sort_keys=True, separators=(",", ":")): what the tables and the stored JSON are written with
_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_encode = _encoder.encode


def loads(doc: str | bytes | bytearray, depth: int = DEPTH, deeper: Mapping[str, int] | None = None) -> Any:
    """``json.loads(doc)``, raising ``json.JSONDecodeError`` (a ValueError) where it does.

    ``deeper``: when the document is an object, the depth of its members of these names, in place of
    ``depth - 1`` (a table's services are walked down to each route, its sites are not)."""
    if isinstance(doc, (bytes, bytearray)):
        doc = doc.decode(json.detect_encoding(doc), "surrogatepass")
    if doc.startswith("\ufeff"):
        raise JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", doc, 0)
    start = _skip(doc, 0)
    if deeper and depth > 0 and doc[start:start + 1] == "{":
        value, end = _object(doc, start + 1, depth - 1, deeper)
    else:
        value, end = _value(doc, start, depth)
    end = _skip(doc, end)
    if end != len(doc):
        raise JSONDecodeError("Extra data", doc, end)
    return value


def _value(s: str, idx: int, depth: int) -> tuple[Any, int]:
    if depth > 0:
        c = s[idx:idx + 1]
        if c == "{":
            return _object(s, idx + 1, depth - 1)
        if c == "[":
            return _array(s, idx + 1, depth - 1)
    try:
        return _scan(s, idx)
    except StopIteration as err:
        raise JSONDecodeError("Expecting value", s, err.value) from None


def _object(s: str, idx: int, depth: int, deeper: Mapping[str, int] | None = None) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    idx = _skip(s, idx)
    if s[idx:idx + 1] == "}":
        return out, idx + 1
    while True:
        if s[idx:idx + 1] != '"':
            raise JSONDecodeError("Expecting property name enclosed in double quotes", s, idx)
        key, idx = scanstring(s, idx + 1)
        idx = _skip(s, idx)
        if s[idx:idx + 1] != ":":
            raise JSONDecodeError("Expecting ':' delimiter", s, idx)
        idx = _skip(s, idx + 1)
        out[key], idx = _value(s, idx, deeper.get(key, depth) if deeper else depth)
        closed, idx = _next(s, idx, "}")
        if closed:
            return out, idx


def _array(s: str, idx: int, depth: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    idx = _skip(s, idx)
    if s[idx:idx + 1] == "]":
        return out, idx + 1
    while True:
        value, idx = _value(s, idx, depth)
        out.append(value)
        closed, idx = _next(s, idx, "]")
        if closed:
            return out, idx


def _next(s: str, idx: int, close: str) -> tuple[bool, int]:
    """After a member: (True, past ``close``) at the container's end, else (False, the next member's start)."""
    idx = _skip(s, idx)
    c = s[idx:idx + 1]
    if c == close:
        return True, idx + 1
    if c != ",":
        raise JSONDecodeError("Expecting ',' delimiter", s, idx)
    return False, _skip(s, idx + 1)


class Raw(str):
    """JSON text written as it is where ``dumps`` meets it (text ``dumps`` or ``json`` wrote before)."""

    __slots__ = ()


def dumps(obj: Any, depth: int = DEPTH) -> str:
    """``json.dumps(obj, sort_keys=True, separators=(",", ":"))``, character for character."""
    parts: list[str] = []
    _emit(obj, depth, parts)
    return "".join(parts)


def _emit(obj: Any, depth: int, parts: list[str]) -> None:
    kind = type(obj)
    if kind is Raw:
        parts.append(obj)
    elif depth > 0 and kind is dict and all(type(k) is str for k in obj):
        # (keys of other types json coerces to strings before sorting: left to it, whole)
        if not obj:
            parts.append("{}")
            return
        sep = "{"
        for key in sorted(obj):
            parts.append(sep)
            parts.append(_encode(key))
            parts.append(":")
            _emit(obj[key], depth - 1, parts)
            sep = ","
        parts.append("}")
    elif depth > 0 and (kind is list or kind is tuple):
        if not obj:
            parts.append("[]")
            return
        sep = "["
        for item in obj:
            parts.append(sep)
            _emit(item, depth - 1, parts)
            sep = ","
        parts.append("]")
    else:
        parts.append(_encode(obj))

"""Requests checked against the JSON Schemas the OpenAPI document publishes (pure).

One schema both describes a request (``openapi.py``) and checks it (here), so
the document cannot promise what the server refuses or the other way round.
This is the subset of JSON Schema 2020-12 that ``schemas.py`` uses: ``type``
(one or a list), ``enum``, ``minLength``/``maxLength``/``pattern``,
``minimum``/``maximum``, ``properties``/``required``/``additionalProperties``/
``propertyNames``/``minProperties``/``maxProperties``, ``items``/``maxItems``.
A keyword outside it is a programming error (``KeyError`` at the first check).

What a refusal says (docs/rest-api.md, "Errors"): the shape is wrong (a
wrong type, an unknown or a missing field, text that is not Unicode) → 400;
the shape is right but a value is not acceptable (out of bounds, not one of
the known ids, not matching the pattern) → 422. Each names the field as
``ramp.step``, ``evacuate[0].region`` or ``weights.us-east-1``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from steering import limits

KEYWORDS = frozenset({"type", "enum", "minLength", "maxLength", "pattern", "minimum", "maximum", "properties",
                    "required", "additionalProperties", "propertyNames", "minProperties", "maxProperties",
                    "items", "maxItems", "description", "default", "title"})

_TYPES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
          "object": "an object", "array": "an array", "null": "null"}


class Invalid(Exception):
    """A request the schema refuses: HTTP ``status`` (400 or 422), a short ``code``, the ``field``."""

    def __init__(self, status: int, code: str, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.status, self.code, self.field, self.problem = status, code, field, problem


def _is(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "number":
        return True
    # JSON Schema: an integer is any number without a fractional part (1.0 included)
    return isinstance(value, int) or (math.isfinite(value) and value.is_integer())


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def check(schema: Mapping[str, Any], value: Any, field: str = "") -> Any:
    """``value`` if ``schema`` accepts it (integral floats of an ``integer`` as int), else ``Invalid``."""
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise KeyError(f"schema keyword(s) not supported by steering.http.validate: {sorted(unknown)}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        kind = next((k for k in kinds if _is(k, value)), None)
        if kind is None:
            wanted = " or ".join(_TYPES[k] for k in kinds)
            raise Invalid(400, "wrong_type", field, f"{limits.show(value)} is not {wanted}")
        if kind == "integer" and isinstance(value, float):
            value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        known = ", ".join(str(v) for v in schema["enum"])
        raise Invalid(422, "invalid_value", field, f"{limits.show(value)} is not one of: {limits.clip(known, 400)}")
    if isinstance(value, str):
        _text(schema, value, field)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _number(schema, value, field)
    elif isinstance(value, dict):
        value = _object(schema, value, field)
    elif isinstance(value, list):
        if len(value) > schema.get("maxItems", math.inf):
            raise Invalid(422, "invalid_value", field, f"{len(value)} entries; at most {schema['maxItems']}")
        items = schema.get("items")
        if items is not None:
            value = [check(items, v, f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def text(value: str, field: str) -> str:
    """``value`` if it is valid Unicode (JSON can carry a lone surrogate, which cannot be stored), else 400."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(400, "invalid_text", field, "not valid Unicode (a lone surrogate)") from None
    return value


def _text(schema: Mapping[str, Any], value: str, field: str) -> None:
    text(value, field)
    if len(value) < schema.get("minLength", 0):
        raise Invalid(422, "invalid_value", field, "empty" if not value else
                      f"{len(value)} characters; at least {schema['minLength']}")
    if len(value) > schema.get("maxLength", math.inf):
        raise Invalid(422, "invalid_value", field, f"{len(value)} characters; at most {schema['maxLength']}")
    pattern = schema.get("pattern")
    if pattern is not None and not re.search(pattern, value):
        raise Invalid(422, "invalid_value", field, f"{limits.show(value)} does not match {pattern}")


def _number(schema: Mapping[str, Any], value: float, field: str) -> None:
    if not math.isfinite(value):  # 1e400 in JSON reads as infinity
        raise Invalid(422, "invalid_value", field, f"{limits.show(value)} is not a finite number")
    lo, hi = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
    if not lo <= value <= hi:
        raise Invalid(422, "invalid_value", field, f"{value:g} is outside [{lo:g}, {hi:g}]")


def _object(schema: Mapping[str, Any], value: dict[str, Any], field: str) -> dict[str, Any]:
    props: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    names = schema.get("propertyNames")
    for name in value:
        text(name, field)
        if name not in props and extra is False:
            raise Invalid(400, "unknown_field", _join(field, name),
                          "unknown field" + (f" (known: {', '.join(props)})" if props else ""))
        if names is not None and name not in props:
            try:
                check(names, name, _join(field, name))
            except Invalid as exc:
                raise Invalid(exc.status, exc.code, exc.field, f"as a key: {exc.problem}") from None
    for name in schema.get("required", ()):
        if name not in value:
            raise Invalid(400, "missing_field", _join(field, name), "missing")
    count = len(value)
    if count < schema.get("minProperties", 0):
        raise Invalid(422, "invalid_value", field, "empty" if not count else
                      f"{count} entries; at least {schema['minProperties']}")
    if count > schema.get("maxProperties", math.inf):
        raise Invalid(422, "invalid_value", field, f"{count} entries; at most {schema['maxProperties']}")
    out = {}
    for name, v in value.items():
        sub = props.get(name, extra if isinstance(extra, Mapping) else None)
        out[name] = check(sub, v, _join(field, name)) if sub is not None else v
    return out

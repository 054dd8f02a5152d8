"""Structured logs for every daemon: one JSON (or key=value) line per event.

Call ``setup()`` once at start; then ``get(__name__).info("event", region=..., site=...)``.
Every event names what it is about (region, site, geo, service), so logs of
many replicas can be filtered by the thing that went wrong.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog


def setup(level: str | None = None, json: bool | None = None, component: str = "") -> None:
    level_name = (level or os.environ.get("STEERING_LOG_LEVEL", "info")).upper()
    as_json = json if json is not None else os.environ.get("STEERING_LOG_FORMAT", "console") == "json"
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level_name, logging.INFO), format="%(message)s")
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if component:
        structlog.contextvars.bind_contextvars(component=component)
    processors.append(structlog.processors.JSONRenderer() if as_json
                      else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        # one write per line (PrintLogger writes the line and its newline separately, so lines from
        # processes sharing stderr, such as DNS workers, could interleave mid-line)
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str = "steering") -> Any:
    return structlog.get_logger(name)

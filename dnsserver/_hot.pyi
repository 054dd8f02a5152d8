"""Types of dnsserver/_hot.c: the DNS hot path in C."""

from collections.abc import Callable
from typing import Any

class Answer:
    def __init__(self, cur: list[Any], shapes: dict[bytes, tuple[Any, ...]], src: dict[Any, Any],
                 source_key: Callable[[Any], Any], gkey: Callable[..., Any], default: int,
                 general: Callable[[bytes, Any, int], bytes | None], limiter_hot: tuple[Any, ...] | None,
                 rl_check: Callable[..., bytes | None] | None, responses: object) -> None: ...
    def __call__(self, query: bytes, host: Any, tcp: int) -> bytes | None: ...
    def set_shapes(self, shapes: dict[bytes, tuple[Any, ...]]) -> None: ...
    def set_geomap(self, gkey: Callable[..., Any], src: dict[Any, Any], default: int,
                   shapes: dict[bytes, tuple[Any, ...]]) -> None: ...

def serve(fd: int, v6: bool, answer: Callable[[bytes, Any, int], bytes | None],
          slow: Callable[[bytes, str, int], bytes | None], text: Callable[[Any], str],
          tick: Callable[[int], None] | None, limit: Callable[..., bytes | None] | None, stop: list[bool],
          timings: Any = None) -> None: ...
LATENCY_BOUNDS: tuple[float, ...]

def crc32(data: bytes, value: int = 0) -> int: ...

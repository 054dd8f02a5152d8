"""How the controller's cyclic garbage collector runs, and what it costs (``steering_gc_seconds_total``).

With CPython's defaults (a collection every 700 net allocations of container objects) a controller at 5,000
sites reporting every second ran about 35 young collections a second and a full one every three seconds or
so; the full ones walked ~175,000 objects for ~0.1 s each while holding the interpreter, the report path
and the leader's plan waiting behind them: 50 ms of every second, a tenth of the controller's CPU
(``bench/ingest.py`` with a ``gc.callbacks`` timer). Nearly everything the report path and the leader allocate
is freed by reference counting as soon as it is dropped (reports, acks, merged health, the table's pieces),
so a collection almost never finds cyclic garbage there; the cycles that do occur (asyncio's exceptions and
their tracebacks) are few. So, once the controller has started:

- what start-up built (the config, the topology's derived indexes, modules) is collected once and frozen
  (``gc.freeze``): later collections never walk it again;
- a young collection waits for 50,000 net container allocations instead of 700. Cyclic garbage is still
  collected, only in larger batches (at most that many objects' worth waits), and a full collection still
  follows the interpreter's own rule (a quarter more long-lived objects than at the last one).

Measured with it: no full collection and two young ones in 40 s of the same bench.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Counter

YOUNG_THRESHOLD = 50_000
GC_SECONDS = Counter("steering_gc_seconds_total", "Time the cyclic garbage collector held the interpreter",
                     ["generation"])

_started: list[float] = [0.0]


def _timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        GC_SECONDS.labels(generation=str(info.get("generation", ""))).inc(time.perf_counter() - _started[0])


def settle_after_start() -> None:
    """Freeze what start-up built, collect in larger batches from now on, and time every collection."""
    if _timer not in gc.callbacks:
        gc.callbacks.append(_timer)
    gc.collect()  # what start-up left behind goes first (timed): cycles alive at the freeze would stay for good
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)

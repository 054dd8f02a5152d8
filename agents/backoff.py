"""Reconnect delays: exponential, capped, with jitter (pure).

"Equal jitter": half the delay is fixed and half random, so one agent never
retries faster than half its schedule (no flooding a controller that is
down) while a fleet that lost the same controller does not come back in
lockstep.
"""

from __future__ import annotations

import random


def delay(attempt: int, initial: float, maximum: float, multiplier: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (0-based); always in [cap/2, cap]."""
    cap = min(maximum, initial * multiplier ** min(attempt, 64))
    return cap / 2 + rng.uniform(0, cap / 2)

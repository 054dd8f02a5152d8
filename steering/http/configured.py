"""What the configuration says, for the console (``GET /api/v1/topology``): pure.

The status holds what is observed (reported capacity, health, weights above
zero); the console also needs what is configured, to draw every target of a
service even at weight 0, and the policy's watermark and hard limit against
which it draws utilization.
"""

from __future__ import annotations

from typing import Any

from steering.config import Config


def topology(config: Config, replica: str, auth: bool) -> dict[str, Any]:
    p = config.policy
    return {
        "replica": replica,
        "auth": auth,
        "regions": [{"name": r.id, "capacity": r.capacity} for r in config.regions],
        "sites": [{"name": s.id, "region": s.region, "capacity": s.capacity} for s in config.sites],
        "services": [{"name": s.name, "targets_kind": s.targets, "targets": list(s.answers),
                      "geos": [g.id for g in config.geos]} for s in config.services],
        "geos": [g.id for g in config.geos],
        "policy": {"watermark": p.watermark, "hard_limit": p.hard_limit, "max_shift": p.max_shift,
                   "step_seconds": p.step_seconds, "min_serving_regions": p.min_serving_regions},
    }

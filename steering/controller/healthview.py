"""One replica's view of the agents that report to it: pure bookkeeping, no I/O.

It answers two questions the ingest asks: does this report change the site's
state enough to be written to etcd (a status change, or capacity or load
moving beyond ``band``)? And which sites has no agent reported for within
the silence timeout (their record must go, so the leader sees them silent)?
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steering.model import TargetHealth


def material_change(old: TargetHealth | None, new: TargetHealth, band: float) -> bool:
    if old is None or old.status != new.status:
        return True
    if (old.capacity is None) != (new.capacity is None):
        return True
    scale = max(old.capacity or 0.0, new.capacity or 0.0, old.load or 0.0, new.load or 0.0, 1.0)
    if old.capacity is not None and new.capacity is not None and abs(new.capacity - old.capacity) > band * scale:
        return True
    return abs((new.load or 0.0) - (old.load or 0.0)) > band * scale


@dataclass
class _Site:
    # What we last handed to the writer: etcd holds it, or will (the writer retries until it does).
    # Comparing with it, not with what is already written, keeps a slow etcd from turning every report
    # that arrives during a write into one more write.
    queued: TargetHealth | None = None
    last_report: float = 0.0
    latest: TargetHealth | None = None


@dataclass
class HealthView:
    band: float
    silence_seconds: float
    # Keyed by reporter slot: a configured site id, or ``site~observer`` for a configured observer of it
    # (``vantage.slot``; reports are validated first), so bounded by the config.
    # Sequence numbers are not kept here: they belong to the stream that carries them (ingest.Session).
    sites: dict[str, _Site] = field(default_factory=dict)

    def observe(self, site: str, health: TargetHealth, now: float) -> TargetHealth | None:
        """Record a report; return what to write to etcd, or None when nothing changed enough."""
        entry = self.sites.setdefault(site, _Site())
        entry.last_report = now
        entry.latest = health
        if material_change(entry.queued, health, self.band):
            entry.queued = health
            return health
        return None

    def silent(self, now: float) -> list[str]:
        """Sites whose last report here is older than the silence timeout; forgets them."""
        gone = [s for s, e in self.sites.items() if now - e.last_report > self.silence_seconds]
        for s in gone:
            del self.sites[s]
        return sorted(gone)

    def latest(self, site: str) -> TargetHealth | None:
        entry = self.sites.get(site)
        return entry.latest if entry else None

"""Merge per-replica health records into one state per site: pure.

Each replica writes ``health/<site>@<replica>`` for the agents connected to
it, bound to its own lease, so replicas never overwrite each other: an agent
that fails over from replica A to B leaves A's record to expire on A's
silence timeout (or with A's lease) while B's record is already there. The
newest record wins. A site with no record is silent, except during the
grace period after a leader starts, when it is unknown (agents are still
connecting; refusing everything at start-up would be an outage of our own).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from steering.model import TargetHealth

SEPARATOR = "@"


def record_key(site: str, replica: str) -> str:
    return f"{site}{SEPARATOR}{replica}"


def split_key(key: str) -> tuple[str, str]:
    site, _, replica = key.partition(SEPARATOR)
    return site, replica


def merge(records: Mapping[str, TargetHealth], known: Iterable[str], silent_after_grace: bool,
          previous: Mapping[str, str] | None = None) -> dict[str, TargetHealth]:
    """``records`` keyed ``site@replica`` -> one TargetHealth per known site.

    ``previous`` is each site's health in the last published table: during the
    grace period a site that table already had silent stays silent, so a
    leader change never sends traffic back to a site nobody hears from.
    """
    best: dict[str, TargetHealth] = {}
    for key, health in records.items():
        site, _ = split_key(key)
        cur = best.get(site)
        if cur is None or (health.updated_at, health.status) > (cur.updated_at, cur.status):
            best[site] = health
    out: dict[str, TargetHealth] = {}
    for site in known:
        if site in best:
            out[site] = best[site]
        elif silent_after_grace or (previous or {}).get(site) == "silent":
            out[site] = TargetHealth(status="silent", detail="no agent has reported within the silence timeout")
        else:
            out[site] = TargetHealth(status="unknown", detail="waiting for a first report")
    return out

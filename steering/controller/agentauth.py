"""Which sites the caller of a ``HealthService.Report`` stream may report health for.

A credential names its sites:
- a bearer token (``auth`` on): the ``sites`` of its entry in the tokens file
  (``steering.auth``);
- a client certificate (``tls.client_ca`` set): its URI SANs whose path ends
  in ``/site/<id>``, e.g. ``spiffe://steering.example/site/us-east-1``
  (``/site/*``: any site). The scheme and authority are not checked: the
  client CA is the trust anchor, so dedicate one to the control plane.

When both are on, both must allow the site. With neither (the demo, on
loopback), anyone may report any site. The rules are pure; ``grant_for``
reads the call's token and peer certificate.

An observer (``role: observer``: an agent probing targets from outside) is
named the same way, by the observer ids it may speak as: the token's
``observers`` in the tokens file, or URI SANs ending in ``/observer/<id>``.
Which targets an observer may report is the config's ``observers[].targets``
(``reports.validate`` refuses the rest), so an observer's credential never
lets it report as a site's own agent, nor a site's credential as an observer
(docs/health.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc

from steering import auth
from steering.config import Config

SITE_SEGMENT = "site"
OBSERVER_SEGMENT = "observer"


@dataclass(frozen=True)
class Grant:
    """What one stream's credentials allow. ``sites`` None: any site; ``who`` names them for logs."""

    who: str
    sites: frozenset[str] | None
    why: str = ""  # when nothing is allowed: what is missing
    observers: frozenset[str] | None = None  # observer ids it may speak as; None: any

    def allows(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def allows_observer(self, observer: str) -> bool:
        return self.observers is None or observer in self.observers


OPEN = Grant(who="anonymous", sites=None)


def _named_by_uris(uris: Iterable[str], segment: str) -> frozenset[str] | None:
    out: set[str] = set()
    for uri in uris:
        try:
            segments = urlsplit(uri).path.split("/")
        except ValueError:
            continue
        if len(segments) >= 2 and segments[-2] == segment and segments[-1]:
            if segments[-1] == auth.ANY_SITE:
                return None
            out.add(segments[-1])
    return frozenset(out)


def sites_of_uris(uris: Iterable[str]) -> frozenset[str] | None:
    """Sites named by certificate URI SANs (``.../site/<id>``); None if one says ``/site/*``."""
    return _named_by_uris(uris, SITE_SEGMENT)


def observers_of_uris(uris: Iterable[str]) -> frozenset[str] | None:
    """Observer ids named by certificate URI SANs (``.../observer/<id>``); None if one says ``/observer/*``."""
    return _named_by_uris(uris, OBSERVER_SEGMENT)


def combine(grants: list[Grant]) -> Grant:
    """Every credential must allow a site: the intersection (an empty list: open)."""
    if not grants:
        return OPEN
    sites: frozenset[str] | None = None
    observers: frozenset[str] | None = None
    for g in grants:
        if g.sites is not None:
            sites = g.sites if sites is None else sites & g.sites
        if g.observers is not None:
            observers = g.observers if observers is None else observers & g.observers
    why = "; ".join(g.why for g in grants if g.why)
    return Grant(who=" + ".join(g.who for g in grants), sites=sites, why=why, observers=observers)


def token_grant(token: auth.Token | None) -> Grant:
    if token is None:  # auth on but the interceptor did not run: allow nothing (fail closed)
        return Grant(who="no token", sites=frozenset(), why="no authenticated token", observers=frozenset())
    return Grant(who=f"token {token.name}", sites=token.sites, observers=token.observers)


def certificate_grant(auth_context: dict[str, list[bytes]]) -> Grant:
    uris = [u.decode(errors="replace") for u in auth_context.get("peer_uri", [])]
    names = auth_context.get("x509_common_name") or auth_context.get("x509_subject") or [b"?"]
    who = f"certificate {names[0].decode(errors='replace')}"
    sites = sites_of_uris(uris)
    observers = observers_of_uris(uris)
    if not uris and "x509_pem_cert" not in auth_context:
        return Grant(who="no certificate", sites=frozenset(), why="no client certificate", observers=frozenset())
    why = "" if sites is None or sites or observers is None or observers else \
        "the client certificate names no site (URI SAN .../site/<id>) nor observer (.../observer/<id>)"
    return Grant(who=who, sites=sites, why=why, observers=observers)


def grant_for(config: Config, context: grpc.aio.ServicerContext[Any, Any]) -> Grant:
    """The sites this call's credentials allow, under the config's ``auth`` and ``tls`` sections."""
    grants = []
    if config.auth is not None:
        grants.append(token_grant(auth.caller()))
    if config.tls is not None and config.tls.client_ca is not None:
        # gRPC documents the values as iterables of bytes (lists in practice); certificate_grant indexes them
        grants.append(certificate_grant({k: list(v) for k, v in context.auth_context().items()}))
    return combine(grants)

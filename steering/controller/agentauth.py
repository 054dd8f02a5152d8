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


@dataclass(frozen=True)
class Grant:
    """What one stream's credentials allow. ``sites`` None: any site; ``who`` names them for logs."""

    who: str
    sites: frozenset[str] | None
    why: str = ""  # when nothing is allowed: what is missing

    def allows(self, site: str) -> bool:
        return self.sites is None or site in self.sites


OPEN = Grant(who="anonymous", sites=None)


def sites_of_uris(uris: Iterable[str]) -> frozenset[str] | None:
    """Sites named by certificate URI SANs (``.../site/<id>``); None if one says ``/site/*``."""
    out: set[str] = set()
    for uri in uris:
        try:
            segments = urlsplit(uri).path.split("/")
        except ValueError:
            continue
        if len(segments) >= 2 and segments[-2] == SITE_SEGMENT and segments[-1]:
            if segments[-1] == auth.ANY_SITE:
                return None
            out.add(segments[-1])
    return frozenset(out)


def combine(grants: list[Grant]) -> Grant:
    """Every credential must allow a site: the intersection (an empty list: open)."""
    if not grants:
        return OPEN
    sites: frozenset[str] | None = None
    for g in grants:
        if g.sites is not None:
            sites = g.sites if sites is None else sites & g.sites
    why = "; ".join(g.why for g in grants if g.why)
    return Grant(who=" + ".join(g.who for g in grants), sites=sites, why=why)


def token_grant(token: auth.Token | None) -> Grant:
    if token is None:  # auth on but the interceptor did not run: allow nothing (fail closed)
        return Grant(who="no token", sites=frozenset(), why="no authenticated token")
    return Grant(who=f"token {token.name}", sites=token.sites)


def certificate_grant(auth_context: dict[str, list[bytes]]) -> Grant:
    uris = [u.decode(errors="replace") for u in auth_context.get("peer_uri", [])]
    names = auth_context.get("x509_common_name") or auth_context.get("x509_subject") or [b"?"]
    who = f"certificate {names[0].decode(errors='replace')}"
    sites = sites_of_uris(uris)
    if not uris and "x509_pem_cert" not in auth_context:
        return Grant(who="no certificate", sites=frozenset(), why="no client certificate")
    why = "" if sites is None or sites else "the client certificate names no site (URI SAN .../site/<id>)"
    return Grant(who=who, sites=sites, why=why)


def grant_for(config: Config, context: grpc.aio.ServicerContext[Any, Any]) -> Grant:
    """The sites this call's credentials allow, under the config's ``auth`` and ``tls`` sections."""
    grants = []
    if config.auth is not None:
        grants.append(token_grant(auth.caller()))
    if config.tls is not None and config.tls.client_ca is not None:
        # gRPC documents the values as iterables of bytes (lists in practice); certificate_grant indexes them
        grants.append(certificate_grant({k: list(v) for k, v in context.auth_context().items()}))
    return combine(grants)

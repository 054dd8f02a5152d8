"""A Route 53 on loopback for ``steering demo --route53`` (and the tests): moto's server, patched.

moto is a development dependency (``pip install -e '.[dev]'``), imported only
here and only when asked for. Its server runs in threads of the calling
process on 127.0.0.1 and a free port; ``FakeRoute53.start`` creates a hosted
zone in it with dummy credentials, and ``env`` is what the processes that talk
to it (the demo's controllers, ``steerctl route53 plan``) need in their
environment, so nobody's real AWS credentials are ever read for it.

moto 5.2.5 has two bugs that matter to the sink (docs/dependencies.md), patched
in this process by ``patch_moto``: a DELETE with a SetIdentifier removes every
record in the zone with that identifier, whatever its name; and a CREATE
identical to an earlier one is refused as "already exists" even after the
record was deleted. Patched, a delete touches only the record named and a
CREATE fails only if that record exists, as on AWS.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

MOTO_PIN = "moto==5.2.5"  # the dev extra's pin (pyproject.toml)
# Dummy credentials: moto accepts any; the processes that talk to it get these instead of the user's.
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_SESSION_TOKEN": "demo",
            "AWS_DEFAULT_REGION": "us-east-1"}

_patched = False


class MotoMissing(RuntimeError):
    """moto (a development dependency) is not installed."""


class _Ident(str):
    """A SetIdentifier that remembers its record's name and type (for the patched delete)."""

    name: str
    rtype: str


def patch_moto() -> None:
    """Fix moto's DELETE-by-SetIdentifier and repeated-CREATE bugs in this process (idempotent)."""
    global _patched
    if _patched:
        return
    from moto.route53 import models
    from moto.route53.exceptions import ResourceRecordAlreadyExists

    original_change = models.Route53Backend.change_resource_record_sets

    def change_resource_record_sets(self: Any, zoneid: str, change_list: list[dict[str, Any]]) -> None:
        zone = self.get_hosted_zone(zoneid)
        present = {(r.name, r.type, r.set_identifier or "") for r in zone.rrsets}
        for change in change_list:
            rrset = change.get("ResourceRecordSet", {})
            key = (rrset.get("Name", "").rstrip(".") + ".", rrset.get("Type"), rrset.get("SetIdentifier", ""))
            if change.get("Action") == "CREATE":
                # AWS: CREATE fails only if this very record exists (after earlier changes of the batch).
                # moto instead refuses any CREATE it has seen before while anything follows it in the zone.
                if key in present:
                    raise ResourceRecordAlreadyExists(name=key[0], _type=str(key[1]))
                present.add(key)
                change["_nonce"] = uuid.uuid4().hex  # defeats moto's history-based check
            elif change.get("Action") == "DELETE":
                present.discard(key)
            if change.get("Action") == "DELETE" and "SetIdentifier" in rrset:
                ident = _Ident(rrset["SetIdentifier"])
                ident.name = rrset["Name"].rstrip(".") + "."
                ident.rtype = rrset["Type"]
                rrset["SetIdentifier"] = ident
        original_change(self, zoneid, change_list)

    def delete_rrset_by_id(self: Any, set_identifier: str) -> None:
        if isinstance(set_identifier, _Ident):
            self.rrsets = [r for r in self.rrsets if not (
                r.set_identifier == set_identifier and r.name == set_identifier.name
                and r.type == set_identifier.rtype)]
        else:
            self.rrsets = [r for r in self.rrsets if r.set_identifier != set_identifier]

    # Replacing moto's methods is the point of this patch (moto ships types, which forbid it).
    models.Route53Backend.change_resource_record_sets = change_resource_record_sets  # type: ignore[method-assign]
    models.FakeZone.delete_rrset_by_id = delete_rrset_by_id  # type: ignore[method-assign]
    _patched = True


def moto_missing() -> str | None:
    """Why moto's server cannot run here (how to install it), or None when it can."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        return (f"moto is not installed ({exc.name or exc} is missing): it is a development dependency; install "
                f"it with `.venv/bin/pip install -e '.[dev]'` (or `pip install {MOTO_PIN} flask flask-cors`)")
    return None


class MotoRoute53:
    """moto's server (all services, we use Route 53) on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        missing = moto_missing()
        if missing:
            raise MotoMissing(missing)
        from moto.server import ThreadedMotoServer

        patch_moto()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
        self.url = ""

    def start(self) -> MotoRoute53:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()


@dataclass
class FakeRoute53:
    """moto's server with one hosted zone: what ``steering demo --route53`` points the leader's sink at."""

    server: MotoRoute53
    zone_name: str
    zone_id: str = ""
    env: dict[str, str] = field(default_factory=lambda: dict(FAKE_ENV))

    @classmethod
    def start(cls, zone_name: str) -> FakeRoute53:
        fake = cls(MotoRoute53().start(), zone_name)
        try:
            fake.zone_id = fake.client().create_hosted_zone(
                Name=zone_name, CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"].rsplit("/", 1)[-1]
        except Exception:
            fake.stop()
            raise
        return fake

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> Any:
        """A boto3 Route 53 client of the fake, with the dummy credentials (never the user's)."""
        import boto3

        return boto3.session.Session(aws_access_key_id=FAKE_ENV["AWS_ACCESS_KEY_ID"],
                                     aws_secret_access_key=FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
                                     aws_session_token=FAKE_ENV["AWS_SESSION_TOKEN"]).client(
            "route53", region_name="us-east-1", endpoint_url=self.url)

    def record_count(self) -> int:
        """How many record sets the zone holds now (moto answers in one page)."""
        out = self.client().list_resource_record_sets(HostedZoneId=self.zone_id, MaxItems="100000")
        return len(out["ResourceRecordSets"])

    def stop(self) -> None:
        self.server.stop()


__all__ = ["FAKE_ENV", "FakeRoute53", "MotoMissing", "MotoRoute53", "moto_missing", "patch_moto"]

"""The controller's REST API (docs/rest-api.md) through real HTTP against ``steering controller --http-addr``
and a real etcd: every endpoint, the actions and their safety rules, idempotent retries, dry runs, bad input,
tokens, roles and TLS."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from steering.etcdproc import EtcdCluster
from tests.support.controller import API, region_share
from tests.support.http_api import Client, action_keys, serving
from tests.support.pki import AGENT, OPERATOR, VIEWER, make_pki, tokens_file
from tests.support.wait import eventually

V1 = "/api/v1"


async def test_reads(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd) as s, action_keys(etcd) as written:
        c = s.client
        status = await c.get(f"{V1}/status")
        assert status.status == 200 and status.body["replica"] == "c1" and status.body["leader"] == "c1"
        assert {r["region"]: r["health"] for r in status.body["regions"]} == {
            "us-east-1": "healthy", "us-west-2": "healthy", "eu-west-1": "healthy"}
        assert status.headers["Cache-Control"] == "no-store"

        table = await c.get(f"{V1}/table")
        version = table.body["version"]
        assert table.status == 200 and table.headers["ETag"] == f'"v{version}"'
        assert table.body["services"][API]["geos"]["europe"]["weights"]["eu-west-1"] == 1000

        kept = await c.get(f"{V1}/tables")
        assert kept.status == 200 and version in kept.body["kept"] and kept.body["current"] >= version
        oldest = min(kept.body["kept"])
        by_version = await c.get(f"{V1}/tables/{oldest}")
        assert by_version.status == 200 and by_version.body["version"] == oldest
        gone = await c.get(f"{V1}/tables/{kept.body['current'] + 1000}")
        assert gone.status == 404 and gone.error["field"] == "version" and "not kept" in gone.error["message"]

        events = await c.get(f"{V1}/events", params={"limit": "100"})
        assert events.status == 200 and "leader_elected" in {e["kind"] for e in events.body["events"]}
        assert (await c.get(f"{V1}/history")).body == {"records": []}
        assert (await c.get(f"{V1}/evacuations")).body == {"evacuations": []}
        assert (await c.get(f"{V1}/pins")).body == {"pins": []}

        why = await c.get(f"{V1}/explain", params={"service": "api.example.test",
                                                    "client_address": "198.51.100.130"})
        assert why.status == 200 and why.body["geo"] == "europe" and why.body["target"] == "eu-west-1"
        assert why.body["placed_by"]["prefix"] == "198.51.100.128/26"

        plan = await c.call("POST", f"{V1}/plan", json={"evacuate": [{"region": "eu-west-1", "reason": "what if"}]})
        assert plan.status == 200, plan
        europe = [ch for ch in plan.body["preview"]["changes"] if ch["service"] == API and ch["geo"] == "europe"]
        assert europe and europe[0]["before"]["eu-west-1"] == 1000 and europe[0]["after"]["eu-west-1"] == 0

        doc = await c.get(f"{V1}/openapi.json")
        assert doc.status == 200 and doc.body["openapi"] == "3.1.0"
        assert set(doc.body["paths"][f"{V1}/evacuations"]) == {"get", "post"}
        assert "securitySchemes" not in doc.body["components"]  # no auth configured

        assert await written() == {}, "reads and a plan write nothing"


async def test_evacuation_round_trip(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd) as s, action_keys(etcd) as written:
        c = s.client
        ask = {"region": "eu-west-1", "reason": "kernel upgrade", "mode": "now"}

        dry = await c.call("POST", f"{V1}/evacuations", json={**ask, "dry_run": True})
        assert dry.status == 200 and dry.body["dry_run"] and not dry.body["applied"]
        assert dry.body["preview"]["changes"], "the preview shows where europe's traffic would go"
        assert await written() == {}, "a dry run writes nothing"

        first = await c.call("POST", f"{V1}/evacuations", json=ask, headers={"Idempotency-Key": "evac-eu-1"})
        assert first.status == 201, first
        assert first.headers["Location"] == f"{V1}/evacuations/eu-west-1"
        assert first.body["applied"] and not first.body["duplicate"] and first.body["request_id"] == "evac-eu-1"

        async def out() -> bool:
            return region_share(await c.table(), "eu-west-1") == 0

        await eventually(out, timeout=15, what="eu-west-1 out of the table after the HTTP evacuation")

        # A retry with the same id (as header or field) is applied once: same audit id, one audit record.
        again = await c.call("POST", f"{V1}/evacuations", json={**ask, "request_id": "evac-eu-1"})
        assert again.status == 200 and again.body["duplicate"] and again.body["audit_id"] == first.body["audit_id"]
        history = (await c.get(f"{V1}/history")).body["records"]
        assert [(r["action"], r["region"], r["actor"], r["request_id"]) for r in history] == [
            ("evacuate", "eu-west-1", "anonymous", "evac-eu-1")]
        both = await c.call("POST", f"{V1}/evacuations", json={**ask, "request_id": "a"},
                            headers={"Idempotency-Key": "b"})
        assert both.status == 400 and both.error["field"] == "request_id"

        # A second region would leave one serving: refused by the rule, with its numbers and the preview.
        before = await written()
        refused = await c.call("POST", f"{V1}/evacuations", json={**ask, "region": "us-west-2"})
        assert refused.status == 409, refused
        assert [r["rule"] for r in refused.error["rules"]] == ["min_serving_regions"]
        assert "would leave 1 region(s) serving" in refused.error["message"]
        assert "at least 2" in refused.error["rules"][0]["message"]
        assert refused.body["preview"] is not None and refused.body["preview"]["regions"]
        assert await written() == before, "a refusal writes nothing"

        listed = await c.get(f"{V1}/evacuations/eu-west-1")
        assert listed.status == 200 and listed.body["evacuations"][0]["mode"] == "now"
        assert (await c.get(f"{V1}/evacuations/us-west-2")).status == 404

        # Restore with a ramp: half back per 0.3 s step, then the restore record is gone.
        back = await c.call("DELETE", f"{V1}/evacuations/eu-west-1",
                            params={"mode": "ramp", "step": "0.5", "interval_seconds": "0.3", "reason": "done"})
        assert back.status == 200 and back.body["action"] == "restore" and back.body["applied"], back
        restoring = (await c.get(f"{V1}/evacuations")).body["evacuations"]
        assert [(e["region"], e["restoring"], e["step"]) for e in restoring] == [("eu-west-1", True, 0.5)]

        async def home() -> bool:
            t = await c.table()
            route = t.route(API, "europe")
            return route is not None and route.weights.get("eu-west-1") == 1000

        await eventually(home, timeout=20, what="europe back on eu-west-1 after the ramped restore")

        async def cleaned() -> bool:
            return bool((await c.get(f"{V1}/evacuations")).body["evacuations"] == [])

        await eventually(cleaned, timeout=20, what="the finished restore's record removed")
        again_restore = await c.call("DELETE", f"{V1}/evacuations/eu-west-1")
        assert again_restore.status == 409 and again_restore.error["rules"][0]["rule"] == "not_evacuated"


async def test_pins(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd) as s, action_keys(etcd) as written:
        c = s.client
        path = f"{V1}/pins/{API}/europe"
        pinned = await c.call("PUT", path, json={"weights": {"us-east-1": 3, "us-west-2": 1}, "reason": "test"})
        assert pinned.status == 200 and pinned.body["applied"], pinned

        async def shows_pin() -> bool:
            route = (await c.table()).route(API, "europe")
            return route is not None and route.pinned and route.weights["us-east-1"] == 750

        await eventually(shows_pin, timeout=15, what="the pin in the table")
        assert (await c.get(f"{V1}/pins")).body["pins"] == [
            {"service": API, "geo": "europe", "weights": {"us-east-1": 750, "us-west-2": 250}, "reason": "test",
             "actor": "anonymous"}]

        before = await written()
        site = await c.call("PUT", path, json={"weights": {"oc-lon-1": 1}, "reason": "x", "force": True})
        assert site.status == 409 and site.error["rules"][0]["rule"] == "no_answers", site
        # The path names the service as configured, with its trailing dot; an unknown geo is 404 too.
        assert (await c.call("PUT", f"{V1}/pins/api.example.test/europe",
                             json={"weights": {"us-east-1": 1}, "reason": "x"})).status == 404
        assert (await c.call("PUT", f"{V1}/pins/{API}/mars", json={"weights": {"us-east-1": 1},
                                                                   "reason": "x"})).status == 404
        assert await written() == before

        dry = await c.call("DELETE", path, params={"dry_run": "true"})
        assert dry.status == 200 and dry.body["dry_run"] and not dry.body["applied"] and dry.body["preview"], dry
        assert await written() == before, "an unpin's dry run writes nothing"
        unpinned = await c.call("DELETE", path, params={"reason": "over"}, headers={"Idempotency-Key": "unpin-1"})
        assert unpinned.status == 200 and unpinned.body["applied"] and unpinned.body["request_id"] == "unpin-1"
        retried = await c.call("DELETE", path, params={"request_id": "unpin-1"})
        assert retried.status == 200 and retried.body["duplicate"]
        assert (await c.call("DELETE", path)).error["rules"][0]["rule"] == "not_pinned"
        assert (await c.get(f"{V1}/pins")).body["pins"] == []


# (method, path, body: JSON value or raw bytes, headers) -> (status, code, field)
BAD: list[tuple[str, str, object, dict[str, str], int, str, str | None]] = [
    ("POST", "/evacuations", b'{"region": "eu-west-1",', {}, 400, "malformed_json", None),
    ("POST", "/evacuations", b'{"region": "eu-west-1", "reason": "x", "step": NaN}', {}, 400, "malformed_json", None),
    ("POST", "/evacuations", b'{"region": "eu-west-1", "region": "us-east-1", "reason": "x"}', {}, 400,
     "malformed_json", "region"),
    ("POST", "/evacuations", b"\xff\xfe", {}, 400, "malformed_json", None),
    ("POST", "/evacuations", b"", {}, 400, "missing_body", None),
    ("POST", "/evacuations", [1, 2], {}, 400, "wrong_type", None),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x", "rampp": 1}, {}, 400, "unknown_field", "rampp"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x", "step": "fast"}, {}, 400, "wrong_type", "step"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x", "dry_run": "yes"}, {}, 400, "wrong_type",
     "dry_run"),
    ("POST", "/evacuations", {"region": "eu-west-1"}, {}, 400, "missing_field", "reason"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "\ud800"}, {}, 400, "invalid_text", "reason"),
    ("POST", "/evacuations", {"region": "mars", "reason": "x"}, {}, 422, "invalid_value", "region"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x", "step": 2}, {}, 422, "invalid_value", "step"),
    ("POST", "/evacuations", b'{"region": "eu-west-1", "reason": "x", "interval_seconds": 1e400}', {}, 422,
     "invalid_value", "interval_seconds"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x" * 1025}, {}, 422, "invalid_value", "reason"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "   "}, {}, 422, "invalid_value", "reason"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x", "request_id": "a/b"}, {}, 422,
     "invalid_value", "request_id"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x", "mode": "sideways"}, {}, 422,
     "invalid_value", "mode"),
    ("POST", "/evacuations", b'{"region": "eu-west-1", "reason": "x"}', {"Content-Type": "text/plain"}, 415,
     "unsupported_media_type", "Content-Type"),
    ("POST", "/evacuations", {"region": "eu-west-1", "reason": "x" * 70_000}, {}, 413, "too_large", None),
    ("DELETE", "/evacuations/mars", None, {}, 404, "not_found", "region"),
    ("DELETE", "/evacuations/eu-west-1?step=abc", None, {}, 400, "wrong_type", "step"),
    ("DELETE", "/evacuations/eu-west-1?colour=red", None, {}, 400, "unknown_field", "colour"),
    ("DELETE", "/evacuations/eu-west-1?reason=a&reason=b", None, {}, 400, "repeated_field", "reason"),
    ("PUT", "/pins/api.example.test./europe", {"weights": {}, "reason": "x"}, {}, 422, "invalid_value", "weights"),
    ("PUT", "/pins/api.example.test./europe", {"weights": {"us-east-1": -1}, "reason": "x"}, {}, 422,
     "invalid_value", "weights.us-east-1"),
    ("PUT", "/pins/api.example.test./europe", {"weights": {"us-east-1": 1.5}, "reason": "x"}, {}, 400,
     "wrong_type", "weights.us-east-1"),
    ("PUT", "/pins/api.example.test./europe", {"weights": {"mars": 1}, "reason": "x"}, {}, 422, "invalid_value",
     "weights.mars"),
    ("POST", "/plan", {"healthy": {"eu-west-1": "no"}}, {}, 400, "wrong_type", "healthy.eu-west-1"),
    ("POST", "/plan", {"evacuate": [{"reason": "x"}]}, {}, 400, "missing_field", "evacuate[0].region"),
    ("GET", "/tables/first", None, {}, 400, "wrong_type", "version"),
    ("GET", "/tables/0", None, {}, 404, "not_found", "version"),
    ("GET", "/events?limit=0", None, {}, 422, "invalid_value", "limit"),
    ("GET", "/events?since=nan", None, {}, 400, "wrong_type", "since"),
    ("GET", "/explain?service=api.example.test", None, {}, 400, "missing_field", "client_address"),
    ("GET", "/explain?service=nope.test&client_address=192.0.2.1", None, {}, 422, "invalid_value", "service"),
    ("GET", "/explain?service=api.example.test&client_address=not-an-ip", None, {}, 422, "invalid_value",
     "client_address"),
    ("GET", "/status", b'{"x": 1}', {"Content-Type": "application/json"}, 400, "unexpected_body", None),
    ("GET", "/nowhere", None, {}, 404, "not_found", None),
    ("PATCH", "/evacuations", None, {}, 405, "method_not_allowed", None),
    ("GET", "/status", None, {"Host": "rebound.example:8080"}, 403, "forbidden", "Host"),
]


async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd, agents=False) as s, action_keys(etcd) as written:
        problems = []
        for method, path, body, headers, status, code, field in BAD:
            kw: dict[str, object] = {"headers": headers}
            if isinstance(body, bytes):
                kw["data"] = body
                kw["headers"] = {"Content-Type": "application/json", **headers}
            elif body is not None:
                kw["json"] = body
            got = await s.client.call(method, V1 + path, **kw)  # type: ignore[arg-type]
            err = got.body.get("error") if isinstance(got.body, dict) else None
            if got.status != status or err is None or (err["code"], err["field"]) != (code, field):
                problems.append(f"{method} {path} {str(body)[:60]}: got {got.status} {str(got.body)[:200]}")
            elif field is not None and field not in err["message"]:
                problems.append(f"{method} {path}: the message does not name {field}: {err['message']}")
        assert not problems, "\n".join(problems)
        assert await written() == {}, "nothing refused was written"


async def test_tokens_roles_tls_and_the_audit_actor(etcd: EtcdCluster, tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    extra = {"auth": {"tokens_file": str(tokens_file(tmp_path / "tokens.yaml"))},
             "tls": {"cert": str(pki["server_cert"]), "key": str(pki["server_key"])}}
    # gRPC is TLS too, so the harness's plaintext agents cannot report: the regions stay "unknown" and serve.
    async with serving(tmp_path, etcd, extra=extra, agents=False, token=VIEWER, ca=pki["ca"]) as s:
        c = s.client
        assert s.base.startswith("https://")
        missing = await c.get(f"{V1}/status", token=None)
        assert missing.status == 401 and missing.error["message"] == "authorization: missing bearer token"
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await c.get(f"{V1}/status", token="not-a-token-at-all")
        assert wrong.status == 401 and "invalid bearer token" in wrong.error["message"]
        assert (await c.get(f"{V1}/status")).status == 200
        assert (await c.get(f"{V1}/openapi.json")).body["security"] == [{"bearer": []}]
        assert (await c.get(f"{V1}/status", token=AGENT)).status == 403

        ask = {"region": "eu-west-1", "reason": "auth test", "mode": "now"}
        denied = await c.call("POST", f"{V1}/evacuations", json=ask)
        assert denied.status == 403 and denied.error["code"] == "forbidden"
        assert "token 'grafana' has role viewer; Evacuate needs operator" in denied.error["message"]
        # Auth comes before the body: an unauthenticated caller learns nothing of what it sent.
        assert (await c.call("POST", f"{V1}/evacuations", json={"x": 1}, token=None)).status == 401

        done = await c.call("POST", f"{V1}/evacuations", json=ask, token=OPERATOR)
        assert done.status == 201, done
        history = (await c.get(f"{V1}/history")).body["records"]
        assert [(r["action"], r["actor"]) for r in history] == [("evacuate", "alice")]

        # Plain HTTP to the TLS port gets no answer: the handshake it never starts fails.
        async with aiohttp.ClientSession() as session:
            plain = Client(session, s.base.replace("https://", "http://"), OPERATOR)
            with pytest.raises(aiohttp.ClientError):
                await plain.get(f"{V1}/status")

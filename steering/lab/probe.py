"""Health of every region's components, seen from the lab namespace (the only place lab addresses are reached).

``probe(spec)``, called on a thread moved into the lab namespace
(``netops.run_in``; ``Lab.probe``), answers per region: whether its etcd
member says it is healthy, whether its controller accepts a connection, what
its DNS server answers for the spec's name (addresses, or the error), the leader recorded in etcd and whether its targets' health records
are written by its own controller (read through etcd's JSON gateway).
Everything is asked at once, each with a short timeout, so a cut region costs
one timeout, not one per component.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

TIMEOUT = 1.0


def etcd_health(addr: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{addr}/health", timeout=TIMEOUT) as resp:
            return b'"health":"true"' in resp.read()
    except (OSError, ValueError):
        return False


def etcd_get(addr: str, key: bytes) -> str | None:
    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    req = urllib.request.Request(f"http://{addr}/v3/kv/range", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        kvs = json.loads(resp.read()).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode(errors="replace") if kvs else None


def tcp_open(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT):
            return True
    except OSError:
        return False


def dns_answer(addr: str, qname: str) -> dict[str, Any]:
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    host, port = addr.rsplit(":", 1)
    try:
        r = dns.query.udp(dns.message.make_query(qname, "A"), host, port=int(port), timeout=TIMEOUT)
    except Exception as exc:  # timeout, refused: the answer is that there was none
        return {"ok": False, "error": type(exc).__name__}
    addrs = sorted(rd.to_text() for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset)
    return {"ok": r.rcode() == dns.rcode.NOERROR and bool(addrs), "rcode": dns.rcode.to_text(r.rcode()),
            "answers": addrs}


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    regions: list[dict[str, Any]] = spec["regions"]
    leader_key = spec["leader_key"].encode()
    with ThreadPoolExecutor(max_workers=max(4, 4 * len(regions))) as pool:
        futures: dict[str, dict[str, Future[Any]]] = {r["id"]: {
            "etcd": pool.submit(etcd_health, r["etcd"]),
            "controller": pool.submit(tcp_open, r["controller"]),
            "dns": pool.submit(dns_answer, r["dns"], spec["qname"]),
            "leader": pool.submit(etcd_get, r["etcd"], leader_key),
            **{f"home{i}": pool.submit(etcd_get, r["etcd"], k.encode()) for i, k in enumerate(r.get("home_keys", []))},
        } for r in regions}
        out: dict[str, Any] = {}
        for rid, fs in futures.items():
            try:
                leader = fs["leader"].result()
            except Exception:  # no member to ask, or it has no quorum to answer
                leader = None
            try:
                home = all(f.result() is not None for k, f in fs.items() if k.startswith("home"))
            except Exception:
                home = None  # not known: the member did not answer
            out[rid] = {"etcd": fs["etcd"].result(), "controller": fs["controller"].result(),
                        "dns": fs["dns"].result(), "leader": leader, "home": home}
    return out

"""``steering lab history``'s run, inside the lab namespace (the only place lab addresses are reached).

``python -m steering.lab.historyrun --state-dir DIR --seed N --duration S ...``:
while the seeded fault schedule (``steering.lab.schedule``) partitions regions
and kills and restarts their components, one thread issues operator actions
through the regions' controllers in turn (each with a request id, retried with
the same id after a timeout or an unavailable replica) and one thread per region
asks its DNS server, in rounds, for the table it serves (``table.steering. CH
TXT``) and the steered name for a client of every geo (ECS). Everything goes to
``<state-dir>/history-<seed>.jsonl``. Then every fault is undone and the run
measures how long until every DNS server serves etcd's current version; it
replays the election key's and the routing pointer's history from etcd, reads
the audit and the final state through a replica, puts back what its own actions
left (a region evacuated, a pin), and hands the file to ``steering.lab.history``.
Exit 0 with no violation, 1 with any, 2 when the run itself could not be made.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import random
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc

from steering.config import load_config
from steering.lab import procs
from steering.lab.history import check
from steering.lab.lab import Lab
from steering.lab.plan import CONTROLLER_PORT, DNS_PORT, ETCD_CLIENT_PORT, Link, pairs_of
from steering.lab.schedule import Action, Episode, action_pairs, fault_schedule
from steering.store.codec import parse_pointer
from steering.store.keys import Keys
from steering.v1 import steering_pb2 as pb
from steering.v1 import steering_pb2_grpc as pb_grpc

DNS_TIMEOUT = 0.5
DNS_ROUND_PAUSE = 0.2
ACTION_TIMEOUT = 5.0
SHORT_DEADLINE = 0.01  # a first attempt that times out by design (the request may still be applied)
MAX_ATTEMPTS = 3
ETCD_TIMEOUT = 2.0
REFUSALS = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.ALREADY_EXISTS)
REASON = "steering lab history"


class Recorder:
    """One JSONL file, written by every thread; ``t`` on one monotonic clock from the run's start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._out = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def now(self) -> float:
        return time.monotonic() - self.t0

    def write(self, rtype: str, /, **fields: Any) -> None:
        line = json.dumps({"type": rtype, "t": round(self.now(), 3), **fields}, sort_keys=True)
        with self._lock:
            if self._out.closed:  # a poller's last round after an interruption
                return
            self._out.write(line + "\n")
            self._out.flush()

    def close(self) -> None:
        with self._lock:
            self._out.close()


# ---------------------------------------------------------------------- etcd (its JSON gateway)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def etcd_post(addrs: list[str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The first member's answer; OSError when none answers."""
    last: Exception = OSError("no etcd member")
    for addr in addrs:
        req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=ETCD_TIMEOUT) as resp:
                out: dict[str, Any] = json.loads(resp.read())
                if "kvs" in out or "header" in out:
                    return out
        except (OSError, ValueError) as exc:
            last = exc
    raise OSError(f"no etcd member answered {path}: {last}")


def leader_now(addrs: list[str], key: bytes) -> tuple[int, dict[str, Any]]:
    """(the store's revision, the election key's holder: identity and create_revision, or {})."""
    out = etcd_post(addrs, "/v3/kv/range", {"key": _b64(key)})
    rev = int(out["header"]["revision"])
    kvs = out.get("kvs") or []
    if not kvs:
        return rev, {}
    return rev, {"identity": base64.b64decode(kvs[0]["value"]).decode(errors="replace"),
                 "create_revision": int(kvs[0]["create_revision"])}


def current_version(addrs: list[str], key: bytes) -> int | None:
    try:
        out = etcd_post(addrs, "/v3/kv/range", {"key": _b64(key)})
    except OSError:
        return None
    kvs = out.get("kvs") or []
    if not kvs:
        return None
    try:
        return parse_pointer(base64.b64decode(kvs[0]["value"])).version
    except ValueError:
        return None


def replay(addrs: list[str], key: bytes, start_rev: int) -> list[dict[str, Any]]:
    """Every change of ``key`` from ``start_rev`` on, from etcd's history (a watch that starts in the past,
    read until it goes quiet): rev, create_revision, value (base64) or deleted."""
    body = json.dumps({"create_request": {"key": _b64(key), "start_revision": start_rev}}).encode()
    for addr in addrs:
        events: list[dict[str, Any]] = []
        req = urllib.request.Request(f"http://{addr}/v3/watch", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=ETCD_TIMEOUT) as resp:
                decoder, buf = json.JSONDecoder(), ""
                while True:
                    try:
                        chunk = resp.readline()
                    except TimeoutError:
                        return events  # quiet: the history is all there
                    if not chunk:
                        break
                    buf += chunk.decode(errors="replace")
                    while buf.strip():
                        try:
                            msg, end = decoder.raw_decode(buf.lstrip())
                        except ValueError:
                            break
                        buf = buf.lstrip()[end:]
                        for ev in (msg.get("result") or {}).get("events") or []:
                            kv = ev.get("kv") or {}
                            events.append({"rev": int(kv.get("mod_revision", 0)),
                                           "create_revision": int(kv.get("create_revision", 0)),
                                           "value": kv.get("value", ""), "deleted": ev.get("type") == "DELETE"})
        except OSError:
            continue
    raise OSError("no etcd member replayed the history")


# ---------------------------------------------------------------------- DNS


def table_of(addr: str) -> tuple[int | None, str | None]:
    import dns.message
    import dns.query
    import dns.rdataclass

    try:
        r = dns.query.udp(dns.message.make_query("table.steering.", "TXT", rdclass=dns.rdataclass.CH), addr,
                          port=DNS_PORT, timeout=DNS_TIMEOUT)
    except Exception:  # timeout, refused, a dead server: no observation
        return None, None
    fields = dict(s.decode(errors="replace").split("=", 1) for rr in r.answer for rd in rr for s in rd.strings
                  if b"=" in s)
    try:
        return int(fields.get("version", "")), fields.get("leader")
    except ValueError:
        return None, fields.get("leader")


def answer_of(addr: str, qname: str, ecs: str) -> list[str] | None:
    import dns.edns
    import dns.message
    import dns.query
    import dns.rdatatype

    q = dns.message.make_query(qname, "A", use_edns=0, options=[dns.edns.ECSOption.from_text(ecs)])
    try:
        r = dns.query.udp(q, addr, port=DNS_PORT, timeout=DNS_TIMEOUT)
    except Exception:  # timeout, refused: no answer
        return None
    return sorted(rd.to_text() for rr in r.answer if rr.rdtype == dns.rdatatype.A for rd in rr)


def poll_dns(rec: Recorder, server: str, addr: str, qname: str, clients: dict[str, str],
             latest: dict[str, int | None], stop: threading.Event) -> None:
    while not stop.is_set():
        version, leader = table_of(addr)
        answers = {geo: answer_of(addr, qname, ecs) for geo, ecs in clients.items()}
        latest[server] = version
        rec.write("dns", server=server, version=version, leader=leader, answers=answers)
        stop.wait(DNS_ROUND_PAUSE)


# ---------------------------------------------------------------------- operator actions


def _request(act: Action, rid: str) -> tuple[str, Any]:
    now = pb.EVACUATION_MODE_NOW
    if act.kind == "evacuate":
        return "Evacuate", pb.EvacuateRequest(region=act.region, mode=now, reason=REASON, request_id=rid)
    if act.kind == "restore":
        return "Restore", pb.RestoreRequest(region=act.region, mode=now, reason=REASON, request_id=rid)
    if act.kind == "pin":
        return "PinWeights", pb.PinWeightsRequest(service=act.service, geo=act.geo, weights=dict(act.weights),
                                                  reason=REASON, request_id=rid)
    return "UnpinWeights", pb.UnpinWeightsRequest(service=act.service, geo=act.geo, reason=REASON, request_id=rid)


def _target(act: Action) -> str:
    return act.region if act.kind in ("evacuate", "restore") else f"{act.service}/{act.geo}"


class Operators:
    """Operator calls to the regions' controllers, each replica's channel kept."""

    def __init__(self, replicas: list[str]) -> None:
        self.replicas = replicas
        self.stubs = {r: pb_grpc.OperatorServiceStub(grpc.insecure_channel(r))  # type: ignore[no-untyped-call]
                      for r in replicas}

    def issue(self, rec: Recorder, act: Action, rid: str, first: int, tag: str = "") -> str:
        """Attempts (same id) until an answer that says applied or refused; the last outcome. ``tag``
        prefixes the record types (the put-back after the run is not part of the checked history)."""
        outcome = "unknown"
        for attempt in range(MAX_ATTEMPTS):
            replica = self.replicas[(first + attempt) % len(self.replicas)]
            deadline = SHORT_DEADLINE if act.short_first_deadline and attempt == 0 else ACTION_TIMEOUT
            method, req = _request(act, rid)
            rec.write(f"{tag}send", rid=rid, kind=act.kind, target=_target(act), replica=replica, attempt=attempt,
                      deadline=deadline)
            try:
                resp = getattr(self.stubs[replica], method)(req, timeout=deadline)
            except grpc.RpcError as err:
                code = err.code()
                outcome = "refused" if code in REFUSALS else "unknown"
                rec.write(f"{tag}result", rid=rid, outcome=outcome, replica=replica, code=code.name,
                          detail=(err.details() or "")[:200])
                if outcome == "refused":
                    return outcome
                time.sleep(0.3)
                continue
            outcome = "duplicate" if resp.duplicate else "ack"
            rec.write(f"{tag}result", rid=rid, outcome=outcome, replica=replica, audit_id=resp.audit_id)
            return outcome
        return outcome

    def call(self, method: str, req: Any) -> Any:
        """A read through the first replica that answers."""
        last: Exception | None = None
        for r in self.replicas:
            try:
                return getattr(self.stubs[r], method)(req, timeout=ACTION_TIMEOUT)
            except grpc.RpcError as err:
                last = err
        raise RuntimeError(f"no replica answered {method}: {last}")


def run_actions(rec: Recorder, ops: Operators, actions: list[Action], seed: int, stop: threading.Event) -> None:
    rng = random.Random(seed ^ 0xAC7)
    run = uuid.uuid4().hex[:8]
    for n, act in enumerate(actions):
        if stop.is_set():
            return
        ops.issue(rec, act, f"history-{seed}-{run}-{n}", rng.randrange(len(ops.replicas)))
        stop.wait(rng.uniform(0.5, 2.0))


# ---------------------------------------------------------------------- faults


class Faults:
    """Applies the episodes to the lab and records each change once it is made."""

    def __init__(self, lab: Lab, rec: Recorder) -> None:
        self.lab = lab
        self.rec = rec
        self.cut: set[str] = set()

    def begin(self, ep: Episode) -> None:
        topo = self.lab.topology
        if ep.kind == "partition":
            for x, y in pairs_of(topo, ep.region):
                link = topo.link(x, y)
                self.lab.set_link(x, y, Link(link.delay_ms, link.jitter_ms, link.loss_pct, cut=True))
            self.cut.add(ep.region)
            self.rec.write("fault", op="partition", region=ep.region, component=None)
        else:
            self.lab.kill(ep.region, ep.kind)
            self.rec.write("fault", op="kill", region=ep.region, component=ep.kind)

    def end(self, ep: Episode) -> None:
        topo = self.lab.topology
        if ep.kind == "partition":
            self.cut.discard(ep.region)
            for x, y in pairs_of(topo, ep.region):
                other = y if x == ep.region else x
                if other not in self.cut:  # a pair stays cut while its other end is cut off too
                    self.lab.set_link(x, y, topo.base)
            self.rec.write("fault", op="heal", region=ep.region, component=None)
        else:
            self.lab.restart(ep.region, ep.kind)
            self.rec.write("fault", op="restart", region=ep.region, component=ep.kind)

    def undo_all(self) -> None:
        """Every link as `up` made it, every dead component started again (also after an interruption)."""
        topo = self.lab.topology
        for i, a in enumerate(topo.regions):
            for b in topo.regions[i + 1:]:
                if topo.link(a.id, b.id) != topo.base:
                    self.lab.set_link(a.id, b.id, topo.base)
                    self.rec.write("fault", op="heal-link", region=a.id, component=None, pair=[a.id, b.id])
        self.cut.clear()
        for r in topo.regions:
            for comp in ("etcd", "controller", "dns", "agent"):
                dead = [n for n, p in self.lab.procs_of(r.id, comp).items() if not procs.alive(p)]
                if dead:
                    self.lab.restart(r.id, comp)
                    self.rec.write("fault", op="restart", region=r.id, component=comp)


def run_faults(faults: Faults, episodes: list[Episode], rec: Recorder, duration: float) -> None:
    timeline = sorted([(e.start, 1, e) for e in episodes] + [(e.end, 0, e) for e in episodes],
                      key=lambda x: (x[0], x[1]))  # ends before starts at the same time
    for at, is_start, ep in timeline:
        time.sleep(max(0.0, at - rec.now()))
        (faults.begin if is_start else faults.end)(ep)
    time.sleep(max(0.0, duration - rec.now()))


# ---------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="steering lab history")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--detection-bound", type=float, required=True)
    ap.add_argument("--convergence-bound", type=float, required=True)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    state_dir = Path(args.state_dir)
    lab = Lab.load(state_dir)
    if lab is None:
        print(f"steering lab history: no lab recorded in {state_dir}", file=sys.stderr)
        return 2
    topo = lab.topology
    regions = [r.id for r in topo.regions]
    cfg = load_config(state_dir / "regions" / regions[0] / "steering.yaml")
    svc = cfg.services[0]
    clients = {}
    for g in cfg.geos:
        v4 = [ipaddress.ip_network(p) for p in g.prefixes if ipaddress.ip_network(p).version == 4]
        if v4:
            clients[g.id] = f"{v4[0].network_address}/{v4[0].prefixlen}"
    answers = {t: a.addresses() for t, a in svc.answers.items()}
    keys = Keys(lab.info.get("etcd_prefix") or "/steering/v1")
    etcd_addrs = [f"{r.addr}:{ETCD_CLIENT_PORT}" for r in topo.regions]
    ops = Operators([f"{r.addr}:{CONTROLLER_PORT}" for r in topo.regions])
    episodes = fault_schedule(args.seed, args.duration, regions)
    actions = action_pairs(args.seed, regions, svc.name, [g.id for g in cfg.geos])
    try:
        start_rev, leader = leader_now(etcd_addrs, keys.leader)
    except OSError as exc:
        print(f"steering lab history: etcd does not answer ({exc}); is the lab healthy? (steering lab status)",
              file=sys.stderr)
        return 2
    try:
        evacuated0, pinned0 = end_state(ops.call("Status", pb.StatusRequest()))
    except RuntimeError as exc:
        print(f"steering lab history: {exc}; is the lab healthy? (steering lab status)", file=sys.stderr)
        return 2
    path = state_dir / f"history-{args.seed}.jsonl"
    rec = Recorder(path)
    rec.write("start", seed=args.seed, duration=args.duration, regions=regions, answers=answers,
              clients=clients, detection_bound=args.detection_bound, convergence_bound=args.convergence_bound,
              leader=leader, start_revision=start_rev, evacuated=evacuated0, pinned=pinned0, schedule=[e.to_json() for e in episodes],
              wall=time.time())
    latest: dict[str, int | None] = {}
    stop_dns, stop_actions = threading.Event(), threading.Event()
    pollers = [threading.Thread(target=poll_dns, args=(rec, r.id, r.addr, lab.info["qname"], clients, latest,
                                                       stop_dns), daemon=True, name=f"dns-{r.id}")
               for r in topo.regions]
    actor = threading.Thread(target=run_actions, args=(rec, ops, actions, args.seed, stop_actions), daemon=True,
                             name="actions")
    faults = Faults(lab, rec)
    for t in pollers:
        t.start()
    actor.start()
    interrupted = False
    try:
        run_faults(faults, episodes, rec, args.duration)
    except KeyboardInterrupt:  # the operator stops it: undo the faults, keep the record, check nothing
        interrupted = True
        rec.write("interrupted")
    finally:
        stop_actions.set()
        actor.join(MAX_ATTEMPTS * (ACTION_TIMEOUT + 1))
        faults.undo_all()
    if interrupted:
        stop_dns.set()
        rec.close()
        print(f"interrupted: links healed and components restarted; the partial record is {path}", file=sys.stderr)
        return 130
    rec.write("healed")
    healed = time.monotonic()
    conv: dict[str, Any] = {"seconds": None}
    while time.monotonic() - healed < args.convergence_bound + 10:
        want = current_version(etcd_addrs, keys.routing_current)
        seen = dict(latest)
        conv["versions"] = seen
        if want is not None and all(seen.get(r) == want for r in regions):
            conv = {"seconds": round(time.monotonic() - healed, 2), "version": want, "versions": seen}
            break
        time.sleep(0.2)
    rec.write("converged", **conv)
    stop_dns.set()
    for t in pollers:
        t.join(5)
    status = 0
    try:
        leader_events = [{"rev": e["rev"], "deleted": True} if e["deleted"] else
                         {"rev": e["rev"], "create_revision": e["create_revision"],
                          "identity": base64.b64decode(e["value"]).decode(errors="replace")}
                         for e in replay(etcd_addrs, keys.leader, start_rev + 1)]
        writes = []
        for e in replay(etcd_addrs, keys.routing_current, start_rev + 1):
            if not e["deleted"]:
                try:
                    p = parse_pointer(base64.b64decode(e["value"]))
                except ValueError:
                    continue
                writes.append({"rev": e["rev"], "version": p.version})
        rec.write("etcd", leader_events=leader_events, table_writes=writes)
        hist = ops.call("History", pb.HistoryRequest(limit=1000))
        rec.write("audit", records=[{"id": a.id, "time": a.time.seconds + a.time.nanos / 1e9, "action": a.action,
                                     "region": a.region, "service": a.service, "geo": a.geo,
                                     "request_id": a.request_id} for a in hist.records])
        st = ops.call("Status", pb.StatusRequest())
        evacuated, pinned = end_state(st)
        rec.write("final", evacuated=evacuated, pinned=pinned, replica=st.replica)
        put_back(rec, ops, [r for r in evacuated if r not in evacuated0],
                 [p for p in pinned if p not in pinned0])
    except (OSError, RuntimeError) as exc:
        rec.write("error", detail=str(exc)[:300])
        print(f"steering lab history: could not read the end state: {exc}", file=sys.stderr)
        status = 2
    rec.close()
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    result = check(records)
    result.figures["history file"] = str(path)
    result.figures["seed"] = args.seed
    result.figures["duration (s)"] = args.duration
    if args.json:
        print(json.dumps({"figures": result.figures, "violations": result.violations}, indent=2))
    else:
        for k, v in result.figures.items():
            print(f"{k}: {v}")
        for line in result.violations:
            print(f"VIOLATION: {line}")
    return status or (1 if result.violations else 0)


def end_state(st: Any) -> tuple[list[str], list[list[str]]]:
    """(evacuated regions, pinned [service, geo]) from a Status answer."""
    pinned = sorted([s.service, g.geo] for s in st.table.services for g in s.geos if g.pinned)
    return sorted({e.region for e in st.evacuations}), pinned


def put_back(rec: Recorder, ops: Operators, evacuated: list[str], pinned: list[list[str]]) -> None:
    """Undo what the run's actions left (after the audit was read: not part of the checked history)."""
    for region in evacuated:
        ops.issue(rec, Action("restore", region=region), f"history-putback-{uuid.uuid4().hex}", 0, "putback-")
    for service, geo in pinned:
        ops.issue(rec, Action("unpin", service=service, geo=geo), f"history-putback-{uuid.uuid4().hex}", 0,
                  "putback-")


if __name__ == "__main__":
    sys.exit(main())

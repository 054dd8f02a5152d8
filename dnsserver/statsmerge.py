"""One /metrics for many worker processes: each worker's samples as data, merged in the supervisor.

Generic over whatever families the workers' collectors yield (``dump`` is
given the collectors, not the ``Stats`` fields), so a counter added to
``StatsCollector`` shows up here without a change:

* counters and histograms are summed over the workers, and stay monotonic
  when a worker is replaced: what a dead worker last reported is kept
  (``retire``) and added to the sums, so a restart never looks like a
  counter reset (only what it counted since the last scrape is lost);
* gauges (and any other type) are kept per worker, with a ``worker`` label:
  open connections or the table version of each process, to sum or
  compare in queries.

``steering_dns_worker_queries_total{worker}`` is derived here from each
worker's ``steering_dns_queries`` samples, so the balance across workers
shows. Pure data: no I/O, no Prometheus registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypedDict

from prometheus_client.core import Metric
from prometheus_client.registry import Collector


class Family(TypedDict):
    """A family as plain data (it travels between processes as JSON)."""

    name: str
    type: str
    help: str
    samples: list[list[Any]]  # [sample name, {label: value}, value]: lists, as JSON gives them back


_SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]  # (family, sample name, sorted labels)

SUMMED = frozenset({"counter", "histogram"})
QUERIES = "steering_dns_queries"


def dump(collectors: Iterable[Collector]) -> list[Family]:
    """Every family the collectors yield now, as JSON-ready data."""
    out: list[Family] = []
    for collector in collectors:
        for fam in collector.collect():
            out.append({"name": fam.name, "type": fam.type, "help": fam.documentation,
                        "samples": [[s.name, dict(s.labels), s.value] for s in fam.samples]})
    return out


def _valid(families: Any) -> list[Family]:
    """Families from a worker's reply, dropping anything not shaped as ``dump`` makes it."""
    good: list[Family] = []
    if not isinstance(families, list):
        return good
    for fam in families:
        if not (isinstance(fam, dict) and isinstance(fam.get("name"), str) and isinstance(fam.get("type"), str)
                and isinstance(fam.get("samples"), list)):
            continue
        samples = [s for s in fam["samples"]
                   if isinstance(s, list) and len(s) == 3 and isinstance(s[0], str) and isinstance(s[1], dict)
                   and isinstance(s[2], (int, float)) and not isinstance(s[2], bool)]
        good.append({"name": fam["name"], "type": fam["type"], "help": str(fam.get("help", "")), "samples": samples})
    return good


class Merger:
    """The workers' latest samples, plus what retired (dead) worker processes had counted.

    Keyed by process (``key``: unique per start, so a late reply from a process
    already retired is ignored, not counted twice); labelled by worker index.
    """

    def __init__(self) -> None:
        self._last: dict[int, tuple[int, list[Family]]] = {}  # key -> (worker, families)
        self._gone: set[int] = set()
        self._meta: dict[str, tuple[str, str]] = {}  # family -> (type, help), in first-seen order
        self._retired: dict[_SampleKey, float] = {}
        self._retired_queries: dict[int, float] = {}  # worker -> queries of its dead processes

    def update(self, key: int, worker: int, families: Any) -> None:
        if key in self._gone:
            return
        fams = _valid(families)
        self._last[key] = (worker, fams)
        for fam in fams:
            self._meta.setdefault(fam["name"], (fam["type"], fam["help"]))

    def retire(self, key: int) -> None:
        """A worker process ended: keep its counts (as last reported) in the sums from now on."""
        self._gone.add(key)
        if key not in self._last:
            return
        worker, fams = self._last.pop(key)
        for fam in fams:
            if fam["type"] not in SUMMED:
                continue
            for name, labels, value in fam["samples"]:
                if name.endswith("_created"):
                    continue
                skey = (fam["name"], name, tuple(sorted(labels.items())))
                self._retired[skey] = self._retired.get(skey, 0.0) + value
        self._retired_queries[worker] = self._retired_queries.get(worker, 0.0) + _queries(fams)

    def merged(self, workers: Iterable[int] = ()) -> list[Family]:
        """Everything to export; ``workers``: indexes shown in the per-worker count even before a report."""
        sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        per_worker: dict[str, list[list[Any]]] = {}
        queries = {w: 0.0 for w in workers}
        queries.update(self._retired_queries)
        for (fam_name, name, labels), value in self._retired.items():
            cell = sums.setdefault(fam_name, {})
            cell[(name, labels)] = cell.get((name, labels), 0.0) + value
        for worker, fams in sorted(self._last.values(), key=lambda wf: wf[0]):
            queries[worker] = queries.get(worker, 0.0) + _queries(fams)
            for fam in fams:
                if fam["type"] in SUMMED:
                    cell = sums.setdefault(fam["name"], {})
                    for name, labels, value in fam["samples"]:
                        if name.endswith("_created"):
                            continue  # a creation time summed over processes means nothing
                        key = (name, tuple(sorted(labels.items())))
                        cell[key] = cell.get(key, 0.0) + value
                else:
                    rows = per_worker.setdefault(fam["name"], [])
                    for name, labels, value in fam["samples"]:
                        rows.append([name, {**labels, "worker": str(worker)}, value])
        out: list[Family] = []
        for fam_name, (typ, help_) in self._meta.items():
            if typ in SUMMED:
                samples = [[n, dict(lbl), v] for (n, lbl), v in sums.get(fam_name, {}).items()]
            else:
                samples = per_worker.get(fam_name, [])
            out.append({"name": fam_name, "type": typ, "help": help_, "samples": samples})
        out.append({"name": "steering_dns_worker_queries", "type": "counter",
                    "help": "Queries answered by each worker (all its processes: restarts included)",
                    "samples": [["steering_dns_worker_queries_total", {"worker": str(w)}, v]
                                for w, v in sorted(queries.items())]})
        return out


def _queries(families: list[Family]) -> float:
    total: float = sum(v for fam in families if fam["name"] == QUERIES
                       for name, _, v in fam["samples"] if name.endswith("_total"))
    return total


def to_metrics(families: Iterable[Family]) -> Iterator[Metric]:
    """Prometheus families from merged data (what a custom collector yields)."""
    for fam in families:
        metric = Metric(fam["name"], fam["help"], fam["type"])
        for name, labels, value in fam["samples"]:
            metric.add_sample(name, labels, value)
        yield metric


def gauge(name: str, help_: str, value: float, labels: Mapping[str, str] | None = None) -> Family:
    return {"name": name, "type": "gauge", "help": help_, "samples": [[name, dict(labels or {}), value]]}

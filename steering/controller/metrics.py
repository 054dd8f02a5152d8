"""The controller's Prometheus metrics (one registry per process)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

REPORTS = Counter("steering_reports_received_total", "Agent reports received")
REJECTED = Counter("steering_reports_rejected_total", "Agent reports rejected", ["reason"])
ETCD_WRITES = Counter("steering_etcd_writes_total", "Writes to etcd", ["kind"])
ETCD_REQUESTS = Counter("steering_etcd_write_requests_total", "Write requests (transactions) sent to etcd", ["kind"])
ETCD_ERRORS = Counter("steering_etcd_errors_total", "Failed etcd operations", ["kind"])
HEALTH_WRITE_REJECTED = Counter("steering_controller_health_write_rejected_total",
                                "Health records not written as reported: too_large (written without their "
                                "details), refused (etcd refused the record; details dropped) or dropped "
                                "(refused even without details)", ["reason"])
LEADER = Gauge("steering_leader", "1 while this replica is the leader")
ETCD_REACHABLE = Gauge("steering_etcd_reachable",
                       "1 while etcd answers this replica; 0 from its first failed call or stream until one succeeds")
PLAN_SECONDS = Histogram("steering_plan_duration_seconds", "Time to compute one routing table",
                         buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
TABLE_VERSION = Gauge("steering_table_version", "Version of the routing table this replica follows")
TABLE_GENERATED = Gauge("steering_table_generated_timestamp_seconds",
                        "When the followed table was planned (age = time() - this)")
TABLE_AGE = Gauge("steering_table_age_seconds", "Seconds since the followed table was planned (-1: no table)")
TABLE_AGE.set_function(lambda: time.time() - TABLE_GENERATED._value.get() if TABLE_GENERATED._value.get() else -1.0)
TABLES_PUBLISHED = Counter("steering_tables_published_total", "Routing tables this replica published as leader")
FAIL_OPEN = Gauge("steering_fail_open", "1 while the current table fails open somewhere")
CONNECTED_AGENTS = Gauge("steering_connected_agents", "Agent streams open on this replica")
REGION_SERVING = Gauge("steering_region_serving", "1 while the region receives traffic", ["region"])
REGION_UTILIZATION = Gauge("steering_region_planned_utilization", "Planned load / capacity", ["region"])
EVACUATIONS = Gauge("steering_region_evacuated", "1 while an evacuation of the region is in force", ["region"])
SILENT_SITES = Gauge("steering_silent_sites", "Sites with no report within the silence timeout")
SKIPPED_RECORDS = Counter("steering_controller_skipped_records_total",
                          "Stored override records the leader left out of its plan (unreadable or unusable)",
                          ["kind"])
EVENTS = Counter("steering_events_total", "Events the leader emitted to the timeline (after rate limiting)", ["kind"])
EVENTS_SUPPRESSED = Counter("steering_events_suppressed_total",
                            "Events not written because their subject exceeded controller.events."
                            "per_subject_per_minute (summed up in 'flapping' events)")
EVENTS_DROPPED = Counter("steering_events_dropped_total",
                         "Events dropped unwritten: more were waiting than the leader keeps while etcd is away")
EVENTS_UNREADABLE = Counter("steering_events_unreadable_total",
                            "Stored events a read skipped because they could not be decoded")

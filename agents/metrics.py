"""The agent's Prometheus metrics (served by ``--metrics-addr``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PROBES = Counter("steering_agent_probes_total", "Probe runs", ["site", "probe"])
PROBE_FAILURES = Counter("steering_agent_probe_failures_total", "Probe runs that failed", ["site", "probe"])
PROBE_SECONDS = Histogram(
    "steering_agent_probe_duration_seconds", "Probe latency", ["site", "probe"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
READING_FAILURES = Counter(
    "steering_agent_reading_failures_total", "Capacity/load reads that failed", ["site", "reading"]
)
HEALTHY = Gauge("steering_agent_healthy", "1 if the site is healthy after rise/fall", ["site"])
REPORTS_SENT = Counter("steering_agent_reports_sent_total", "Reports written to a controller stream", ["site"])
ACKS = Counter("steering_agent_acks_total", "Acks received from controllers", ["site"])
RECONNECTS = Counter("steering_agent_reconnects_total", "Stream (re)connection attempts", ["site"])
STREAM_ERRORS = Counter(
    "steering_agent_stream_errors_total", "Controller streams that ended, by gRPC status code", ["site", "code"]
)
CONNECTED = Gauge("steering_agent_connected", "1 while a controller stream is up", ["site"])

"""Prometheus metrics of the Route 53 sink (one set per process, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SYNCS = Counter("steering_route53_syncs_total", "Route 53 syncs, by outcome", ["outcome"])
CHANGES = Counter("steering_route53_changes_total", "Record changes applied to Route 53 (INSYNC), by action",
                  ["action"])
API_CALLS = Counter("steering_route53_api_calls_total", "Route 53 API requests, by operation", ["operation"])
THROTTLES = Counter("steering_route53_throttles_total", "Route 53 requests refused with Throttling")
ERRORS = Counter("steering_route53_errors_total", "Route 53 errors, by kind", ["kind"])
SYNC_SECONDS = Histogram("steering_route53_sync_seconds", "Duration of one Route 53 sync",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
LAST_SYNC = Gauge("steering_route53_last_sync_timestamp_seconds", "When the last Route 53 sync finished")
REJECTED = Counter("steering_route53_rejected_batches_total", "Change batches Route 53 refused")

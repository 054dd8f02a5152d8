"""The REST API's Prometheus metrics (on the controller's ``--metrics-addr``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("steering_http_requests_total", "REST API requests answered, by operation and HTTP status",
                   ["operation", "status"])
SECONDS = Histogram("steering_http_request_seconds", "Time to answer a REST API request, by operation",
                    ["operation"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))

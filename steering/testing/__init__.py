"""Helpers that start real servers (etcd) for tests, benchmarks and the demo."""

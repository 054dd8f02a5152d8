"""Fixtures for every test, from the test support package (tests/support): real etcd members on free
loopback ports and moto's Route 53, stopped by PID or through their APIs."""

from __future__ import annotations

import pytest

# Plain asserts in the support modules report their values as the tests' own do.
pytest.register_assert_rewrite("tests.support")

from tests.support.etcd import etcd, etcd3  # noqa: E402
from tests.support.route53 import moto  # noqa: E402

__all__ = ["etcd", "etcd3", "moto"]

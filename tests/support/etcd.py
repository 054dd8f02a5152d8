"""Real etcd for tests: the ``etcd`` and ``etcd3`` fixtures (registered by tests/conftest.py).

The members are ``steering.etcdproc``'s (the demo's embedded etcd): real processes on free loopback
ports, each test with fresh data directories, stopped by PID.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steering.etcdproc import EtcdCluster, EtcdMember

__all__ = ["EtcdCluster", "EtcdMember", "etcd", "etcd3"]


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A single-member etcd, fresh per test."""
    cluster = EtcdCluster.create(1, root=tmp_path / "etcd")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A three-member etcd cluster, for member-loss tests."""
    cluster = EtcdCluster.create(3, root=tmp_path / "etcd3")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()

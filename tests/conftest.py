"""Shared fixtures: real etcd servers on free loopback ports, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steering.testing.etcd import EtcdCluster

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "deploy" / "examples" / "steering.yaml"


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

"""The etcd store: the keyspace of docs/architecture.md §4 behind one small async API. See README.md."""

from steering.store.client import StoreError, StoreUnavailable
from steering.store.election import Leadership
from steering.store.store import Store

__all__ = ["Leadership", "Store", "StoreError", "StoreUnavailable"]

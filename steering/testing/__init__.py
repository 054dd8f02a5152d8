"""Helpers that start real servers (etcd) for tests, benchmarks and the demo."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "deploy" / "examples"
EXAMPLE_CONFIG = EXAMPLES / "steering.yaml"

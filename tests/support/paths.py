"""Where things are: the repository, its example deployment, this venv's console scripts."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "deploy" / "examples"
EXAMPLE_CONFIG = EXAMPLES / "steering.yaml"
AGENT_EXAMPLE = EXAMPLES / "agent.yaml"


def script(name: str) -> str:
    """A console script of this venv (``steering``, ``steerctl``): what an operator runs."""
    return str(Path(sys.executable).parent / name)


STEERING = script("steering")
STEERCTL = script("steerctl")

"""``steerctl`` as an operator runs it: the console script in a subprocess."""

from __future__ import annotations

import asyncio
import os

from tests.support.paths import STEERCTL


async def steerctl(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> tuple[int, str, str]:
    """Run ``steerctl args``; (exit code, stdout, stderr). Never a developer's token; never a traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STEERCTL_")}
    base["STEERCTL_TOKEN_FILE"] = "/nonexistent"  # never pick up a developer's token
    proc = await asyncio.create_subprocess_exec(STEERCTL, *args, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={**base, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return proc.returncode, out.decode(), err.decode()

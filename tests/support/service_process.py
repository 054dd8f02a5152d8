"""A stand-in service process for the end-to-end tests: it embeds steering.client and, every 50 ms,
prints as one JSON line where it would send one client (target, table version, connection state).

    python tests/support/service_process.py --server H:P [--server H:P] --service NAME --client ADDR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from steering import logs
from steering.client import SteeringClient


async def main(servers: list[str], service: str, client: str) -> None:
    async with SteeringClient(servers, backoff_initial=0.1, backoff_max=1.0) as steer:
        while True:
            chosen = steer.choose(service, client_address=client) if steer.table is not None else None
            print(json.dumps({"t": time.time(), "target": chosen.target if chosen else None,
                              "version": steer.version, "connected": steer.connected}), flush=True)
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--client", required=True)
    a = ap.parse_args()
    logs.setup(level="warning")  # logs to stderr; stdout carries only the JSON lines
    try:
        asyncio.run(main(a.server, a.service, a.client))
    except KeyboardInterrupt:
        sys.exit(0)

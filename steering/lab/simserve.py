"""One region's simulated targets as a process of its own (the lab's ``up`` returns; they keep running).

``python -m steering.lab.simserve STATE_DIR TARGET:PORT:CAPACITY:LOAD ...`` serves each target with
``steering.demo.simtarget.SimTarget`` on 127.0.0.1:PORT of the namespace it runs in, its state in
``STATE_DIR/TARGET.json``, until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from steering.demo.simtarget import SimTarget


def main(argv: list[str]) -> int:
    state_dir = Path(argv[0])
    state_dir.mkdir(parents=True, exist_ok=True)
    sims = []
    for spec in argv[1:]:
        target, port, capacity, load = spec.split(":")
        sims.append(SimTarget(target, state_dir / f"{target}.json", float(capacity), float(load),
                              port=int(port)).start())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1.0):  # a timeout: signal handlers run between waits
        pass
    for s in sims:
        s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

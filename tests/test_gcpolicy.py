"""The controller's collector policy (steering.controller.gcpolicy), in a process of its own: it changes the
interpreter's global collector state, which a test worker must keep."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, weakref
    from prometheus_client import REGISTRY
    from steering.controller import gcpolicy

    gcpolicy.settle_after_start()
    assert gc.get_threshold()[0] == gcpolicy.YOUNG_THRESHOLD, gc.get_threshold()
    assert gc.get_freeze_count() > 1000, gc.get_freeze_count()  # what start-up built is out of reach
    timed = REGISTRY.get_sample_value("steering_gc_seconds_total", {"generation": "2"})
    assert timed is not None and timed > 0, timed

    class Node:
        pass

    # Cyclic garbage is still collected, in larger batches: made well past the threshold, none of it stays.
    probes = []
    for i in range(3 * gcpolicy.YOUNG_THRESHOLD // 2):
        a, b = Node(), Node()
        a.other, b.other = b, a
        if i % 1000 == 0:
            probes.append(weakref.ref(a))
    del a, b
    young = REGISTRY.get_sample_value("steering_gc_seconds_total", {"generation": "0"})
    assert young is not None and young > 0, "no young collection ran"
    gone = sum(p() is None for p in probes)
    assert gone >= len(probes) // 2, (gone, len(probes))  # collected on its own, not only when asked
    gc.collect()
    assert all(p() is None for p in probes)
    print("ok")
""")


def test_the_policy_freezes_start_up_times_collections_and_still_collects_cycles() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]

"""The tests' own layer: real parts to test against, and the one way to wait for them.

Nothing here ships in the installed packages. Modules, one concept each:

- ``wait``: ``eventually`` (and ``eventually_sync`` for tests without an event loop), the only polling helper;
- ``paths``: the repository root, the example deployment, the console scripts;
- ``ports``, ``procs``: free loopback ports; stopping a child by PID (both shared with ``steering.etcdproc``);
- ``etcd``: the ``etcd``/``etcd3`` fixtures (real members from ``steering.etcdproc``);
- ``controller``: controller configs, a controller in-process or as the shipped command, its API clients;
- ``reporters``: fake agents streaming reports into a controller under test;
- ``dns_server``: DNS configs and hand-made tables, the server in-process or as the shipped command;
- ``agent_targets``: what an agent under test talks to (a recording controller, HTTP/TCP/gRPC targets);
- ``route53``: moto's Route 53 (patched) and a fault-injecting proxy, and their fixtures;
- ``store``: table factories and ``Follower`` for the store tests;
- ``strategies``: Hypothesis strategies shared by the property tests (configs, overrides, geo maps);
- ``cli``: ``steerctl`` as a subprocess; ``pki``: a tokens file and certificates.

Light imports only here, so the benchmarks (which put the repository root on ``sys.path``) can import
``tests.support`` without pytest.
"""

from tests.support.paths import EXAMPLE_CONFIG, EXAMPLES, ROOT
from tests.support.ports import free_port
from tests.support.procs import stop_process
from tests.support.wait import eventually, eventually_sync

__all__ = ["EXAMPLES", "EXAMPLE_CONFIG", "ROOT", "eventually", "eventually_sync", "free_port", "stop_process"]

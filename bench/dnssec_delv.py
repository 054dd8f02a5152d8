"""A real validator on our signed answers: BIND's ``delv`` against ``steering dns`` with the zone's key as
its trust anchor (docs/dnssec.md).

    .venv/bin/python bench/dnssec_delv.py

Starts ``steering dns --no-etcd`` (one process, a free loopback port) on the example config with
``example.test.`` signed (a fresh combined ECDSA P-256 key) and a table giving each geo its first
preference, writes the key as a ``trust-anchors`` static key, and asks ``delv @127.0.0.1 -p PORT
+root=example.test`` (validation from that anchor: no root or parent needed) for every kind of answer:
steered for three geos (delv sends no ECS, so the geo comes from the source address, ``-b 127.N.0.1``,
inside each geo's configured 127.N.0.0/16), static, CNAME to a steered name, a name that does not exist
(compact denial), NODATA, a wildcard expansion, DS absent at a delegation, the DNSKEY RRset. Each must
print "fully validated"; the exit status is 1 when one does not. Installs Debian ``bind9-dnsutils`` when
``delv`` is missing. The server is stopped by PID.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dnsserver.persist import save_table  # noqa: E402
from dnsserver.zones import load_zones  # noqa: E402
from steering.config import load_config  # noqa: E402
from tests.support.dns_server import DnsProcess, table_with  # noqa: E402
from tests.support.dnssec import signed_config  # noqa: E402

CASES = [
    ("steered na-east", "127.1.0.1", "api.example.test", "A"),
    ("steered europe", "127.3.0.1", "api.example.test", "A"),
    ("steered asia-pacific", "127.5.0.1", "api.example.test", "AAAA"),
    ("static", "127.0.0.1", "mail.example.test", "A"),
    ("CNAME to steered", "127.3.0.1", "www.example.test", "A"),
    ("no such name (compact denial)", "127.0.0.1", "nope.example.test", "A"),
    ("NODATA", "127.0.0.1", "mail.example.test", "AAAA"),
    ("wildcard", "127.0.0.1", "x.wild.example.test", "A"),
    ("wildcard NODATA", "127.0.0.1", "x.wild.example.test", "AAAA"),
    ("DS absent at a delegation", "127.0.0.1", "child.example.test", "DS"),
    ("DNSKEY", "127.0.0.1", "example.test", "DNSKEY"),
]


def main() -> int:
    if shutil.which("delv") is None:
        subprocess.run(["apt-get", "install", "-y", "bind9-dnsutils"], check=True, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="dnssec-delv-"))
    try:
        path, _ = signed_config(work)
        cfg = load_config(path)
        save_table(work / "dns-table.json", table_with(cfg, 1, {}))
        keys = next(z.keys for z in load_zones(cfg) if z.keys is not None)
        anchors = work / "anchors.conf"
        anchors.write_text("trust-anchors {\n" + "".join(
            f'  {keys.origin} static-key {k.dnskey.flags} {k.dnskey.protocol} {k.dnskey.algorithm} '
            f'"{base64.b64encode(k.dnskey.key).decode()}";\n' for k in keys.sep_keys()) + "};\n")
        failed = 0
        with DnsProcess(path, "--workers", "1", "--no-etcd", "--listen", "127.0.0.1:0", metrics=False) as server:
            port = server.ready()
            for label, source, name, qtype in CASES:
                out = subprocess.run(["delv", "@127.0.0.1", "-p", str(port), "-b", source, "-a", str(anchors),
                                      f"+root={keys.origin}", name, qtype],
                                     capture_output=True, text=True, timeout=30)
                text = (out.stdout + out.stderr).strip()
                ok = "fully validated" in text
                failed += not ok
                first = next((line for line in text.splitlines() if not line.startswith(";")), "")
                print(f"{'ok  ' if ok else 'FAIL'} {label:32} {name} {qtype}: {text.splitlines()[0]}  {first}")
                if not ok:
                    print("     " + text.replace("\n", "\n     "))
        print(f"{len(CASES) - failed} of {len(CASES)} fully validated by delv")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

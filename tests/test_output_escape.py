"""Operator safety of output: control characters and terminal escape sequences in stored text (reasons,
check names and details) are printed escaped by ``steerctl`` (a real subprocess), JSON stays JSON."""

from __future__ import annotations

import json

from steering.etcdproc import EtcdCluster
from steering.textsafe import printable
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.cli import steerctl
from tests.support.controller import make_config, start_controller, stubs

# Clear the screen, turn red, set the terminal title, ring the bell; and rich markup that must stay text.
REASON = "\x1b[2J\x1b[31mowned\x1b]0;title\x07[bold]x[/bold]"
SHOWN = "\\x1b[2J\\x1b[31mowned\\x1b]0;title\\x07[bold]x[/bold]"
CHECK = "web\x1b[5m"
DETAIL = "status\x1b[31m503\r\x08"


def _folded(text: str) -> str:
    """A rich table's text without its borders and wrapping, to find a cell's content whole."""
    return "".join(ch for ch in text if ch not in " \n│┃|─━┏┓┗┛┡┩└┘╇")


def _raw_controls(text: str) -> list[str]:
    return [ch for ch in text if (ord(ch) < 32 and ch != "\n") or 0x7F <= ord(ch) < 0xA0]


async def test_escape_sequences_in_a_reason_and_a_check_are_printed_escaped(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    ch, op, _, md = stubs(run.target)
    env = {"STEERCTL_SERVER": run.target, "COLUMNS": "400"}  # wide enough that no cell is cut
    try:
        await op.Evacuate(pb.EvacuateRequest(region="us-west-2", mode=pb.EVACUATION_MODE_NOW, reason=REASON),
                          metadata=md)
        agent = run.agents["eu-west-1"]
        agent.checks = [pb.CheckResult(name=CHECK, kind="http", ok=False, detail=DETAIL)]  # type: ignore[attr-defined]
        agent.set(status=pb.HEALTH_STATUS_UNHEALTHY)

        def unhealthy() -> bool:
            t = run.ctl.tables.current
            return t is not None and t.regions["eu-west-1"].health == "unhealthy"

        await eventually(unhealthy, what="eu-west-1 unhealthy in the table")

        rc, out, err = await steerctl("history", env=env)
        assert rc == 0, err
        assert _raw_controls(out) == [], "history printed raw control characters"
        assert SHOWN in _folded(out), out

        rc, out, err = await steerctl("status", env=env)
        assert rc == 0, err
        assert _raw_controls(out) == [], "status printed raw control characters"
        folded = _folded(out)
        assert SHOWN in folded, out  # the evacuation's reason
        assert "web\\x1b[5m(http):status\\x1b[31m503\\r\\x08" in folded, out  # the failing check, in "why"

        # JSON stays JSON: the exact text, escaped by JSON itself.
        rc, out, err = await steerctl("history", "--json", env=env)
        assert rc == 0 and _raw_controls(out) == []
        assert json.loads(out)["records"][0]["reason"] == REASON
        rc, out, err = await steerctl("status", "--json", env=env)
        assert rc == 0 and _raw_controls(out) == []
        data = json.loads(out)
        assert data["evacuations"][0]["reason"] == REASON
        eu = next(r for r in data["regions"] if r["region"] == "eu-west-1")
        assert eu["checks"] == [{"name": CHECK, "kind": "http", "detail": DETAIL}]
    finally:
        await ch.close()
        await run.stop()


def test_printable_escapes_controls_and_keeps_other_text() -> None:
    assert printable("a\x1b[31mb\n\t\x7f\x9b\u202e") == "a\\x1b[31mb\\n\\t\\x7f\\x9b\\u202e"
    assert printable("Zürich — 東京 ok") == "Zürich — 東京 ok"
    assert printable("x" * 1_000_000, 10) == "x" * 9 + "…"
    assert printable(None) == "None"

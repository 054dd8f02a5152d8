"""`steerctl` as a real console script in a subprocess against a controller on a real etcd."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from steering.etcdproc import EtcdCluster
from steering.store import Store
from tests.support.cli import steerctl
from tests.support.controller import make_config, region_share, start_controller


async def test_status_evacuate_history_restore_and_exit_codes(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    store = Store(config.etcd)
    await store.open()
    env = {"STEERCTL_SERVER": run.target}
    try:
        rc, out, err = await steerctl("status", env=env)
        assert rc == 0, err
        for word in ("us-east-1", "healthy", "na-east", "leader c1", "utilization"):
            assert word in out, (word, out)
        rc, out, _ = await steerctl("status", "--json", env=env)
        data = json.loads(out)
        assert data["leader"] == "c1" and data["table"]["version"] >= 1
        assert {r["region"] for r in data["regions"]} == {"us-east-1", "us-west-2", "eu-west-1"}
        assert data["geos"]["api.example.test."]["europe"] == {"eu-west-1": 1000}

        # Dry run: a preview, nothing written.
        rc, out, err = await steerctl("evacuate", "eu-west-1", "--reason", "maint", "--now", "--dry-run", env=env)
        assert rc == 0 and "before -> after" in out and "dry run" in out, (out, err)
        assert (await store.get_overrides()).evacuations == ()

        # Not confirmed: nothing written, exit 2.
        rc, out, err = await steerctl("evacuate", "eu-west-1", "--reason", "maint", "--now", env=env, stdin="n\n")
        assert rc == 2 and "not confirmed" in err
        assert (await store.get_overrides()).evacuations == ()

        # For real, ramped, following the table until it reflects it; the first server is down.
        env2 = {"STEERCTL_SERVER": f"127.0.0.1:1,{run.target}"}
        rc, out, err = await steerctl("evacuate", "eu-west-1", "--reason", "maint", "--ramp", "50%/0.3s", "--yes",
                                      "--json", env=env2)
        assert rc == 0, err
        res = json.loads(out)
        assert res["applied"] and not res["dry_run"] and res["audit_id"] and res["table_version"]
        assert any(c["geo"] == "europe" and c["after"].get("eu-west-1", 0) == 0 for c in res["preview"]["changes"])
        assert region_share(await store.get_table(), "eu-west-1") == 0

        # A second evacuation would leave one region: refused by a safety rule, exit 1, one line.
        rc, out, err = await steerctl("evacuate", "us-west-2", "--reason", "x", "--now", "--yes", env=env)
        assert rc == 1 and "min_serving_regions" in err and len(err.strip().splitlines()) == 1, err
        rc, out, err = await steerctl("evacuate", "us-west-2", "--reason", "x", "--now", "--yes", "--json", env=env)
        assert rc == 1 and json.loads(out)["error"]["code"] == "FAILED_PRECONDITION"
        # Bad input: exit 2.
        rc, _, err = await steerctl("evacuate", "mars-1", "--reason", "x", "--yes", env=env)
        assert rc == 2 and err.startswith("steerctl: region:"), err

        rc, out, _ = await steerctl("plan", "--live", "--restore", "eu-west-1", "--json", env=env)
        assert rc == 0 and json.loads(out)["table"]["regions"]["eu-west-1"]["serving"] is True

        rc, out, err = await steerctl("restore", "eu-west-1", "--now", "--yes", env=env)
        assert rc == 0 and "done: routing table" in out, (out, err)
        t = await store.get_table()
        assert t is not None and t.route("api.example.test.", "europe").weights["eu-west-1"] == 1000  # type: ignore[union-attr]

        rc, out, _ = await steerctl("history", "--json", env=env)
        recs = json.loads(out)["records"]
        assert [r["action"] for r in recs] == ["restore", "evacuate"] and recs[1]["reason"] == "maint"
        assert recs[1]["details"]["mode"] == "ramp"
        rc, out, _ = await steerctl("history", env=env)
        assert rc == 0 and "evacuate" in out and "maint" in out

        rc, out, _ = await steerctl("watch", "--count", "1", "--json", env=env)
        assert rc == 0 and json.loads(out.splitlines()[0])["version"] == t.version

        # No server reachable: exit 3.
        rc, _, err = await steerctl("status", "--timeout", "1", env={"STEERCTL_SERVER": "127.0.0.1:1"})
        assert rc == 3 and "cannot reach any server" in err
    finally:
        await store.close()
        await run.stop()


async def test_tokens_and_roles_from_the_command_line(etcd: EtcdCluster, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"name": "alice", "role": "operator", "token": "op-secret-1"},
                                                 {"name": "bob", "role": "viewer", "token": "view-secret-1"}]}))
    config = make_config(etcd.endpoints, {"auth": {"tokens_file": str(tokens)}})
    run = await start_controller(config, agents=False)
    token_file = tmp_path / "token"
    token_file.write_text("view-secret-1\n")
    env = {"STEERCTL_SERVER": run.target}
    try:
        rc, _, err = await steerctl("status", env=env)
        assert rc == 3 and "not authorized (UNAUTHENTICATED)" in err
        rc, _, err = await steerctl("status", env={**env, "STEERCTL_TOKEN_FILE": str(token_file)})
        assert rc == 0, err
        rc, _, err = await steerctl("evacuate", "eu-west-1", "--reason", "x", "--yes", "--now",
                                    env={**env, "STEERCTL_TOKEN": "view-secret-1"})
        assert rc == 3 and "PERMISSION_DENIED" in err and "operator" in err
        rc, _out, err = await steerctl("evacuate", "eu-west-1", "--reason", "x", "--now", "--dry-run",
                                      "--token", "op-secret-1", env=env)
        assert rc == 0, err
    finally:
        await run.stop()


async def test_plan_live_what_if_unhealthy(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    store = Store(config.etcd)
    await store.open()
    env = {"STEERCTL_SERVER": run.target}
    try:
        before = await store.get_table()
        assert before is not None and before.regions["eu-west-1"].serving
        rc, out, err = await steerctl("plan", "--live", "--unhealthy", "eu-west-1", "--unhealthy", "oc-lon-1",
                                      "--json", env=env)
        assert rc == 0, err
        data = json.loads(out)
        regions = data["table"]["regions"]
        assert regions["eu-west-1"]["serving"] is False and regions["eu-west-1"]["health"] == "unhealthy"
        assert data["table"]["sites"]["oc-lon-1"]["serving"] is False
        changes = {(c["service"], c["geo"]): c for c in data["preview"]["changes"]}
        europe = changes[("api.example.test.", "europe")]
        assert europe["before"]["eu-west-1"] == 1000 and europe["after"].get("eu-west-1", 0) == 0
        assert changes[("video.example.test.", "europe")]["after"].get("oc-lon-1", 0) == 0
        # The receiving regions' projection is there, with their load rising.
        proj = {r["region"]: r for r in data["preview"]["regions"]}
        assert proj["us-east-1"]["planned_load_after"] > proj["us-east-1"]["planned_load_before"]

        rc, out, err = await steerctl("plan", "--live", "--unhealthy", "eu-west-1", env=env)
        assert rc == 0 and "before -> after" in out and "europe" in out and "projected utilization" in out, err

        # A what-if writes nothing: the live state is as it was.
        after = await store.get_table()
        assert after is not None and after.regions["eu-west-1"].serving
        assert after.regions["eu-west-1"].health == "healthy"
        assert (await store.get_overrides()).evacuations == () and await store.list_audit() == []

        # Bad input: an unknown site is exit 2 and names it.
        rc, _, err = await steerctl("plan", "--live", "--unhealthy", "mars-1", env=env)
        assert rc == 2 and "mars-1" in err and len(err.strip().splitlines()) == 1, err
        rc, _, err = await steerctl("plan", "--unhealthy", "eu-west-1", env=env)
        assert rc == 2 and "--live" in err, err
    finally:
        await store.close()
        await run.stop()

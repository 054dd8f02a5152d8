"""The deployment artifacts under deploy/ are consistent with the code.

What a cluster, systemd or Docker would only find out at deploy time is
checked here: every file parses; manifests carry the fields they need and
refer to each other correctly; command lines use flags the CLI really has;
the configurations they ship load with the real config loaders; units carry
the hardening keys (and pass ``systemd-analyze verify`` where systemd is
installed); every metric an alert or a dashboard panel names is exported by
the code; alert rules follow Prometheus' rule schema (and pass ``promtool``,
including the rule unit tests in deploy/prometheus/alerts_test.yml, where
promtool is on PATH or named by $PROMTOOL).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
DOCKER = DEPLOY / "docker"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "steering-dashboard.json"
SOURCE_DIRS = ("steering", "dnsserver", "agents")


# ---------------------------------------------------------------- helpers

def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@functools.cache
def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s_docs() if d["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _workloads() -> list[dict[str, Any]]:
    return _by_kind("Deployment") + _by_kind("DaemonSet")


def _cli_check(argv: list[str]) -> None:
    """Parse ``steering SUBCOMMAND ARGS`` with the real click command (nothing runs)."""
    from steering.cli.main import SUBCOMMANDS

    assert argv and argv[0] in SUBCOMMANDS, f"unknown steering subcommand in {argv}"
    command: click.Command = importlib.import_module(SUBCOMMANDS[argv[0]][0]).command
    try:
        command.make_context(argv[0], list(argv[1:]))
    except click.ClickException as exc:
        raise AssertionError(f"steering {' '.join(argv)}: {exc.format_message()}") from None


def _option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Every series name the daemons expose, read from the live metric objects."""
    from prometheus_client import REGISTRY

    importlib.import_module("steering.controller.metrics")
    importlib.import_module("agents.metrics")
    importlib.import_module("steering.route53.metrics")
    from dnsserver.metrics import Stats, StatsCollector

    families = list(REGISTRY.collect()) + list(StatsCollector(Stats()).collect())
    names: set[str] = set()
    for fam in families:
        if fam.type == "counter":
            names |= {fam.name + "_total", fam.name + "_created"}
        elif fam.type == "histogram":
            names |= {fam.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(fam.name)
    return frozenset(n for n in names if n.startswith("steering_"))


@functools.cache
def _source_text() -> str:
    return "\n".join(p.read_text() for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def _metric_base(name: str) -> str:
    for suffix in ("_total", "_bucket", "_sum", "_count", "_created"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def metrics_named_in(text: str) -> set[str]:
    return set(re.findall(r"\bsteering_[a-z0-9_]+\b", text))


def _check_metrics_exist(where: str, text: str) -> set[str]:
    used = metrics_named_in(text)
    exported = exported_metric_names()
    missing = sorted(used - exported)
    assert not missing, f"{where} names metrics the code does not export: {missing}"
    source = _source_text()
    for name in used:  # and the name is really spelled in the code, not only derived
        base = _metric_base(name)
        assert f'"{base}' in source, f"{where}: {name} ({base}) does not appear in the source"
    return used


# ---------------------------------------------------------------- everything parses

def test_every_yaml_and_json_under_deploy_parses() -> None:
    yamls = _yaml_files()
    assert len(yamls) >= 15
    for path in yamls:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert any(d is not None for d in docs), f"{path}: empty"
    jsons = sorted(DEPLOY.rglob("*.json"))
    assert DASHBOARD in jsons
    for path in jsons:
        json.loads(path.read_text())


# ---------------------------------------------------------------- Kubernetes

def test_kubernetes_kinds_present_and_kustomization_complete() -> None:
    kinds = sorted(d["kind"] for d in _k8s_docs())
    for kind, n in {"Namespace": 1, "ServiceAccount": 1, "ConfigMap": 2, "Deployment": 2, "DaemonSet": 1,
                    "PodDisruptionBudget": 1, "Service": 3}.items():
        assert kinds.count(kind) >= n, f"{kind}: {kinds.count(kind)} < {n}"
    for doc in _k8s_docs():
        assert doc["apiVersion"] and doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "steering", doc["metadata"]["name"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert {i["name"] for i in kustomization["images"]} == {
        c["image"].rsplit(":", 1)[0] for w in _workloads() for c in w["spec"]["template"]["spec"]["containers"]}


def test_controller_deployment_three_replicas_with_matching_pdb() -> None:
    dep = _named("Deployment", "steering-controller")
    assert dep["spec"]["replicas"] == 3
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = _named("PodDisruptionBudget", "steering-controller")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= labels.items()
    assert selector == dep["spec"]["selector"]["matchLabels"]
    assert 1 <= pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]  # a drain can proceed, a quorum stays
    for pdb in _by_kind("PodDisruptionBudget"):  # every PDB selects some workload's pods
        sel = pdb["spec"]["selector"]["matchLabels"].items()
        assert any(sel <= w["spec"]["template"]["metadata"]["labels"].items() for w in _workloads())


def test_workloads_are_hardened_and_complete() -> None:
    for w in _workloads():
        name = w["metadata"]["name"]
        spec = w["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), name
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        _named("ServiceAccount", pod["serviceAccountName"])
        for c in pod["containers"]:
            image = c["image"]
            assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image) and not image.endswith(":latest"), image
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("capabilities", {}).get("add"), name
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), f"{name}: resources.{part}"
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"
            _cli_check(c["args"])


def test_controller_probes_use_grpc_health_on_the_api_port() -> None:
    pod = _named("Deployment", "steering-controller")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
    assert _option(c["args"], "--listen").endswith(f":{port}")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == port, probe
    # The liveness probe must not kill replicas during a long etcd outage: it
    # only asks the process, and gives it a few periods.
    assert c["livenessProbe"]["failureThreshold"] >= 3


def _container_port(workload: dict[str, Any], ref: str | int, protocol: str) -> int:
    for c in workload["spec"]["template"]["spec"]["containers"]:
        for p in c.get("ports", []):
            if (p.get("name") == ref or p["containerPort"] == ref) and p.get("protocol", "TCP") == protocol:
                return int(p["containerPort"])
    raise AssertionError(f"{workload['metadata']['name']}: no {protocol} port {ref!r}")


def test_services_select_pods_and_dns_has_udp_and_tcp_53() -> None:
    dns_ports: set[tuple[str, int]] = set()
    for svc in _by_kind("Service"):
        sel = svc["spec"]["selector"].items()
        targets = [w for w in _workloads() if sel <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"service {svc['metadata']['name']} selects {len(targets)} workloads"
        for p in svc["spec"]["ports"]:
            _container_port(targets[0], p["targetPort"], p.get("protocol", "TCP"))
            if targets[0]["metadata"]["name"] == "steering-dns":
                dns_ports.add((p.get("protocol", "TCP"), p["port"]))
                # Geo by resolver address needs the client's source address kept.
                assert svc["spec"].get("externalTrafficPolicy") == "Local"
    assert {("UDP", 53), ("TCP", 53)} <= dns_ports
    dns = _named("Deployment", "steering-dns")
    listen = _option(dns["spec"]["template"]["spec"]["containers"][0]["args"], "--listen")
    port = int(listen.rsplit(":", 1)[1])
    assert _container_port(dns, port, "UDP") == _container_port(dns, port, "TCP") == port
    grpc_svc = _named("Service", "steering-controller")
    assert grpc_svc["spec"]["ports"][0]["port"] == 50051


def test_referenced_configmaps_and_secrets_exist() -> None:
    configmaps = {d["metadata"]["name"]: d for d in _by_kind("ConfigMap")}
    readme = (DEPLOY / "README.md").read_text()
    for w in _workloads():
        pod = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            for m in c["volumeMounts"]:
                assert m["name"] in volumes, f"{w['metadata']['name']}: mount of unknown volume {m['name']}"
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, v
            if "secret" in v:
                # Secrets are created by the operator, never shipped: the README says how.
                assert f"create secret generic {v['secret']['secretName']}" in readme, v["secret"]["secretName"]


def _mounted_file(workload: dict[str, Any], path: str, files: dict[str, str]) -> str | None:
    """Where ``path`` comes from in the pod: a ConfigMap key's text, '' for other volumes, None if unmounted."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmaps = {d["metadata"]["name"]: d for d in _by_kind("ConfigMap")}
    for m in pod["containers"][0]["volumeMounts"]:
        mount = PurePosixPath(m["mountPath"])
        p = PurePosixPath(path)
        if mount == p or mount in p.parents:
            vol = volumes[m["name"]]
            if "configMap" in vol:
                cm = configmaps.get(vol["configMap"]["name"])
                assert cm is not None, f"{workload['metadata']['name']}: no ConfigMap {vol['configMap']['name']}"
                return cm["data"].get(str(p.relative_to(mount)))
            return files.get(path, "")
    return None


def _normpath(p: str) -> str:
    return os.path.normpath(p)


def test_kubernetes_configs_load_and_every_file_they_name_is_mounted(tmp_path: Path) -> None:
    from agents.config import load_agent_config
    from steering.config import load_config

    for w in _workloads():
        pod = w["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        config_path = _option(args, "--config")
        text = _mounted_file(w, config_path, {})
        assert text, f"{w['metadata']['name']}: {config_path} is not a key of a mounted ConfigMap"
        # Lay the pod's files out under tmp_path, then load with the real loader.
        base = tmp_path / w["metadata"]["name"]
        local = base / config_path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
        raw = yaml.safe_load(text)
        needed: list[str] = []
        config_dir = str(PurePosixPath(config_path).parent)
        if args[0] == "agent":
            if raw.get("token_file"):
                needed.append(_normpath(f"{config_dir}/{raw['token_file']}"))
        else:
            needed += [_normpath(f"{config_dir}/{z['file']}") for z in raw["zones"] if z.get("file")]
            if raw.get("auth"):
                needed.append(_normpath(f"{config_dir}/{raw['auth']['tokens_file']}"))
            for key in ("ca", "cert", "key"):
                if raw["etcd"].get("tls", {}).get(key):
                    needed.append(raw["etcd"]["tls"][key])
        for path in needed:
            src = _mounted_file(w, path, {})
            assert src is not None, f"{w['metadata']['name']}: {path} is named by the config but not mounted"
            f = base / path.lstrip("/")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(src or ("tokens:\n  - {name: agent, role: agent, sha256: '" + "0" * 64 + "'}\n"
                                 if path.endswith("tokens.yaml") else "placeholder\n"))
        if args[0] == "agent":
            cfg = load_agent_config(local)
            assert all(c.startswith("steering-controller.steering.svc") for c in cfg.controllers)
        else:
            cfg = load_config(local)
            assert cfg.auth is not None, "a controller listening beyond loopback needs auth"
            if args[0] == "dns":
                assert _mounted_file(w, cfg.dns.state_file, {}) == "", "the DNS state file needs a writable volume"


# ---------------------------------------------------------------- systemd

def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{n}: bad section header"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{n}: key outside a section"
        assert "=" in line and not line.endswith("\\"), f"{path.name}:{n}: not KEY=VALUE"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


UNITS = {"steering-controller.service": "controller", "steering-dns.service": "dns",
         "steering-agent.service": "agent"}


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_unit_is_hardened(unit: str) -> None:
    u = parse_unit(SYSTEMD / unit)
    assert {"Unit", "Service", "Install"} <= set(u)
    s = {k: v[-1] for k, v in u["Service"].items()}
    expect = {"User": "steering", "Group": "steering", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
              "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "Restart": "on-failure",
              "RestrictSUIDSGID": "yes", "LockPersonality": "yes"}
    for key, value in expect.items():
        assert s.get(key) == value, f"{unit}: {key}={s.get(key)!r}, expected {value!r}"
    assert float(s["TimeoutStopSec"]) > 0
    argv = shlex.split(s["ExecStart"])
    assert argv[0] == "/opt/steering/venv/bin/steering"
    assert argv[1] == UNITS[unit]
    _cli_check([a.replace("%H", "host") for a in argv[1:]])
    if UNITS[unit] == "dns":
        assert s["CapabilityBoundingSet"] == s["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
        assert s["StateDirectory"] == "steering"
        example = yaml.safe_load((DEPLOY / "examples" / "steering.yaml").read_text())
        assert example["dns"]["state_file"].startswith("/var/lib/steering/")
        assert _option(argv, "--listen").endswith(":53")
    else:
        assert s["CapabilityBoundingSet"] == "", f"{unit}: no capabilities at all"
        assert s.get("AmbientCapabilities", "") == ""
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


def test_sysusers_defines_the_steering_user() -> None:
    lines = [ln.split() for ln in (SYSTEMD / "steering.sysusers.conf").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert any(f[0] == "u" and f[1] == "steering" for f in lines)


def test_systemd_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` and the offline security score, where systemd is installed."""
    for unit in UNITS:
        parse_unit(SYSTEMD / unit)  # the structural check runs everywhere
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    # verify insists that ExecStart exists: point it at this checkout's entry point.
    steering_bin = str(Path(sys.executable).with_name("steering"))
    assert Path(steering_bin).exists()
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text().replace("/opt/steering/venv/bin/steering", steering_bin)
        (tmp_path / unit).write_text(text)
    units = [str(tmp_path / u) for u in sorted(UNITS)]
    res = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    for unit in units:
        res = subprocess.run([analyze, "security", "--offline=true", unit], capture_output=True, text=True,
                             timeout=30)
        if res.returncode != 0 and "offline" in res.stderr:
            continue  # systemd older than 250 has no offline analysis
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", res.stdout + res.stderr)
        assert m, res.stdout + res.stderr
        assert float(m.group(1)) <= 2.5, f"{unit}: exposure {m.group(1)}"


# ---------------------------------------------------------------- Docker

def _dockerfile() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    instructions = _dockerfile()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "--constraint constraints.txt" in runs
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["steering"]
    ignore = [ln.strip() for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    for word, rest in instructions:
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                assert f"!{src.rstrip('/')}/" in ignore or f"!{src}" in ignore, f"{src} is excluded by dockerignore"


@functools.cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_compose_services(tmp_path: Path) -> None:
    from agents.config import load_agent_config
    from steering.config import load_config

    compose = _compose()
    services = compose["services"]
    assert services["etcd"]["image"].startswith("quay.io/coreos/etcd:v3.5.")
    steering = {n: s for n, s in services.items() if s.get("image") == "steering:local"}
    by_role: dict[str, list[str]] = {}
    for name, svc in steering.items():
        build = svc["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        _cli_check(svc["command"])
        by_role.setdefault(svc["command"][0], []).append(name)
    assert len(by_role["controller"]) == 2 and len(by_role["dns"]) == 1
    regions = set()
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        assert set(deps) <= set(services), f"{name}: depends on {set(deps) - set(services)}"
        for vol in svc.get("volumes", []):
            host = vol.split(":")[0]
            if host.startswith("."):
                assert (DOCKER / host).exists(), f"{name}: {host} does not exist"
            else:
                assert host in compose["volumes"], f"{name}: unknown volume {host}"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is published beyond loopback"
    # Lay out the container's /etc/steering from the bind mounts, then load every config.
    etc = tmp_path / "etc" / "steering"
    for vol in services["controller-1"]["volumes"]:
        host, container = vol.split(":")[:2]
        dest = tmp_path / container.lstrip("/")
        if (DOCKER / host).is_dir():
            shutil.copytree(DOCKER / host, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DOCKER / host, dest)
    for name in by_role["controller"] + by_role["dns"]:
        cfg = load_config(tmp_path / _option(steering[name]["command"], "--config").lstrip("/"))
        assert all(e.split(":")[0] in services for e in cfg.etcd.endpoints)
    for name in by_role["agent"]:
        cfg = load_agent_config(tmp_path / _option(steering[name]["command"], "--config").lstrip("/"))
        regions.add(cfg.region)
        assert all(c.split(":")[0] in by_role["controller"] for c in cfg.controllers)
        for probe in cfg.probes:
            host = re.sub(r"^\w+://", "", getattr(probe, "url", "") or getattr(probe, "address", ""))
            assert host.split("/")[0].split(":")[0] in services, f"{name}: probes {host}, not a compose service"
        assert f"target-{cfg.region}" in services[name]["depends_on"]
    assert regions == {"us-east-1", "us-west-2", "eu-west-1"}
    assert etc.exists()


# ---------------------------------------------------------------- Prometheus

def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")

REQUIRED_ALERTS = {  # the list -> our rule names
    "region evacuated": "SteeringRegionEvacuated",
    "fail-open active": "SteeringFailOpen",
    "no leader": "SteeringNoLeader",
    "table stale": "SteeringTableStale",
    "route 53 sync failing": "SteeringRoute53SyncFailing",
    "agents silent": "SteeringAgentsSilent",
}


def test_alert_rules_schema() -> None:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    assert set(doc) == {"groups"}
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names))
    for g in doc["groups"]:
        assert set(g) <= {"name", "rules", "interval", "limit"} and g["rules"]
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for r in _rules():
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r["alert"]
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", r["alert"])
        assert isinstance(r["expr"], str) and r["expr"].strip()
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
        assert DURATION.match(str(r["for"])), f"{r['alert']}: for: {r['for']!r}"
        assert r["labels"]["severity"] in ("critical", "warning", "info")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    assert set(REQUIRED_ALERTS.values()) <= set(names)


def test_alert_rules_name_only_exported_metrics() -> None:
    used = _check_metrics_exist("alerts.yml", (PROM / "alerts.yml").read_text())
    assert {"steering_leader", "steering_fail_open", "steering_region_evacuated", "steering_silent_sites",
            "steering_route53_syncs_total", "steering_dns_table_version", "steering_table_version"} <= used
    _check_metrics_exist("alerts_test.yml", (PROM / "alerts_test.yml").read_text())
    _check_metrics_exist("deploy/README.md", (DEPLOY / "README.md").read_text())


def test_prometheus_scrape_configs_match_the_deployments() -> None:
    compose = _compose()["services"]
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        cfg = yaml.safe_load((PROM / name).read_text())
        for rule_file in cfg["rule_files"]:
            assert (PROM / rule_file).exists()
        assert {j["job_name"] for j in cfg["scrape_configs"]}
    static = yaml.safe_load((PROM / "prometheus.yml").read_text())
    scraped = set()
    for job in static["scrape_configs"]:
        for sc in job["static_configs"]:
            # The alert rules select on the component label (up{component="controller"}).
            assert sc["labels"]["component"] in ("controller", "dns", "agent")
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                cmd = compose[host]["command"]
                assert _option(cmd, "--metrics-addr").endswith(f":{port}"), target
                scraped.add(host)
    assert scraped == {n for n, s in compose.items() if s.get("image") == "steering:local"}
    # Kubernetes: pods carry the scrape annotations with the port their --metrics-addr uses.
    for w in _workloads():
        meta = w["spec"]["template"]["metadata"]
        c = w["spec"]["template"]["spec"]["containers"][0]
        assert meta["annotations"]["prometheus.io/scrape"] == "true"
        assert _option(c["args"], "--metrics-addr").endswith(":" + meta["annotations"]["prometheus.io/port"])
        assert meta["labels"]["app.kubernetes.io/component"] in ("controller", "dns", "agent")


def _promtool() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


def test_promtool_checks_and_rule_unit_tests() -> None:
    """promtool where available; the schema checks above run everywhere."""
    test_alert_rules_schema()
    promtool = _promtool()
    if promtool is None:
        return
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        res = subprocess.run([promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"promtool {' '.join(args)}:\n{res.stdout}\n{res.stderr}"


def test_rule_unit_tests_cover_the_required_alerts() -> None:
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    tested = {t["alertname"] for case in doc["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert set(REQUIRED_ALERTS.values()) <= tested


# ---------------------------------------------------------------- Grafana

def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def test_grafana_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ds_vars = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds_vars and ds_vars[0]["query"] == "prometheus"
    panels = list(_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    exprs = []
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]!r} and {p['title']!r} overlap"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            exprs.append(t["expr"])
    used = _check_metrics_exist("steering-dashboard.json", "\n".join(exprs))
    wanted = {  # the panels the issue asks for
        "leader": "steering_leader", "table version": "steering_table_version",
        "table age": "steering_table_generated_timestamp_seconds", "region serving": "steering_region_serving",
        "utilization": "steering_region_planned_utilization", "fail-open": "steering_fail_open",
        "reports received": "steering_reports_received_total", "reports rejected": "steering_reports_rejected_total",
        "etcd writes": "steering_etcd_writes_total", "dns queries by rcode": "steering_dns_queries_total",
        "route 53 syncs": "steering_route53_syncs_total", "route 53 errors": "steering_route53_errors_total",
    }
    missing = {k: v for k, v in wanted.items() if v not in used}
    assert not missing, missing
    assert any("by (rcode)" in e and "steering_dns_queries_total" in e for e in exprs)


def test_metric_check_catches_a_misspelled_name() -> None:
    """The metric checks above would fail on a name the code does not export."""
    with pytest.raises(AssertionError, match="steering_leaders"):
        _check_metrics_exist("probe", "max(steering_leaders) < 1")
    assert "steering_dns_queries_total" in exported_metric_names()
    assert "steering_dns_queries" not in exported_metric_names()  # counters are exposed with _total

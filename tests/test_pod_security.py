"""Every pod template of every overlay meets the ``restricted`` Pod Security Standard.

The standard's controls (``tests/pod_security.py``) are applied to each pod
template ``kubectl kustomize`` renders, as Pod Security Admission applies them
to workload templates (``warn`` and ``audit``) and to the pods they create
(``enforce``). Each control is first proven to catch a pod that breaks only
it. The ``openshift`` overlay also runs with no fixed uid, gid or fsGroup
(OpenShift's restricted-v2 SCC assigns them) and ships the reference's Route.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.pod_security import RESTRICTED, restricted_violations
from tests.test_manifests import KUSTOMIZATIONS, Obj, _one, _pod_specs, _render

POD_OWNERS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")


def _templates(objects: tuple[Obj, ...]) -> list[tuple[str, Obj, Obj]]:
    """(workload, pod spec, pod annotations) for every pod template."""
    found = []
    for workload, pod in _pod_specs(objects):
        kind, name = workload.split("/", 1)
        owner = _one(objects, kind, name)
        template = owner["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" \
            else owner if kind == "Pod" else owner["spec"]["template"]
        found.append((workload, pod, (template.get("metadata") or {}).get("annotations") or {}))
    return found


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_pod_template_meets_restricted(name: str) -> None:
    objects = _render(name)
    templates = _templates(objects)
    owners = [f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["kind"] in POD_OWNERS]
    assert sorted(w for w, _, _ in templates) == sorted(owners) == \
        ["Deployment/doraforwarder", "StatefulSet/redis"], f"{name}: every workload is checked"
    problems = {workload: restricted_violations(pod, annotations)
                for workload, pod, annotations in templates}
    assert not any(problems.values()), f"{name} breaks restricted: {problems}"


# --- each control catches what breaks it ---------------------------------------------------

COMPLIANT: Obj = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{
        "name": "app", "image": "app",
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }],
    "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "config", "configMap": {"name": "c"}}],
}


def _container(pod: Obj) -> Obj:
    return pod["containers"][0]


def _sc(pod: Obj) -> Obj:
    return _container(pod)["securityContext"]


Mutation = Callable[[Obj], Any]
BREAKS: list[tuple[str, Mutation, Obj | None]] = [
    ("HostProcess", lambda p: _sc(p).update(windowsOptions={"hostProcess": True}), None),
    ("Host Namespaces", lambda p: p.update(hostNetwork=True), None),
    ("Host Namespaces", lambda p: p.update(hostPID=True), None),
    ("Privileged Containers", lambda p: _sc(p).update(privileged=True), None),
    ("Capabilities (baseline)", lambda p: _sc(p)["capabilities"].update(add=["SYS_ADMIN"]),
     None),
    ("HostPath Volumes", lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
     None),
    ("Host Ports", lambda p: _container(p).update(ports=[{"containerPort": 80, "hostPort": 80}]),
     None),
    ("AppArmor", lambda p: _sc(p).update(appArmorProfile={"type": "Unconfined"}), None),
    ("AppArmor", lambda p: None,
     {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
    ("SELinux", lambda p: _sc(p).update(seLinuxOptions={"type": "spc_t"}), None),
    ("SELinux", lambda p: p["securityContext"].update(seLinuxOptions={"user": "system_u"}),
     None),
    ("/proc Mount Type", lambda p: _sc(p).update(procMount="Unmasked"), None),
    ("Sysctls", lambda p: p["securityContext"].update(
        sysctls=[{"name": "kernel.msgmax", "value": "1"}]), None),
    ("Volume Types", lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "s"}}),
     None),
    ("Privilege Escalation", lambda p: _sc(p).pop("allowPrivilegeEscalation"), None),
    ("Running as Non-root", lambda p: p["securityContext"].pop("runAsNonRoot"), None),
    ("Running as Non-root", lambda p: _sc(p).update(runAsNonRoot=False), None),
    ("Running as Non-root user", lambda p: _sc(p).update(runAsUser=0), None),
    ("Seccomp", lambda p: p["securityContext"].pop("seccompProfile"), None),
    ("Seccomp", lambda p: _sc(p).update(seccompProfile={"type": "Unconfined"}), None),
    ("Capabilities", lambda p: _sc(p)["capabilities"].update(drop=["NET_RAW"]), None),
    ("Capabilities", lambda p: _sc(p)["capabilities"].update(add=["CHOWN"]), None),
    ("Capabilities", lambda p: p.update(initContainers=[{"name": "init", "image": "i",
                                                        "securityContext": {}}]), None),
]


def test_the_compliant_pod_and_what_stays_allowed() -> None:
    assert restricted_violations(COMPLIANT) == {}
    pod = copy.deepcopy(COMPLIANT)
    # What restricted still allows: the container's own settings instead of the pod's,
    # NET_BIND_SERVICE, safe sysctls, RuntimeDefault AppArmor, container_t.
    pod["securityContext"] = {"sysctls": [{"name": "net.ipv4.ip_local_port_range",
                                           "value": "1024 65535"}]}
    _sc(pod).update(runAsNonRoot=True, runAsUser=1000680000,
                    seccompProfile={"type": "Localhost", "localhostProfile": "p.json"},
                    appArmorProfile={"type": "RuntimeDefault"},
                    seLinuxOptions={"type": "container_t", "level": "s0:c1,c2"})
    _sc(pod)["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    pod["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "d"}})
    assert restricted_violations(
        pod, {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}) == {}


@pytest.mark.parametrize(("control", "mutation", "annotations"), BREAKS,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BREAKS)])
def test_each_control_catches_what_breaks_it(control: str, mutation: Mutation,
                                             annotations: Obj | None) -> None:
    pod = copy.deepcopy(COMPLIANT)
    mutation(pod)
    found = restricted_violations(pod, annotations)
    assert control in found, f"{control} missed: {found}"


def test_every_control_is_proven() -> None:
    assert {control for control, _, _ in BREAKS} == set(RESTRICTED) - {"Seccomp (baseline)"} \
        | {"Seccomp"}
    # Baseline's seccomp (no Unconfined) is covered by the restricted one's case above.
    pod = copy.deepcopy(COMPLIANT)
    pod["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert {"Seccomp (baseline)", "Seccomp"} <= set(restricted_violations(pod))


# --- OpenShift ---------------------------------------------------------------------------------

ID_FIELDS = ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "seLinuxOptions")


def test_openshift_runs_with_the_ids_the_platform_assigns() -> None:
    """restricted-v2 assigns uid, fsGroup and SELinux level from the namespace's ranges
    and refuses pods that pin others (10001 and 999 elsewhere)."""
    objects = _render("openshift")
    for workload, pod, _ in _templates(objects):
        scs = [("pod", pod.get("securityContext") or {})] + [
            (c["name"], c.get("securityContext") or {}) for c in pod["containers"]]
        for where, sc in scs:
            pinned = [field for field in ID_FIELDS if field in sc]
            assert not pinned, f"openshift: {workload} {where} pins {pinned}"
        for container in pod["containers"]:
            sc = container["securityContext"]
            # What restricted-v2 requires of every container.
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["runAsNonRoot"] is True
    # The other overlays still pin them (the images' users).
    production = _render("production")
    pinned = [pod["securityContext"].get("runAsUser") for _, pod, _ in _templates(production)]
    assert pinned == [10001, 999]


def test_openshift_route_as_the_reference_ships_it() -> None:
    objects = _render("openshift")
    route = _one(objects, "Route", "doraforwarder")
    assert route["apiVersion"] == "route.openshift.io/v1"
    service = _one(objects, "Service", route["spec"]["to"]["name"])
    assert route["spec"]["to"]["kind"] == "Service"
    assert route["spec"]["port"]["targetPort"] in {p["name"] for p in service["spec"]["ports"]}
    assert route["spec"]["tls"] == {"termination": "edge",
                                    "insecureEdgeTerminationPolicy": "Redirect"}
    # The daemon's NetworkPolicy lets the router in: its port is open to every peer.
    policy = _one(objects, "NetworkPolicy", "doraforwarder")["spec"]
    assert [rule.get("from") for rule in policy["ingress"]] == [None]
    assert not [o for o in _render("production") if o["kind"] == "Route"]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_namespace_enforces_restricted(name: str) -> None:
    """Admission holds every later pod to the same profile the templates meet."""
    labels = _one(_render(name), "Namespace", "doraforwarder")["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", (name, mode)
    assert labels.get("pod-security.kubernetes.io/enforce-version", "latest") == "latest"

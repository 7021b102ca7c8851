"""The Pod Security Standards' ``restricted`` profile, applied to a pod spec.

The controls of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(the profile as of Kubernetes 1.31 and later, "latest" in Pod Security
Admission): every Baseline control, then the Restricted ones. Each function
below is one control, reads only the fields the standard names, and returns
what violates it, so a failure says which control and which container.
No maintained Python checker exists on PyPI; ``tests/test_pod_security.py``
proves each control against a pod that breaks only it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Obj = dict[str, Any]

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                "persistentVolumeClaim", "projected", "secret"})
VOLUME_FIELDS_IGNORED = frozenset({"name"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def containers(pod: Obj) -> Iterator[tuple[str, Obj]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(field) or []:
            yield f"{field}[{container.get('name')}]", container


def _sc(container: Obj) -> Obj:
    return container.get("securityContext") or {}


def _pod_sc(pod: Obj) -> Obj:
    return pod.get("securityContext") or {}


def _windows(pod: Obj) -> bool:
    return (pod.get("os") or {}).get("name") == "windows"


# --- Baseline -----------------------------------------------------------------------------


def host_process(pod: Obj, annotations: Obj) -> list[str]:
    found = []
    if (_pod_sc(pod).get("windowsOptions") or {}).get("hostProcess"):
        found.append("spec.securityContext.windowsOptions.hostProcess")
    for where, c in containers(pod):
        if (_sc(c).get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}.securityContext.windowsOptions.hostProcess")
    return found


def host_namespaces(pod: Obj, annotations: Obj) -> list[str]:
    return [f"spec.{field}" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]


def privileged(pod: Obj, annotations: Obj) -> list[str]:
    return [f"{where}.securityContext.privileged" for where, c in containers(pod)
            if _sc(c).get("privileged")]


def capabilities_baseline(pod: Obj, annotations: Obj) -> list[str]:
    found = []
    for where, c in containers(pod):
        added = set((_sc(c).get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            found.append(f"{where} adds {sorted(added - BASELINE_CAPABILITIES)}")
    return found


def host_path_volumes(pod: Obj, annotations: Obj) -> list[str]:
    return [f"volume {v.get('name')}" for v in pod.get("volumes") or [] if "hostPath" in v]


def host_ports(pod: Obj, annotations: Obj) -> list[str]:
    return [f"{where} hostPort {p['hostPort']}" for where, c in containers(pod)
            for p in c.get("ports") or [] if p.get("hostPort")]


def apparmor(pod: Obj, annotations: Obj) -> list[str]:
    found = []
    profiles = [("spec.securityContext", _pod_sc(pod).get("appArmorProfile"))]
    profiles += [(f"{where}.securityContext", _sc(c).get("appArmorProfile"))
                 for where, c in containers(pod)]
    for where, profile in profiles:
        if profile and profile.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}.appArmorProfile.type {profile.get('type')}")
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and value != "runtime/default" \
                and not str(value).startswith("localhost/"):
            found.append(f"annotation {key}={value}")
    return found


def selinux(pod: Obj, annotations: Obj) -> list[str]:
    found = []
    options = [("spec.securityContext", _pod_sc(pod).get("seLinuxOptions"))]
    options += [(f"{where}.securityContext", _sc(c).get("seLinuxOptions"))
                for where, c in containers(pod)]
    for where, option in options:
        if not option:
            continue
        if option.get("type", "") not in SELINUX_TYPES:
            found.append(f"{where}.seLinuxOptions.type {option['type']}")
        for field in ("user", "role"):
            if option.get(field):
                found.append(f"{where}.seLinuxOptions.{field}")
    return found


def proc_mount(pod: Obj, annotations: Obj) -> list[str]:
    return [f"{where}.securityContext.procMount" for where, c in containers(pod)
            if _sc(c).get("procMount", "Default") != "Default"]


def seccomp_baseline(pod: Obj, annotations: Obj) -> list[str]:
    found = []
    profiles = [("spec.securityContext", _pod_sc(pod).get("seccompProfile"))]
    profiles += [(f"{where}.securityContext", _sc(c).get("seccompProfile"))
                 for where, c in containers(pod)]
    for where, profile in profiles:
        if profile and profile.get("type") == "Unconfined":
            found.append(f"{where}.seccompProfile Unconfined")
    return found


def sysctls(pod: Obj, annotations: Obj) -> list[str]:
    return [f"sysctl {s.get('name')}" for s in _pod_sc(pod).get("sysctls") or []
            if s.get("name") not in SAFE_SYSCTLS]


# --- Restricted -----------------------------------------------------------------------------


def volume_types(pod: Obj, annotations: Obj) -> list[str]:
    found = []
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - VOLUME_FIELDS_IGNORED
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')}: {sorted(kinds - RESTRICTED_VOLUMES)}")
    return found


def privilege_escalation(pod: Obj, annotations: Obj) -> list[str]:
    if _windows(pod):
        return []
    return [f"{where}.securityContext.allowPrivilegeEscalation is not false"
            for where, c in containers(pod) if _sc(c).get("allowPrivilegeEscalation") is not False]


def run_as_non_root(pod: Obj, annotations: Obj) -> list[str]:
    pod_value = _pod_sc(pod).get("runAsNonRoot")
    found = []
    if pod_value is False:
        found.append("spec.securityContext.runAsNonRoot false")
    for where, c in containers(pod):
        value = _sc(c).get("runAsNonRoot")
        if value is False:
            found.append(f"{where}.securityContext.runAsNonRoot false")
        elif value is None and pod_value is not True:
            found.append(f"{where}: runAsNonRoot true neither on it nor on the pod")
    return found


def run_as_non_root_user(pod: Obj, annotations: Obj) -> list[str]:
    found = ["spec.securityContext.runAsUser 0"] if _pod_sc(pod).get("runAsUser") == 0 else []
    return found + [f"{where}.securityContext.runAsUser 0" for where, c in containers(pod)
                    if _sc(c).get("runAsUser") == 0]


def seccomp_restricted(pod: Obj, annotations: Obj) -> list[str]:
    if _windows(pod):
        return []
    allowed = ("RuntimeDefault", "Localhost")
    pod_type = (_pod_sc(pod).get("seccompProfile") or {}).get("type")
    found = []
    if pod_type is not None and pod_type not in allowed:
        found.append(f"spec.securityContext.seccompProfile {pod_type}")
    for where, c in containers(pod):
        own = (_sc(c).get("seccompProfile") or {}).get("type")
        if own is not None and own not in allowed:
            found.append(f"{where}.securityContext.seccompProfile {own}")
        elif own is None and pod_type not in allowed:
            found.append(f"{where}: seccompProfile RuntimeDefault or Localhost neither on it "
                         "nor on the pod")
    return found


def capabilities_restricted(pod: Obj, annotations: Obj) -> list[str]:
    if _windows(pod):
        return []
    found = []
    for where, c in containers(pod):
        capabilities = _sc(c).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{where} does not drop ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            found.append(f"{where} adds {sorted(added)}")
    return found


Control = Callable[[Obj, Obj], list[str]]
BASELINE: dict[str, Control] = {
    "HostProcess": host_process, "Host Namespaces": host_namespaces,
    "Privileged Containers": privileged, "Capabilities (baseline)": capabilities_baseline,
    "HostPath Volumes": host_path_volumes, "Host Ports": host_ports, "AppArmor": apparmor,
    "SELinux": selinux, "/proc Mount Type": proc_mount, "Seccomp (baseline)": seccomp_baseline,
    "Sysctls": sysctls,
}
RESTRICTED: dict[str, Control] = {
    **BASELINE,
    "Volume Types": volume_types, "Privilege Escalation": privilege_escalation,
    "Running as Non-root": run_as_non_root, "Running as Non-root user": run_as_non_root_user,
    "Seccomp": seccomp_restricted, "Capabilities": capabilities_restricted,
}


def restricted_violations(pod: Obj, annotations: Obj | None = None) -> dict[str, list[str]]:
    """Control name -> what breaks it; empty when the pod meets ``restricted``."""
    found = {name: control(pod, annotations or {}) for name, control in RESTRICTED.items()}
    return {name: problems for name, problems in found.items() if problems}

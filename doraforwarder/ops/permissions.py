"""The Kubernetes permissions the daemon needs, derived from its configuration.

One list, used three ways: ``doctor`` asks the API server about each with a
SelfSubjectAccessReview and names what is missing, the manifests' RBAC is
tested to grant exactly these (every API call the tests record is granted,
every rule is used: ``tests/test_rbac.py``), and ``docs/kubernetes.md``
shows them as a table.

What the daemon calls, and nothing else:

- ``list`` and ``watch`` on ``applications.argoproj.io`` in each namespace of
  ``argocd.namespaces`` (the watcher, ``backfill`` and ``doctor`` list; the
  watcher watches), or across the cluster with ``["*"]``. Never ``get``:
  every read is a list or a watch.
- ``create`` on ``tokenreviews.authentication.k8s.io`` and
  ``subjectaccessreviews.authorization.k8s.io`` (cluster-scoped), only with
  ``server.api_auth: kubernetes``: the inventory checks its callers with them.

``selfsubjectaccessreviews`` (``doctor``'s own question) is not listed:
Kubernetes grants it to every authenticated user (the ``system:basic-user``
ClusterRole), so no manifest needs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from doraforwarder.config import Settings

APPLICATIONS_GROUP = "argoproj.io"
APPLICATIONS = "applications"
ALL_NAMESPACES = "*"


@dataclass(frozen=True, order=True)
class Permission:
    """One authorization question: may we ``verb`` ``resource`` of ``group`` in ``namespace``?

    ``namespace`` None is cluster scope: every namespace at once for a
    namespaced resource (a list over ``/apis/.../applications``), or a
    cluster-scoped resource such as a TokenReview.
    """

    verb: str
    group: str
    resource: str
    namespace: str | None
    why: str = field(default="", compare=False)

    @property
    def resource_name(self) -> str:
        """``applications.argoproj.io``, as ``kubectl auth can-i`` takes it."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def describe(self) -> str:
        where = f"in namespace {self.namespace}" if self.namespace is not None else (
            "in every namespace" if self.resource == APPLICATIONS else "(cluster-wide)")
        return f"{self.verb} {self.resource_name} {where}"

    def can_i(self) -> str:
        """The ``kubectl auth can-i`` line that asks the same question."""
        scope = f"-n {self.namespace}" if self.namespace is not None else (
            "--all-namespaces" if self.resource == APPLICATIONS else "")
        return " ".join(filter(None, ["kubectl auth can-i", self.verb, self.resource_name, scope]))


def application_scopes(namespaces: list[str]) -> list[str | None]:
    """The scopes Applications are read in: each namespace, or None (cluster) for ``*``."""
    if ALL_NAMESPACES in namespaces:
        return [None]
    scopes: list[str | None] = [*sorted(set(namespaces))]
    return scopes


def required_permissions(settings: Settings) -> list[Permission]:
    """Every permission the daemon, ``backfill`` and ``doctor`` need with ``settings``."""
    needed: list[Permission] = []
    if settings.argocd.enabled:
        for namespace in application_scopes(list(settings.argocd.namespaces)):
            needed.append(Permission("list", APPLICATIONS_GROUP, APPLICATIONS, namespace,
                                     "read every Application (start, resync, backfill, doctor)"))
            needed.append(Permission("watch", APPLICATIONS_GROUP, APPLICATIONS, namespace,
                                     "follow Application changes"))
    if settings.server.effective_api_auth == "kubernetes":
        needed.append(Permission("create", "authentication.k8s.io", "tokenreviews", None,
                                 "api_auth kubernetes: who is calling the inventory"))
        needed.append(Permission("create", "authorization.k8s.io", "subjectaccessreviews", None,
                                 "api_auth kubernetes: may the caller read Applications"))
    return needed


def granted(call: Permission, grants: set[Permission] | frozenset[Permission]) -> bool:
    """Whether ``grants`` allow ``call`` as RBAC does: a cluster-scope grant (a
    ClusterRole bound by a ClusterRoleBinding) covers every namespace, a
    namespaced one (a Role, or any role bound by a RoleBinding) only its own."""
    return any(
        (grant.verb, grant.group, grant.resource) == (call.verb, call.group, call.resource)
        and (grant.namespace is None or grant.namespace == call.namespace)
        for grant in grants
    )

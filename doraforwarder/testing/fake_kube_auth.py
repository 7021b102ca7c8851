"""Who the fake Kubernetes API server lets in, and what it answers about it.

Authentication and authorization as a real API server does them, apart from
the HTTP: the authorization question each request asks (:class:`Permission`),
RBAC as :func:`granted` reads it, the real server's 403 message, the
process-wide :data:`LEDGER` of the daemon's calls, and the bodies of
TokenReview, SubjectAccessReview and SelfSubjectAccessReview answers (token
audiences, a review judged only from the subject it names, OpenShift token
scopes). Kept pure so that the rules read in one place and
:mod:`doraforwarder.testing.fake_kube` only wires them to its routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from doraforwarder.ops.permissions import APPLICATIONS, APPLICATIONS_GROUP, Permission, granted

SERVICE_ACCOUNT_USER = "system:serviceaccount:doraforwarder:doraforwarder"
"""Who the fake's bearer token authenticates as (in 403 messages)."""
TOKEN_REVIEW = Permission("create", "authentication.k8s.io", "tokenreviews", None)
ACCESS_REVIEW = Permission("create", "authorization.k8s.io", "subjectaccessreviews", None)
SELF_ACCESS_REVIEW = Permission("create", "authorization.k8s.io", "selfsubjectaccessreviews", None)

LEDGER: dict[Permission, str] = {}
"""Every authorization question the daemon (its client's ``User-Agent``
``doraforwarder/...``) asked any FakeKube of this process, with the first
request (method and path) that asked it: the daemon's API calls over the whole
test session, read by ``tests/test_rbac.py``. Tests that call the fake with
clients of their own are left out."""
DAEMON_AGENT = "doraforwarder/"


def record_call(call: Permission, user_agent: str, request: str) -> None:
    """Note ``call`` in :data:`LEDGER` when the daemon asked it (first ``request`` kept)."""
    if user_agent.startswith(DAEMON_AGENT):
        LEDGER.setdefault(call, request)


def applications_call(verb: str, namespace: str | None) -> Permission:
    """The authorization question a request on Applications asks."""
    return Permission(verb, APPLICATIONS_GROUP, APPLICATIONS, namespace)


def allows(permissions: set[Permission] | None, call: Permission) -> bool:
    """Whether ``permissions`` grant ``call`` (None: anything; SelfSubjectAccessReviews: always,
    as every authenticated user may ask one)."""
    return call == SELF_ACCESS_REVIEW or permissions is None or granted(call, permissions)


def forbidden_message(call: Permission, user: str = SERVICE_ACCOUNT_USER) -> str:
    """The message a real API server gives with its 403."""
    resource = f"{call.resource}.{call.group}" if call.group else call.resource
    where = (f'in the namespace "{call.namespace}"' if call.namespace is not None
             else "at the cluster scope")
    return (f'{resource} is forbidden: User "{user}" cannot {call.verb} resource '
            f'"{call.resource}" in API group "{call.group}" {where}')

API_AUDIENCES = ("https://kubernetes.default.svc",)
"""The API server's own audiences: a TokenReview without ``audiences`` asks for these."""

SCOPES_EXTRA = "scopes.authorization.openshift.io"
"""The ``extra`` key under which OpenShift names an OAuth token's scopes."""


@dataclass(frozen=True)
class KubeUser:
    """A user as a TokenReview returns it (``status.user``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ("system:authenticated",)
    extra: dict[str, list[str]] = field(default_factory=dict)
    audiences: tuple[str, ...] = ()
    """Audiences the token was issued for; empty: the API server's own
    (:data:`API_AUDIENCES`, what a ServiceAccount token has by default)."""

    def user_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {key: list(values) for key, values in self.extra.items()}
        return info


def scoped_namespaces(scopes: list[str], granted: set[str]) -> set[str]:
    """Of the namespaces ``granted``, those a token limited to ``scopes`` may still read.

    As OpenShift's scope authorizer: ``user:full`` keeps every grant,
    ``role:<role>:<namespace>`` (optionally ending ``:!``) keeps that namespace
    (``*``: all), and the other scopes (``user:info``, ``user:check-access``,
    ``user:list-projects``...) allow no Application at all.
    """
    kept: set[str] = set()
    for scope in scopes:
        if scope == "user:full":
            return set(granted)
        parts = str(scope).split(":")
        if parts[0] == "role" and len(parts) >= 3:
            kept |= set(granted) if parts[2] == "*" else {parts[2]} & granted
    return kept


def token_review_status(
    spec: dict[str, Any], reviewed_tokens: dict[str, str | KubeUser]
) -> dict[str, Any]:
    """A TokenReview's ``status`` for its ``spec``, from the tokens the fake knows."""
    user = reviewed_tokens.get(str(spec.get("token", "")))
    if isinstance(user, str):
        user = KubeUser(user)
    # As the API server: the token must be valid for one of the audiences asked
    # (its own when none are), and the status names those it matched.
    asked = list(spec.get("audiences") or API_AUDIENCES)
    matched = [a for a in asked if a in (user.audiences or API_AUDIENCES)] if user else []
    return (
        {"authenticated": True, "user": user.user_info(), "audiences": matched}
        if user is not None and matched
        else {"authenticated": False, "error": "invalid bearer token"}
    )


def access_review_allowed(
    spec: dict[str, Any],
    review_verbs: frozenset[str],
    access: dict[str, set[str]],
    group_access: dict[str, set[str]],
) -> bool:
    """Whether a SubjectAccessReview with this ``spec`` is allowed: reading Applications
    (with a verb of ``review_verbs``) in a namespace its subject was granted."""
    attributes = spec.get("resourceAttributes") or {}
    return bool(
        attributes.get("verb") in review_verbs
        and attributes.get("group") == "argoproj.io"
        and attributes.get("resource") == "applications"
        and attributes.get("namespace") in granted_namespaces(spec, access, group_access)
    )


def granted_namespaces(
    spec: dict[str, Any], access: dict[str, set[str]], group_access: dict[str, set[str]]
) -> set[str]:
    """Namespaces a review's subject may read: its user's and its groups' grants (only
    the groups the review names), narrowed by the token scopes its extra names."""
    granted = set(access.get(str(spec.get("user")), set()))
    for group in spec.get("groups") or []:
        granted |= group_access.get(str(group), set())
    scopes = (spec.get("extra") or {}).get(SCOPES_EXTRA)
    if scopes is not None:
        granted &= scoped_namespaces(scopes, granted)
    return granted


def self_review_call(attributes: dict[str, Any]) -> Permission:
    """The question a SelfSubjectAccessReview's ``resourceAttributes`` ask."""
    return Permission(str(attributes.get("verb") or ""), str(attributes.get("group") or ""),
                      str(attributes.get("resource") or ""),
                      str(attributes.get("namespace") or "") or None)


def self_review_status(allowed: bool) -> dict[str, Any]:
    """A SelfSubjectAccessReview's ``status``, as the real server words it."""
    return {"allowed": allowed} if allowed else {"allowed": False, "reason": ""}

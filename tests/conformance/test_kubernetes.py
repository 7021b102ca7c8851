"""Kubernetes conformance: the daemon's view of a cluster the user names.

Opt-in: set ``DORAFORWARDER_CONFORMANCE_KUBECONFIG`` (a kubeconfig whose user
is the identity the daemon runs as, e.g. the ServiceAccount's token from
``kubectl -n doraforwarder create token doraforwarder``) and
``DORAFORWARDER_CONFORMANCE_NAMESPACE`` (a namespace with ArgoCD
Applications). Optional: ``DORAFORWARDER_CONFORMANCE_KUBE_CONTEXT``,
``DORAFORWARDER_CONFORMANCE_API_AUTH=kubernetes`` (also check the review
permissions), ``DORAFORWARDER_CONFORMANCE_WATCH_SECONDS`` (default 15).
Without them the module is skipped with one line. Nothing is written to the
cluster: the tests list, watch and ask access reviews, as the daemon does.

What it checks, each with the daemon's own code (client, listing, decoder,
permission list):

- the Application CRD serves the version the daemon reads (``v1alpha1``),
  namespaced, with ``list`` and ``watch``, and real Applications fit the
  daemon's schema;
- the identity has every permission the configuration needs
  (SelfSubjectAccessReview, as ``doctor``), and the missing ones are named;
- a watch with ``allowWatchBookmarks`` gets a BOOKMARK from the server (the
  API server sends one about 2 s before ``timeoutSeconds`` ends a watch) that
  the daemon's decoder reads, and every event decodes.

docs/kubernetes.md says how to run it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

KUBECONFIG = "DORAFORWARDER_CONFORMANCE_KUBECONFIG"
NAMESPACE = "DORAFORWARDER_CONFORMANCE_NAMESPACE"
CONTEXT = "DORAFORWARDER_CONFORMANCE_KUBE_CONTEXT"
API_AUTH = "DORAFORWARDER_CONFORMANCE_API_AUTH"
WATCH_SECONDS = "DORAFORWARDER_CONFORMANCE_WATCH_SECONDS"


def skip_reason(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    missing = [name for name in (KUBECONFIG, NAMESPACE) if not env.get(name)]
    if missing:
        return ("Kubernetes conformance: set " + " and ".join(missing)
                + " to run it against your cluster (see docs/kubernetes.md)")
    return None


REASON = skip_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from kubernetes.client import CustomObjectsApi  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from doraforwarder.argocd.decode import AppDocument, decode_event, decode_page, to_view  # noqa: E402
from doraforwarder.argocd.kube import build_api_client  # noqa: E402
from doraforwarder.argocd.listing import GROUP, PLURAL, VERSION, list_applications  # noqa: E402
from doraforwarder.argocd.model import MalformedApplication  # noqa: E402
from doraforwarder.argocd.watch_reader import watch_lines  # noqa: E402
from doraforwarder.config import Settings, validate_settings  # noqa: E402
from doraforwarder.ops.permissions import required_permissions  # noqa: E402
from doraforwarder.ops.probes import check_permissions, may  # noqa: E402


@pytest.fixture(scope="module")
def settings() -> Settings:
    document: dict[str, Any] = {"argocd": {
        "namespaces": [os.environ[NAMESPACE]], "kubeconfig": os.environ[KUBECONFIG]}}
    if os.environ.get(CONTEXT):
        document["argocd"]["context"] = os.environ[CONTEXT]
    if os.environ.get(API_AUTH):
        document["server"] = {"api_auth": os.environ[API_AUTH]}
    return validate_settings(document, "the conformance environment")


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Any]:
    api_client = build_api_client(settings.argocd)
    yield api_client
    api_client.close()


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)


def test_application_crd_serves_the_version_the_daemon_reads(client: Any,
                                                             settings: Settings) -> None:
    # The group itself, not the list of every group (/apis): a server without the
    # aggregator (apiextensions-apiserver alone) serves /apis/<group> but not /apis.
    method, url, headers, _, _ = client.param_serialize(
        "GET", f"/apis/{GROUP}", header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    answer = client.call_api(method, url, headers, _request_timeout=30)
    body = answer.read()
    assert answer.status != 404, f"the API server serves no {GROUP}: is ArgoCD's CRD installed?"
    assert answer.status == 200, f"GET /apis/{GROUP}: HTTP {answer.status} {body[:200]!r}"
    group = json.loads(body)
    versions = [v.get("version") for v in group.get("versions") or []]
    assert VERSION in versions, f"{GROUP} serves {versions}; the daemon reads {VERSION}"
    listing = CustomObjectsApi(client).get_api_resources(GROUP, VERSION, _request_timeout=30)
    resources = {r.name: r for r in listing.resources}
    assert PLURAL in resources, f"{GROUP}/{VERSION} has no {PLURAL}: {sorted(resources)}"
    applications = resources[PLURAL]
    assert applications.kind == "Application" and applications.namespaced is True
    assert {"list", "watch"} <= set(applications.verbs), applications.verbs

    # Real Applications fit the daemon's schema (no fallback to raw JSON, no malformed one).
    response = list_applications(CustomObjectsApi(client), settings.argocd.namespaces[0],
                                 limit=20, _preload_content=False, _request_timeout=30)
    try:
        items, metadata = decode_page(response.data)
    finally:
        response.release_conn()
    assert metadata.get("resourceVersion"), "a list answer carries metadata.resourceVersion"
    unfit = [item.get("metadata", {}).get("name") for item in items
             if not isinstance(item, AppDocument)]
    assert not unfit, f"Applications the daemon's schema does not fit: {unfit}"
    malformed = []
    for item in items:
        assert isinstance(item, AppDocument)
        try:
            to_view(item)
        except MalformedApplication as exc:
            malformed.append(f"{item.key}: {exc}")
    assert not malformed, f"Applications the daemon would skip as malformed: {malformed}"


def test_the_identity_has_every_permission_the_daemon_needs(client: Any,
                                                            settings: Settings) -> None:
    needed = required_permissions(settings)
    try:
        missing = [p for p in needed if not may(client, p)]
    except ApiException as exc:
        if exc.status != 404:
            raise
        pytest.fail("the API server does not serve SelfSubjectAccessReview "
                    "(authorization.k8s.io/v1; kube-apiserver does, apiextensions-apiserver "
                    "alone does not): the permissions cannot be asked here")
    assert not missing, ("missing: " + "; ".join(p.describe() for p in missing)
                         + " (check with: " + "; ".join(p.can_i() for p in missing) + ")")
    check = check_permissions(client, needed)
    assert check.outcome == "pass", check


def test_a_watch_gets_bookmarks_the_daemon_reads(client: Any, settings: Settings) -> None:
    api = CustomObjectsApi(client)
    namespace = settings.argocd.namespaces[0]
    response = list_applications(api, namespace, limit=1, _preload_content=False,
                                 _request_timeout=30)
    try:
        _, metadata = decode_page(response.data)
    finally:
        response.release_conn()
    start = metadata["resourceVersion"]
    seconds = int(os.environ.get(WATCH_SECONDS) or 15)
    try:
        stream = list_applications(api, namespace, watch=True, allow_watch_bookmarks=True,
                                   resource_version=start, timeout_seconds=seconds,
                                   _preload_content=False, _request_timeout=(10, seconds + 30))
    except ApiException as exc:
        pytest.fail(f"the watch was refused: HTTP {exc.status} {_message(exc)}")
    seen: list[str] = []
    bookmarks: list[str] = []
    try:
        for line in watch_lines(stream):
            event_type, obj = decode_event(line)
            seen.append(str(event_type))
            if event_type == "ERROR":
                pytest.fail(f"the watch from {start} ended with an ERROR event: {obj}")
            if event_type == "BOOKMARK":
                version = obj.resource_version if isinstance(obj, AppDocument) \
                    else obj["metadata"]["resourceVersion"]
                assert isinstance(version, str) and version, obj
                bookmarks.append(version)
            else:
                assert isinstance(obj, AppDocument), f"{event_type} does not fit the schema"
    finally:
        stream.release_conn()
    assert bookmarks, (f"no BOOKMARK in a {seconds}s watch with allowWatchBookmarks "
                       f"(events: {seen}); the daemon then resumes from older versions")

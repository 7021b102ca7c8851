"""The fake Kubernetes API follows real watch semantics, seen through the official client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.fake_kube_auth import scoped_namespaces

G, V, P = "argoproj.io", "v1alpha1", "applications"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


@pytest.fixture
def api(kube: FakeKube, tmp_path: Path) -> Iterator[CustomObjectsApi]:
    client: ApiClient = new_client_from_config(str(kube.write_kubeconfig(tmp_path / "kc")))
    yield CustomObjectsApi(client)
    client.close()


def watch_lines(api: CustomObjectsApi, rv: str, timeout: int = 1, **kw: Any) -> list[dict[str, Any]]:
    response = api.list_namespaced_custom_object(
        G, V, "argocd", P, watch=True, resource_version=rv, timeout_seconds=timeout,
        _preload_content=False, **kw)
    return [json.loads(line) for line in response.data.splitlines() if line]


def test_list_pages_from_one_snapshot(kube: FakeKube, api: CustomObjectsApi) -> None:
    for i in range(5):
        kube.apply(LiveApp(f"svc{i}").snapshot())
    first = api.list_namespaced_custom_object(G, V, "argocd", P, limit=2)
    kube.apply(LiveApp("late").snapshot())
    names = [o["metadata"]["name"] for o in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = api.list_namespaced_custom_object(G, V, "argocd", P, limit=2, _continue=token)
        names += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue")
    assert names == [f"svc{i}" for i in range(5)]
    assert first["metadata"]["resourceVersion"] == str(kube.resource_version - 1)


def test_watch_replays_after_a_version_then_times_out(kube: FakeKube,
                                                      api: CustomObjectsApi) -> None:
    app = LiveApp("svc")
    kube.apply(app.snapshot())
    rv = str(kube.resource_version)
    kube.apply(app.refresh())
    kube.delete("argocd", "svc")
    events = watch_lines(api, rv)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) == kube.resource_version


def test_compacted_version_gets_a_410_error_event(kube: FakeKube, api: CustomObjectsApi) -> None:
    kube.apply(LiveApp("svc").snapshot())
    old = str(kube.resource_version - 1)
    kube.compact()
    [event] = watch_lines(api, old)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert watch_lines(api, str(kube.resource_version)) == []


def test_faults_and_auth(kube: FakeKube, api: CustomObjectsApi, tmp_path: Path) -> None:
    kube.fail_next(1, 429, retry_after=0, kind="list")
    with pytest.raises(ApiException) as caught:
        api.list_namespaced_custom_object(G, V, "argocd", P, _preload_content=False,
                                          _request_timeout=2)
    assert caught.value.status in (429, 0)
    other = new_client_from_config(str(kube.write_kubeconfig(tmp_path / "bad", token="wrong")))
    with pytest.raises(ApiException) as caught:
        CustomObjectsApi(other).list_namespaced_custom_object(G, V, "argocd", P)
    assert caught.value.status == 401
    other.close()
    assert kube.requests["unauthorized"] == 1 and kube.requests["faulted"] == 1


async def test_doctor_probe(kube: FakeKube, tmp_path: Path) -> None:
    from doraforwarder.config import load_config
    from doraforwarder.ops.probes import probe_kubernetes

    kube.apply(LiveApp("svc").snapshot())
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        f"argocd: {{kubeconfig: '{kube.write_kubeconfig(tmp_path / 'kc')}', "
        "namespaces: [argocd, empty]}\n")
    checks = await probe_kubernetes(load_config(config_path))
    assert [(c.name, c.outcome) for c in checks] == [
        ("kubernetes config", "pass"), ("applications in argocd", "pass"),
        ("applications in empty", "warn"), ("kubernetes permissions", "pass")]
    kube.fail_next(1, 403, kind="list")
    checks = await probe_kubernetes(load_config(config_path))
    assert checks[1].outcome == "fail" and "applications.argoproj.io" in checks[1].hint


GRANTED = {"argocd", "team-b"}


@pytest.mark.parametrize(("scopes", "kept"), [
    (["user:full"], GRANTED),
    (["user:info"], set()),
    (["user:check-access", "user:list-projects"], set()),
    (["role:view:team-b"], {"team-b"}),
    (["role:admin:team-b:!"], {"team-b"}),
    (["role:view:elsewhere"], set()),  # a scope never grants what the user lacks
    (["role:view:*"], GRANTED),
    (["user:info", "role:view:argocd"], {"argocd"}),
    ([], set()),
])
def test_token_scopes_narrow_what_the_user_may_read(scopes: list[str], kept: set[str]) -> None:
    """The fake's model of OpenShift's scope authorizer (an access review's ``extra``)."""
    assert scoped_namespaces(scopes, GRANTED) == kept


# --- What a real API server does (apiextensions-apiserver v0.36.3 on etcd, docs/kubernetes.md)


def _names(page: dict[str, Any]) -> list[str]:
    return [o["metadata"]["name"] for o in page["items"]]


def test_continue_tokens_are_the_real_shape_reusable_and_count_what_remains(
        kube: FakeKube, api: CustomObjectsApi) -> None:
    import base64
    for i in range(5):
        kube.apply(LiveApp(f"svc{i}").snapshot())
    first = api.list_namespaced_custom_object(G, V, "argocd", P, limit=2)
    token = first["metadata"]["continue"]
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert decoded == {"v": "meta.k8s.io/v1", "rv": int(first["metadata"]["resourceVersion"]),
                       "start": "svc1\x00"}
    assert first["metadata"]["remainingItemCount"] == 3
    again = [api.list_namespaced_custom_object(G, V, "argocd", P, limit=2, _continue=token)
             for _ in range(2)]  # a real server answers a token as often as it is asked
    assert _names(again[0]) == _names(again[1]) == ["svc2", "svc3"]
    last = api.list_namespaced_custom_object(G, V, "argocd", P, limit=2,
                                             _continue=again[0]["metadata"]["continue"])
    assert _names(last) == ["svc4"] and "continue" not in last["metadata"]
    assert "remainingItemCount" not in last["metadata"]


def test_a_compacted_continue_token_is_410_with_the_real_message(
        kube: FakeKube, api: CustomObjectsApi) -> None:
    for i in range(3):
        kube.apply(LiveApp(f"svc{i}").snapshot())
    token = api.list_namespaced_custom_object(G, V, "argocd", P, limit=1)["metadata"]["continue"]
    kube.compact()
    with pytest.raises(ApiException) as caught:
        api.list_namespaced_custom_object(G, V, "argocd", P, limit=1, _continue=token)
    body = json.loads(caught.value.body)
    assert (caught.value.status, body["reason"]) == (410, "Expired")
    assert body["message"].startswith("The provided continue parameter is too old to display")
    assert body["metadata"]["continue"], "the real 410 carries an inconsistent continue token"


def test_a_continue_token_that_does_not_decode_is_400_not_410(
        kube: FakeKube, api: CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as caught:
        api.list_namespaced_custom_object(G, V, "argocd", P, limit=1, _continue="garbage")
    body = json.loads(caught.value.body)
    assert (caught.value.status, body["reason"]) == (400, "BadRequest")
    assert body["message"].startswith("invalid continue token")


def test_a_cluster_list_sorts_by_key_bytes_as_etcd(kube: FakeKube,
                                                   api: CustomObjectsApi) -> None:
    # As tuples ("a", ...) sorts before ("a-b", ...); as etcd keys "a-b/..." < "a/...".
    kube.apply(LiveApp("z", "a").snapshot())
    kube.apply(LiveApp("c", "a-b").snapshot())
    page = api.list_cluster_custom_object(G, V, P, limit=1)
    assert _names(page) == ["c"]
    token = page["metadata"]["continue"]
    import base64
    assert json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["start"] == (
        "a-b/c\x00")


def test_bookmarks_come_each_interval_and_just_before_the_timeout(
        kube: FakeKube, api: CustomObjectsApi) -> None:
    """The real server: a BOOKMARK a minute (bookmarkFrequency) and ~2 s before
    timeoutSeconds; here the minute is shortened, the shape is the real one."""
    kube.apply(LiveApp("svc").snapshot())
    rv = str(kube.resource_version)
    kube.bookmark_interval = 0.6
    kube.bookmark_before_timeout = 0.5
    events = watch_lines(api, rv, timeout=2, allow_watch_bookmarks=True)
    assert [e["type"] for e in events] == ["BOOKMARK"] * 3  # at 0.6 s, 1.2 s and 1.5 s
    assert events[0]["object"] == {"kind": "Application", "apiVersion": "argoproj.io/v1alpha1",
                                   "metadata": {"resourceVersion": rv}}
    assert watch_lines(api, rv, timeout=1) == [], "no bookmarks unless asked"


def test_a_restart_refuses_watches_while_the_cache_fills_then_expires_older_versions(
        kube: FakeKube, tmp_path: Path) -> None:
    from kubernetes.client import Configuration
    from kubernetes.config import load_kube_config
    configuration = Configuration()
    load_kube_config(str(kube.write_kubeconfig(tmp_path / "kc")),
                     client_configuration=configuration)
    configuration.retries = False  # as the daemon: urllib3 would retry a 429 by itself
    api = CustomObjectsApi(ApiClient(configuration))
    kube.apply(LiveApp("svc").snapshot())
    seen = str(kube.resource_version)
    kube.apply(LiveApp("other", "elsewhere").snapshot())  # a write the argocd watch never sees
    kube.restart()
    with pytest.raises(ApiException) as caught:
        watch_lines(api, seen)
    body = json.loads(caught.value.body)
    assert (caught.value.status, body["reason"], body["message"]) == (
        429, "TooManyRequests", "storage is (re)initializing")
    assert caught.value.headers["Retry-After"] == "1"
    assert api.list_namespaced_custom_object(G, V, "argocd", P)["items"], "lists are served"
    [event] = watch_lines(api, seen)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert event["object"]["message"].startswith(f"too old resource version: {seen} (")
    assert watch_lines(api, str(kube.resource_version)) == []

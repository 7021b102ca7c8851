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
from doraforwarder.testing.fake_kube import FakeKube, scoped_namespaces

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

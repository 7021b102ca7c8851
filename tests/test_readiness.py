"""Readiness that fits Kubernetes: only starting or a process that cannot work is a 503.

Outside outages (DevLake, WebRCA, GitHub) keep ``/readyz`` at 200 and show in
``/api/v1/status`` (the ``dependencies`` map), in the metrics and in the logs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from doraforwarder.context import Dependencies, Readiness
from doraforwarder.devlake.delivery import DeliveryPool
from doraforwarder.server import bound_port, start_http
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_kube import FakeKube
from tests.devlake_support import (
    TOKEN,
    RunningService,
    deployment_entry,
    devlake_section,
    eventually,
    make_context,
    stage,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# (steps, blocking condition names afterwards). A step is (name, met, seconds later).
CASES = [
    ([], []),
    ([("argocd", False, 0)], ["argocd"]),                         # starting: no first list
    ([("argocd", True, 0)], []),
    ([("argocd", True, 0), ("argocd", False, 999)], []),          # later trouble: status only
    ([("redis", False, 0)], ["redis"]),                           # never reached: starting
    ([("redis", True, 0), ("redis", False, 0)], []),              # within the grace period
    ([("redis", True, 0), ("redis", False, 29)], []),
    ([("redis", True, 0), ("redis", False, 0), ("-", False, 30)], ["redis"]),  # grace over
    ([("redis", True, 0), ("redis", False, 0), ("redis", True, 60)], []),
    ([("config", False, 0)], ["config"]),                         # configuration unusable
    ([("argocd", True, 0), ("config", False, 0)], ["config"]),
    ([("webrca", False, 0)], []),                                 # outside outages
    ([("github", False, 0)], []),
    ([("devlake auth", False, 0)], []),
    ([("service argocd", False, 0)], []),
]


@pytest.mark.parametrize(("steps", "blocking"), CASES)
def test_which_conditions_make_readyz_503(steps: list[tuple[str, bool, float]],
                                          blocking: list[str]) -> None:
    clock = Clock()
    readiness = Readiness(grace_seconds=30, clock=clock)
    for name, met, later in steps:
        clock.now += later
        if name == "-":
            continue
        if met:
            readiness.ready(name)
        else:
            readiness.not_ready(name, "broken")
    assert [r.split(":")[0] for r in readiness.blocking_reasons()] == blocking
    assert readiness.is_ready() == (not blocking)
    unmet = {name for name, met, _ in steps if name != "-"}
    assert set(readiness.reasons()) == set(readiness.blocking_reasons()) | set(
        readiness.advisory_reasons())
    assert len(readiness.reasons()) <= len(unmet)


# (steps, name asked, is_ready(name)). A step is (name, "met" | "unmet" | "require" | "forget").
NAMED_CASES = [
    ([], "argocd", False),                                  # never declared: keep waiting
    ([("webrca", "met")], "argocd", False),                 # another condition says nothing
    ([("argocd", "require")], "argocd", False),
    ([("argocd", "require"), ("argocd", "met")], "argocd", True),
    ([("argocd", "met")], "argocd", True),
    ([("argocd", "met"), ("argocd", "unmet")], "argocd", False),
    ([("argocd", "met"), ("argocd", "require")], "argocd", True),  # require keeps what is
    ([("argocd", "unmet"), ("argocd", "met")], "argocd", True),
    ([("argocd", "met"), ("argocd", "forget")], "argocd", False),  # forgotten: undeclared
    ([("config", "unmet")], "config", False),
]


@pytest.mark.parametrize(("steps", "name", "ready"), NAMED_CASES)
def test_a_named_condition_is_ready_only_once_declared_and_met(
        steps: list[tuple[str, str]], name: str, ready: bool) -> None:
    readiness = Readiness(grace_seconds=30, clock=Clock())
    for step_name, step in steps:
        if step == "met":
            readiness.ready(step_name)
        elif step == "unmet":
            readiness.not_ready(step_name, "broken")
        elif step == "require":
            readiness.require(step_name, "starting")
        else:
            readiness.forget(step_name)
    assert readiness.is_ready(name) is ready


def test_forget_says_why_the_condition_was_unmet() -> None:
    readiness = Readiness()
    assert readiness.forget("config") is None               # never declared
    readiness.not_ready("config", "no kubeconfig")
    assert readiness.forget("config") == "no kubeconfig"
    assert readiness.forget("config") is None
    readiness.ready("config")
    assert readiness.forget("config") is None                # met
    assert readiness.is_ready()                              # /readyz: nothing left


def test_dependency_changes_are_logged_once_with_their_cause() -> None:
    board = Dependencies()
    with capture_logs() as logs:
        board.record("devlake", True)
        for _ in range(5):
            board.record("devlake", False, "network: ConnectError")
        board.record("devlake", False, "server_error: HTTP 503")
        board.record("devlake", True)
        board.record("devlake", True)
    events = [(e["event"], e.get("cause")) for e in logs]
    assert events == [("dependency down", "network: ConnectError"),
                      ("dependency down", "server_error: HTTP 503"),
                      ("dependency up again", None)]
    state = board.snapshot()["devlake"]
    assert state["state"] == "up" and state["last_success"] is not None
    assert state["last_error"] == "server_error: HTTP 503"


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=TOKEN, connections={1: "global"}) as fake:
        yield fake


def sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


async def test_devlake_outage_keeps_readyz_200_and_shows_in_status_and_metrics(
    redis_client: aioredis.Redis, devlake: FakeDevLake
) -> None:
    context = make_context(redis_client, devlake_section(devlake.url))
    context.readiness.ready("argocd")  # started: the first list is done
    runner = await start_http(context, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{bound_port(runner)}"
    devlake.fail_always(503)
    await stage(redis_client, context.keys, [deployment_entry("svc:1")])
    try:
        async with httpx.AsyncClient(base_url=base) as http, \
                RunningService(DeliveryPool(context)):
            await eventually(lambda: context.dependencies.state("devlake").up is False,
                             what="devlake marked down")
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            status = (await http.get("/api/v1/status")).json()
            assert status["ready"] is True
            down = status["dependencies"]["devlake"]
            assert down["state"] == "down" and down["since"]
            assert down["last_error"] == "server_error: HTTP 503"
            metrics = (await http.get("/metrics")).text
            assert sample(metrics, "doraforwarder_dependency_up", dependency="devlake") == 0
            assert sample(metrics, "doraforwarder_ready") == 1
            assert sample(metrics, "doraforwarder_dependency_up", dependency="redis") == 1
            await eventually(lambda: context.status.outbox_depth == 1, what="depth gauge")
            metrics = (await http.get("/metrics")).text
            assert sample(metrics, "doraforwarder_outbox_depth") == 1
            age = sample(metrics, "doraforwarder_outbox_oldest_age_seconds")
            assert age is not None and age >= 0

            devlake.clear_faults()  # DevLake is back
            await eventually(lambda: context.dependencies.state("devlake").up is True,
                             what="devlake marked up")
            await eventually(lambda: context.status.outbox_depth == 0, what="drained")
            status = (await http.get("/api/v1/status")).json()
            assert status["dependencies"]["devlake"]["state"] == "up"
            metrics = (await http.get("/metrics")).text
            assert sample(metrics, "doraforwarder_dependency_up", dependency="devlake") == 1
            last = sample(metrics, "doraforwarder_dependency_last_success_timestamp_seconds",
                          dependency="devlake")
            assert last is not None and last > time.time() - 3600
            assert sample(metrics, "doraforwarder_outbox_oldest_age_seconds") == 0
            assert "_created" not in metrics
            assert 'doraforwarder_build_info{version="' in metrics
    finally:
        await runner.cleanup()
    assert devlake.deployment_ids(1) == {"svc:1"}


async def test_starting_is_503_and_ready_gauge_follows(redis_client: aioredis.Redis) -> None:
    context = make_context(redis_client)
    context.readiness.require("argocd", "initial list not done")
    runner = await start_http(context, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound_port(runner)}") as http:
            answer = await http.get("/readyz")
            assert answer.status_code == 503
            assert answer.json()["reasons"] == ["argocd: initial list not done"]
            assert sample((await http.get("/metrics")).text, "doraforwarder_ready") == 0
            context.readiness.ready("argocd")
            assert (await http.get("/readyz")).status_code == 200
            assert sample((await http.get("/metrics")).text, "doraforwarder_ready") == 1
            context.readiness.not_ready("argocd", "namespace argocd not watched for 300s")
            assert (await http.get("/readyz")).status_code == 200
            status = (await http.get("/api/v1/status")).json()
            assert status["degraded"] == ["argocd: namespace argocd not watched for 300s"]
    finally:
        await runner.cleanup()


async def test_unusable_kubeconfig_is_one_error_line_retried_quietly_and_in_status(
    redis_client: aioredis.Redis, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doraforwarder.argocd.source import ArgoCDSource
    from doraforwarder.streams import stage_detected

    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: [\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    context = make_context(redis_client)
    runner = await start_http(context, "127.0.0.1", 0)
    source = ArgoCDSource(context, stage=stage_detected)
    try:
        with capture_logs() as logs:
            async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{bound_port(runner)}") as http, \
                    RunningService(source) as running:
                await eventually(lambda: any(reason.startswith("config: ")
                                             for reason in context.readiness.reasons()),
                                 what="kubeconfig problem noticed")
                answer = await http.get("/readyz")
                assert answer.status_code == 503
                reason = answer.json()["reasons"][0]
                assert reason.startswith("argocd: no Kubernetes access: ")
                assert f"KUBECONFIG {broken}" in reason
                status = (await http.get("/api/v1/status")).json()
                assert status["dependencies"]["kubernetes"]["state"] == "down"
                assert "kubernetes configuration usable again" not in [
                    e["event"] for e in logs]
                with FakeKube() as kube:  # the operator fixes the kubeconfig
                    kube.write_kubeconfig(broken)
                    await eventually(lambda: context.readiness.is_ready("argocd"), timeout=15,
                                     what="the first list with the fixed kubeconfig")
                    assert (await http.get("/readyz")).status_code == 200
                    assert context.readiness.reasons() == []
                    await running.stop()
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1 and "retrying quietly" in errors[0]["event"]
        assert not any("exc_info" in e for e in logs)
        assert [e["event"] for e in logs].count("kubernetes configuration usable again") == 1
    finally:
        await runner.cleanup()
